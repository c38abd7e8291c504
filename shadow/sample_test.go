package shadow

import (
	"fmt"
	"testing"
)

func TestSampler(t *testing.T) {
	cases := []struct {
		s    Sampler
		key  string
		rnd  float64
		want bool
	}{
		{Sampler{Percent: 0}, "", 0, false},
		{Sampler{Percent: 100}, "", 0.9999, true},
		{Sampler{Percent: 10}, "", 0.05, true},
		{Sampler{Percent: 10}, "", 0.10, false},
		{Sampler{Percent: 10, Mode: SampleSticky}, "", 0.05, true}, // no key: random
	}
	for i, c := range cases {
		if got := c.s.Sample(c.key, c.rnd); got != c.want {
			t.Errorf("case %d: Sample = %v, want %v", i, got, c.want)
		}
	}
	// sticky: rnd does not matter, and raising the share only adds keys
	s10 := Sampler{Percent: 10, Mode: SampleSticky}
	s50 := Sampler{Percent: 50, Mode: SampleSticky}
	in10 := 0
	for i := 0; i < 10000; i++ {
		key := fmt.Sprintf("user-%d", i)
		a, b := s10.Sample(key, 0), s10.Sample(key, 0.999)
		if a != b {
			t.Fatalf("%s: sticky decision depends on rnd", key)
		}
		if a {
			in10++
			if !s50.Sample(key, 0.999) {
				t.Fatalf("%s mirrored at 10%% but not at 50%%", key)
			}
		}
	}
	if in10 < 800 || in10 > 1200 {
		t.Errorf("sticky 10%% of 10000 keys mirrored %d", in10)
	}
	if err := (Sampler{Percent: 101}).Validate(); err == nil {
		t.Error("101% accepted")
	}
	if err := (Sampler{Percent: 5, Mode: "roundrobin"}).Validate(); err == nil {
		t.Error("bad mode accepted")
	}
}

func TestKeepRecord(t *testing.T) {
	if !KeepRecord(false, 0, 0.99) {
		t.Error("disagreement dropped")
	}
	if KeepRecord(true, 0.01, 0.5) || !KeepRecord(true, 0.01, 0.005) {
		t.Error("agreement sampling")
	}
	if RecordWeight(true, 0.01) != 100 || RecordWeight(false, 0.01) != 1 || RecordWeight(true, 1) != 1 {
		t.Error("weights")
	}
}
