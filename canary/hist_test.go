package canary

import (
	"math"
	"math/rand/v2"
	"sort"
	"testing"
	"time"
)

func TestBucketLayout(t *testing.T) {
	if NumBuckets != 218 {
		t.Fatalf("NumBuckets %d", NumBuckets)
	}
	for i := 0; i < NumBuckets; i++ {
		lo, hi := BucketBounds(i)
		if BucketIndex(lo) != i {
			t.Fatalf("bucket %d: lower bound %d maps to %d", i, lo, BucketIndex(lo))
		}
		if i < NumBuckets-1 {
			if BucketIndex(hi-1) != i || BucketIndex(hi) != i+1 {
				t.Fatalf("bucket %d [%d,%d) not contiguous", i, lo, hi)
			}
			if i > 0 && float64(hi-lo)/float64(lo) > 0.125+1e-12 {
				t.Fatalf("bucket %d wider than 12.5%%", i)
			}
		}
	}
	if BucketIndex(uint64(time.Microsecond)) == 0 || BucketIndex(uint64(60*time.Second)) == NumBuckets-1 {
		t.Error("1µs..60s must fall in regular buckets")
	}
}

func TestHistogramQuantiles(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var h Histogram
	var xs []float64
	for i := 0; i < 20000; i++ {
		d := time.Duration(math.Exp(r.NormFloat64()*0.8 + math.Log(float64(5*time.Millisecond)))) // log-normal around 5ms
		h.Record(d)
		xs = append(xs, float64(d))
	}
	sort.Float64s(xs)
	for _, q := range []float64{0.5, 0.9, 0.99} {
		exact := xs[int(q*float64(len(xs)))-1]
		got := float64(h.Quantile(q))
		if math.Abs(got-exact)/exact > 0.07 {
			t.Errorf("q%.2f: %v, exact %v", q, time.Duration(got), time.Duration(exact))
		}
	}
	if h.Quantile(1) != time.Duration(xs[len(xs)-1]) {
		t.Errorf("q1 = %v, max %v", h.Quantile(1), time.Duration(xs[len(xs)-1]))
	}
	var empty Histogram
	if empty.Quantile(0.99) != 0 || empty.Mean() != 0 {
		t.Error("empty histogram")
	}
}

func TestHistogramMerge(t *testing.T) {
	var a, b, all Histogram
	for i := 1; i <= 1000; i++ {
		d := time.Duration(i) * 10 * time.Microsecond
		all.Record(d)
		if i%3 == 0 {
			a.Record(d)
		} else {
			b.Record(d)
		}
	}
	a.Merge(&b)
	if a != all {
		t.Fatal("merged histogram differs from the one recorded in one piece")
	}
	var h Histogram
	h.Record(-time.Second)
	h.Record(100 * time.Second)
	if h.Counts[0] != 1 || h.Counts[NumBuckets-1] != 1 || h.Quantile(1) != 100*time.Second {
		t.Errorf("under/overflow %+v", h.Quantile(1))
	}
}
