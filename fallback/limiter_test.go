package fallback

import (
	"testing"
	"time"
)

// TestAdaptiveLimiter feeds the gradient recorded latencies and checks
// where the cap goes.
func TestAdaptiveLimiter(t *testing.T) {
	ms := func(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }
	type phase struct {
		n        int
		rtt      time.Duration
		dropped  bool
		inflight func(limit int) int
	}
	busy := func(limit int) int { return limit }     // the cap is in use
	idle := func(limit int) int { return limit / 4 } // app-limited
	cfg := AdaptiveConfig{Initial: 20, MinLimit: 4, MaxLimit: 200, Tolerance: 1.5}
	for name, c := range map[string]struct {
		phases []phase
		check  func(start, end int) bool
		want   string
	}{
		"steady latency under load grows the cap": {
			phases: []phase{{n: 200, rtt: ms(2), inflight: busy}},
			check:  func(s, e int) bool { return e > s }, want: "grows",
		},
		"it stops at the maximum": {
			phases: []phase{{n: 5000, rtt: ms(2), inflight: busy}},
			check:  func(s, e int) bool { return e == 200 }, want: "= MaxLimit",
		},
		"an unused cap does not grow": {
			phases: []phase{{n: 500, rtt: ms(2), inflight: idle}},
			check:  func(s, e int) bool { return e == s }, want: "unchanged",
		},
		"latency rising past tolerance shrinks it": {
			phases: []phase{{n: 300, rtt: ms(2), inflight: busy}, {n: 100, rtt: ms(8), inflight: busy}},
			check:  func(s, e int) bool { return e < s }, want: "below the start",
		},
		"latency within tolerance keeps growing": {
			phases: []phase{{n: 300, rtt: ms(2), inflight: busy}, {n: 100, rtt: ms(2.4), inflight: busy}},
			check:  func(s, e int) bool { return e > s }, want: "grows",
		},
		"drops cut it down to the minimum": {
			phases: []phase{{n: 100, dropped: true, inflight: busy}},
			check:  func(s, e int) bool { return e == 4 }, want: "= MinLimit",
		},
	} {
		l := NewAdaptiveLimiter(cfg)
		start := l.Max()
		for _, p := range c.phases {
			for i := 0; i < p.n; i++ {
				s := SampleLatency
				if p.dropped {
					s = SampleDropped
				}
				l.Observe(p.rtt, s, p.inflight(l.Max()))
			}
		}
		if end := l.Max(); !c.check(start, end) {
			t.Errorf("%s: cap %d -> %d, want %s", name, start, end, c.want)
		}
	}
}

func TestFixedLimiterIgnoresSamples(t *testing.T) {
	l := NewLimiter(3)
	l.Observe(time.Second, SampleDropped, 3)
	if l.Max() != 3 {
		t.Fatalf("fixed cap moved to %d", l.Max())
	}
	for i := 0; i < 3; i++ {
		if !l.TryAcquire() {
			t.Fatal("under the cap refused")
		}
	}
	if l.TryAcquire() {
		t.Fatal("over the cap allowed")
	}
}

func TestSampleOf(t *testing.T) {
	for trig, want := range map[Trigger]Sample{
		None: SampleLatency, Upstream5xx: SampleLatency, Timeout: SampleDropped, Overload: SampleDropped,
		Rejected: SampleIgnore, Cancelled: SampleIgnore, ShuttingDown: SampleIgnore, BreakerOpen: SampleIgnore,
	} {
		if got := SampleOf(trig); got != want {
			t.Errorf("SampleOf(%s) = %d, want %d", trig, got, want)
		}
	}
}
