package fallback

import (
	"bytes"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/switchyard-dev/switchyard/oip"
)

func keyN(t *testing.T, version string, n float32) Key {
	return mustKey(t, version, req(nil, oip.NewTensor("x", []int64{1, 1}, []float32{n})))
}

func TestCacheHitsSameBytesAndVersionsApart(t *testing.T) {
	m := NewMetrics(prometheus.NewRegistry())
	c := NewCache("rec", "serving", CacheConfig{}, m)
	defer c.Close()
	body := []byte(`{"model_name":"rec","outputs":[{"name":"scores","datatype":"FP32","shape":[1,2],"data":[0.5,0.25]}]}`)
	k := keyN(t, "v1", 1)
	if _, ok := c.Get(k); ok {
		t.Fatal("hit on empty cache")
	}
	c.Add(k, Entry{Body: body, ContentType: "application/json"})
	e, ok := c.Get(k)
	if !ok || !bytes.Equal(e.Body, body) || e.ContentType != "application/json" {
		t.Fatalf("hit = %v %q %q", ok, e.Body, e.ContentType)
	}
	if _, ok := c.Get(keyN(t, "v2", 1)); ok {
		t.Fatal("v2 saw v1's entry")
	}
	if got := testutil.ToFloat64(m.cacheHits.WithLabelValues("rec", "serving")); got != 1 {
		t.Errorf("hits %v", got)
	}
	if got := testutil.ToFloat64(m.cacheMisses.WithLabelValues("rec", "serving")); got != 2 {
		t.Errorf("misses %v", got)
	}
	if !c.Contains(k) || c.Contains(keyN(t, "v1", 2)) {
		t.Error("Contains")
	}
}

func TestCacheBounds(t *testing.T) {
	m := NewMetrics(prometheus.NewRegistry())
	c := NewCache("rec", "serving", CacheConfig{MaxEntries: 3, MaxBytes: 1 << 20}, m)
	defer c.Close()
	for i := 0; i < 5; i++ {
		c.Add(keyN(t, "v1", float32(i)), Entry{Body: []byte("x")})
	}
	if c.Len() != 3 {
		t.Fatalf("entries %d, want 3", c.Len())
	}
	if _, ok := c.Get(keyN(t, "v1", 0)); ok {
		t.Error("oldest entry survived the entry bound")
	}
	if got := testutil.ToFloat64(m.cacheEvictions.WithLabelValues("rec", "serving")); got != 2 {
		t.Errorf("evictions %v, want 2", got)
	}

	// byte bound: each entry costs its body + overhead
	k0 := keyN(t, "v1", 0)
	per := Entry{Body: make([]byte, 1000)}.size(k0)
	b := NewCache("rec", "bytes", CacheConfig{MaxEntries: 100, MaxBytes: 3*per + per/2}, m)
	defer b.Close()
	for i := 0; i < 5; i++ {
		b.Add(keyN(t, "v1", float32(i)), Entry{Body: make([]byte, 1000)})
		if b.Bytes() > b.Config().MaxBytes {
			t.Fatalf("bytes %d over bound %d", b.Bytes(), b.Config().MaxBytes)
		}
	}
	if b.Len() != 3 || b.Bytes() != 3*per {
		t.Fatalf("len %d bytes %d, want 3 and %d", b.Len(), b.Bytes(), 3*per)
	}
	if got := testutil.ToFloat64(m.cacheBytes.WithLabelValues("rec", "bytes")); got != float64(3*per) {
		t.Errorf("bytes gauge %v", got)
	}
	// replacing an entry does not count twice
	k4 := keyN(t, "v1", 4)
	b.Add(k4, Entry{Body: make([]byte, 500)})
	half := Entry{Body: make([]byte, 500)}.size(k4)
	if b.Len() != 3 || b.Bytes() != 2*per+half {
		t.Fatalf("after replace: len %d bytes %d", b.Len(), b.Bytes())
	}
	// an entry over the byte bound is refused
	if b.Add(keyN(t, "v1", 9), Entry{Body: make([]byte, 10*per)}) {
		t.Error("oversized entry stored")
	}
	b.Close()
	if b.Len() != 0 || b.Bytes() != 0 {
		t.Errorf("after close: len %d bytes %d", b.Len(), b.Bytes())
	}
}

func TestCacheTTL(t *testing.T) {
	m := NewMetrics(prometheus.NewRegistry())
	c := NewCache("rec", "serving", CacheConfig{TTL: 30 * time.Millisecond}, m)
	defer c.Close()
	k := keyN(t, "v1", 1)
	c.Add(k, Entry{Body: []byte("a")})
	deadline := time.Now().Add(5 * time.Second)
	for c.Contains(k) {
		if time.Now().After(deadline) {
			t.Fatal("entry never expired")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, ok := c.Get(k); ok {
		t.Fatal("expired entry served")
	}
	// the cleaner removes it and counts it as expired, not evicted
	for c.Len() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("expired entry never removed (len %d)", c.Len())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := testutil.ToFloat64(m.cacheExpired.WithLabelValues("rec", "serving")); got != 1 {
		t.Errorf("expired %v", got)
	}
	if got := testutil.ToFloat64(m.cacheEvictions.WithLabelValues("rec", "serving")); got != 0 {
		t.Errorf("evictions %v", got)
	}
}

func TestLastGoodDefaults(t *testing.T) {
	lg := NewLastGood("rec", CacheConfig{}, nil)
	defer lg.Close()
	s := NewCache("rec", "serving", CacheConfig{}, nil)
	defer s.Close()
	if lg.Config().TTL <= s.Config().TTL || lg.Config().MaxEntries <= s.Config().MaxEntries || lg.Config().MaxBytes <= s.Config().MaxBytes {
		t.Errorf("last good %+v must be larger and longer-lived than serving %+v", lg.Config(), s.Config())
	}
	if err := (CacheConfig{TTL: -1}).Validate(); err == nil {
		t.Error("negative ttl accepted")
	}
}
