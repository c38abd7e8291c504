package shadow

import "fmt"

// Sampling modes.
const (
	SampleRandom = "random" // each request independently
	SampleSticky = "sticky" // by a hash of a key (e.g. the user), so a user is always or never mirrored
)

// Sampler decides which requests are mirrored. It is a pure function of
// its inputs: the caller supplies the sticky key and a uniform random
// number.
type Sampler struct {
	// Percent of requests mirrored, 0..100.
	Percent float64
	// Mode is SampleRandom (default) or SampleSticky.
	Mode string
}

// Validate names the first bad field.
func (s Sampler) Validate() error {
	if s.Percent < 0 || s.Percent > 100 {
		return fmt.Errorf("shadow.percent must be within 0..100, got %g", s.Percent)
	}
	if s.Mode != "" && s.Mode != SampleRandom && s.Mode != SampleSticky {
		return fmt.Errorf("shadow.sampling must be %q or %q, got %q", SampleRandom, SampleSticky, s.Mode)
	}
	return nil
}

// Sample reports whether to mirror one request. rnd is uniform in [0, 1).
// In sticky mode a non-empty key decides by its hash (the same key always
// gets the same answer, and raising Percent only adds keys); an empty key
// falls back to rnd.
func (s Sampler) Sample(key string, rnd float64) bool {
	switch {
	case s.Percent <= 0:
		return false
	case s.Percent >= 100:
		return true
	case s.Mode == SampleSticky && key != "":
		return float64(StickyBucket(key)) < s.Percent*100
	}
	return rnd*100 < s.Percent
}

// StickyBucket maps key to one of 10000 buckets (FNV-1a, 64 bit), the same
// on every proxy.
func StickyBucket(key string) uint32 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(key); i++ {
		h ^= uint64(key[i])
		h *= 1099511628211
	}
	return uint32(h % 10000)
}

// KeepRecord decides whether to write a compared pair to the record file:
// disagreements always, agreements with probability agreeRate (0..1). rnd is
// uniform in [0, 1). The weight to store with a kept record is
// RecordWeight(agree, agreeRate).
func KeepRecord(agree bool, agreeRate, rnd float64) bool {
	return !agree || rnd < agreeRate
}

// RecordWeight is how many compared pairs a written record stands for: 1
// for a disagreement, 1/agreeRate for a sampled agreement, so that rates
// computed from the file are unbiased.
func RecordWeight(agree bool, agreeRate float64) float64 {
	if agree && agreeRate > 0 && agreeRate < 1 {
		return 1 / agreeRate
	}
	return 1
}
