package canary

import (
	"math/bits"
	"time"
)

// Histogram bucket layout: log-linear, 8 buckets per power of two of
// nanoseconds (each bucket at most 12.5 % wide), from 512 ns to 2^36 ns
// (about 68.7 s), plus an underflow and an overflow bucket. Every proxy uses
// the same layout, so histograms merge by adding counts.
const (
	subBuckets  = 8
	minExp      = 9  // 2^9 ns = 512 ns
	maxExp      = 35 // last octave [2^35, 2^36) ns
	NumBuckets  = 2 + (maxExp-minExp+1)*subBuckets
	underflowNS = 1 << minExp
	overflowNS  = 1 << (maxExp + 1)
)

// Histogram is a mergeable latency histogram with fixed buckets. The zero
// value is empty and ready to use. Not safe for concurrent use: the proxy
// keeps one per reporting interval under its own lock (or per goroutine and
// merges).
type Histogram struct {
	Counts [NumBuckets]uint64
	Total  uint64
	SumNS  uint64 // sum of observations, for the mean
	MaxNS  uint64 // largest observation
}

// BucketIndex is the bucket holding ns nanoseconds.
func BucketIndex(ns uint64) int {
	if ns < underflowNS {
		return 0
	}
	e := bits.Len64(ns) - 1
	if e > maxExp {
		return NumBuckets - 1
	}
	sub := int(ns>>(e-3)) & (subBuckets - 1)
	return 1 + (e-minExp)*subBuckets + sub
}

// BucketBounds is the [lo, hi) range of bucket i in nanoseconds (the
// overflow bucket's hi is the maximum uint64).
func BucketBounds(i int) (lo, hi uint64) {
	switch {
	case i <= 0:
		return 0, underflowNS
	case i >= NumBuckets-1:
		return overflowNS, ^uint64(0)
	}
	e := minExp + (i-1)/subBuckets
	sub := uint64((i - 1) % subBuckets)
	return (subBuckets + sub) << (e - 3), (subBuckets + sub + 1) << (e - 3)
}

// Record adds one observation (negative durations count as 0).
func (h *Histogram) Record(d time.Duration) {
	ns := uint64(max(d, 0))
	h.Counts[BucketIndex(ns)]++
	h.Total++
	h.SumNS += ns
	h.MaxNS = max(h.MaxNS, ns)
}

// Merge adds o's observations to h.
func (h *Histogram) Merge(o *Histogram) {
	for i, c := range o.Counts {
		h.Counts[i] += c
	}
	h.Total += o.Total
	h.SumNS += o.SumNS
	h.MaxNS = max(h.MaxNS, o.MaxNS)
}

// Quantile estimates the q-quantile (0 < q <= 1), interpolating linearly
// within the bucket and never beyond the largest observation; 0 when empty.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.Total == 0 {
		return 0
	}
	rank := q * float64(h.Total)
	var cum float64
	for i, c := range h.Counts {
		if c == 0 {
			continue
		}
		if cum+float64(c) >= rank {
			lo, hi := BucketBounds(i)
			if i == NumBuckets-1 || hi > h.MaxNS {
				hi = max(h.MaxNS, lo)
			}
			frac := (rank - cum) / float64(c)
			return time.Duration(float64(lo) + frac*float64(hi-lo))
		}
		cum += float64(c)
	}
	return time.Duration(h.MaxNS)
}

// Mean is the average observation; 0 when empty.
func (h *Histogram) Mean() time.Duration {
	if h.Total == 0 {
		return 0
	}
	return time.Duration(h.SumNS / h.Total)
}
