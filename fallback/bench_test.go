package fallback

import (
	"testing"

	"github.com/switchyard-dev/switchyard/oip"
)

func benchRequest() *oip.InferRequest {
	x := make([]float32, 32)
	for i := range x {
		x[i] = float32(i) * 0.37
	}
	return &oip.InferRequest{ModelName: "rec", Inputs: []oip.Tensor{oip.NewTensor("input", []int64{1, 32}, x)}}
}

// BenchmarkCacheKey hashes a [1,32] FP32 request into its cache key.
func BenchmarkCacheKey(b *testing.B) {
	r := benchRequest()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := NewKey("rec", "v1", "json", r, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCacheKeyAndHit is the cache-hit path: key + lookup.
func BenchmarkCacheKeyAndHit(b *testing.B) {
	r := benchRequest()
	c := NewCache("rec", "serving", CacheConfig{}, nil)
	defer c.Close()
	k, _ := NewKey("rec", "v1", "json", r, nil)
	c.Add(k, Entry{Body: make([]byte, 600), ContentType: "application/json"})
	b.ReportAllocs()
	for b.Loop() {
		k, _ := NewKey("rec", "v1", "json", r, nil)
		if _, ok := c.Get(k); !ok {
			b.Fatal("miss")
		}
	}
}
