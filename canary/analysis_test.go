package canary

import (
	"maps"
	"math"
	"strings"
	"testing"
	"time"
)

func TestWilson(t *testing.T) {
	cases := []struct {
		k, n   uint64
		lo, hi float64
	}{
		{1, 12, 0.01486, 0.35389},
		{100, 1200, 0.06899, 0.10033},
		{0, 500, 0, 0.00762},
	}
	for _, c := range cases {
		lo, hi := Wilson(c.k, c.n, 1.96)
		if math.Abs(lo-c.lo) > 5e-5 || math.Abs(hi-c.hi) > 5e-5 {
			t.Errorf("Wilson(%d,%d) = %.5f..%.5f, want %.5f..%.5f", c.k, c.n, lo, hi, c.lo, c.hi)
		}
	}
	if lo, hi := Wilson(0, 0, 1.96); lo != 0 || hi != 1 {
		t.Error("n=0")
	}
}

// withNaN sets the NaN count.
func withNaN(s Stats, n uint64) Stats { s.NaNOutputs = n; return s }

// withErrors adds errors of kind (an overload is also a fallback, as the
// proxy counts it).
func withErrors(s Stats, kind string, n uint64) Stats {
	s.Errors = maps.Clone(s.Errors)
	if s.Errors == nil {
		s.Errors = map[string]uint64{}
	}
	s.Errors[kind] += n
	if kind == ErrOverload {
		s.Fallbacks += n
	}
	return s
}

func TestAnalyze(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	g := Gates{MinRequests: 500, MaxErrorRate: 0.05}.Defaults()
	longAgo := StepInfo{Started: t0, MinDuration: 5 * time.Minute, Now: t0.Add(10 * time.Minute)}
	justStarted := StepInfo{Started: t0, MinDuration: 5 * time.Minute, Now: t0.Add(2*time.Minute + 50*time.Second)}
	lastStep := longAgo
	lastStep.NoBaseline = true
	ms := time.Millisecond
	cases := []struct {
		name     string
		base     Stats
		can      Stats
		gates    Gates
		step     StepInfo
		decision Decision
		reason   string
		gate     string // a gate whose status is checked
		status   GateStatus
	}{
		{name: "healthy", base: stats(4000, 10, 10*ms), can: stats(1000, 2, 11*ms), gates: g, step: longAgo, decision: Promote, reason: "all gates pass"},
		{name: "too few canary requests", base: stats(4000, 10, 10*ms), can: stats(137, 0, 10*ms), gates: g, step: longAgo, decision: Hold, reason: "waiting: 137/500 canary requests"},
		{name: "step too young", base: stats(4000, 10, 10*ms), can: stats(1000, 0, 10*ms), gates: g, step: justStarted, decision: Hold, reason: "waiting: 2m10s left in step"},
		{name: "no traffic at all", base: Stats{}, can: Stats{}, gates: g, step: longAgo, decision: Hold, reason: "waiting: 0/500 canary requests", gate: "error_rate", status: Wait},
		// 1 error in 12 is not judged like 100 in 1200 (same 8.3 % rate, max 5 %)
		{name: "1 error in 12: not significant", base: stats(4000, 40, 10*ms), can: stats(12, 1, 10*ms), gates: g, step: longAgo, decision: Hold, reason: "waiting: 12/500", gate: "error_rate", status: Wait},
		{name: "100 errors in 1200: rollback", base: stats(4000, 40, 10*ms), can: stats(1200, 100, 10*ms), gates: g, step: longAgo, decision: Rollback, reason: "error_rate 8.33% (100/1200, 95% interval 6.90%..10.03%) > max 5.00%", gate: "error_rate", status: Fail},
		{name: "bad but no worse than baseline: hold", base: stats(4000, 330, 10*ms), can: stats(1200, 100, 10*ms), gates: g, step: longAgo, decision: Hold, reason: "not worse than baseline", gate: "error_rate", status: Wait},
		{name: "rate above max, not yet significant", base: stats(4000, 40, 10*ms), can: stats(600, 33, 10*ms), gates: g, step: longAgo, decision: Hold, reason: "not yet significant", gate: "error_rate", status: Wait},
		{name: "slow canary", base: stats(4000, 0, 10*ms), can: stats(1000, 0, 20*ms), gates: g, step: longAgo, decision: Rollback, reason: "ratio 2.00 > max 1.25", gate: "p99_ratio", status: Fail},
		{name: "slow but few latency samples", base: stats(4000, 0, 10*ms), can: stats(50, 0, 20*ms), gates: g, step: longAgo, decision: Hold, reason: "waiting: 50/500", gate: "p99_ratio", status: Wait},
		{name: "p99 within ratio", base: stats(4000, 0, 10*ms), can: stats(1000, 0, 12*ms), gates: g, step: longAgo, decision: Promote, gate: "p99_ratio", status: Pass},
		{name: "no baseline traffic at 100%", base: Stats{}, can: stats(1000, 0, 12*ms), gates: g, step: longAgo, decision: Promote, gate: "p99_ratio", status: Pass},
		// At 100 % a few baseline samples from before the split changed remain in the window.
		{name: "stray baseline samples at 100%", base: stats(64, 0, 10*ms), can: stats(1000, 0, 12*ms), gates: g, step: lastStep, decision: Promote, gate: "p99_ratio", status: Pass},
		{name: "few baseline samples before 100%: wait", base: stats(64, 0, 10*ms), can: stats(1000, 0, 12*ms), gates: g, step: longAgo, decision: Hold, reason: "waiting: 1000/100 canary and 64/100 baseline latency samples", gate: "p99_ratio", status: Wait},
		{name: "sub-second step left", base: stats(4000, 10, 10*ms), can: stats(1000, 0, 10*ms), gates: g, step: StepInfo{Started: t0, MinDuration: time.Second, Now: t0.Add(750 * ms)}, decision: Hold, reason: "waiting: 250ms left in step"},
		{name: "NaN outputs", base: stats(4000, 0, 10*ms), can: withNaN(stats(50, 0, 10*ms), 5), gates: g, step: justStarted, decision: Rollback, reason: "nan_rate 10.00% (5/50", gate: "nan_rate", status: Fail},
		{name: "fallbacks", base: stats(4000, 0, 10*ms), can: func() Stats { s := stats(1000, 0, 10*ms); s.Fallbacks = 200; return s }(), gates: g, step: longAgo, decision: Rollback, gate: "fallback_rate", status: Fail},
		{name: "shadow disagreement gate", base: stats(4000, 0, 10*ms), can: func() Stats { s := stats(1000, 0, 10*ms); s.ShadowCompared, s.ShadowDisagreed = 1000, 300; return s }(),
			gates: Gates{MinRequests: 500, MaxShadowDisagreement: 0.1}.Defaults(), step: longAgo, decision: Rollback, gate: "shadow_disagreement", status: Fail},
		// client_4xx and overload are not the version's failure: 30 % of
		// each fails neither the error gate nor the fallback gate.
		{name: "overload is not an error", base: stats(4000, 0, 10*ms), can: withErrors(stats(1000, 0, 10*ms), ErrOverload, 300), gates: g, step: longAgo,
			decision: Promote, gate: "error_rate", status: Pass},
		{name: "overload is not a failing fallback", base: stats(4000, 0, 10*ms), can: withErrors(stats(1000, 0, 10*ms), ErrOverload, 300), gates: g, step: longAgo,
			decision: Promote, gate: "fallback_rate", status: Pass},
		{name: "overload plus real errors still counts the errors", base: stats(4000, 40, 10*ms), can: withErrors(stats(1200, 100, 10*ms), ErrOverload, 500), gates: g, step: longAgo,
			decision: Rollback, reason: "error_rate 8.33% (100/1200", gate: "error_rate", status: Fail},
		{name: "client 4xx as often as the baseline", base: withErrors(stats(4000, 0, 10*ms), ErrClient4xx, 400), can: withErrors(stats(1000, 0, 10*ms), ErrClient4xx, 100), gates: g, step: longAgo,
			decision: Promote, gate: "client_4xx_rate", status: Pass},
		{name: "client 4xx not an error", base: withErrors(stats(4000, 0, 10*ms), ErrClient4xx, 400), can: withErrors(stats(1000, 0, 10*ms), ErrClient4xx, 100), gates: g, step: longAgo,
			decision: Promote, gate: "error_rate", status: Pass},
		// The canary rejects 12 % of what the baseline (0.1 %) accepts.
		{name: "canary rejects what the baseline accepts", base: withErrors(stats(4000, 0, 10*ms), ErrClient4xx, 4), can: withErrors(stats(1000, 0, 10*ms), ErrClient4xx, 120), gates: g, step: longAgo,
			decision: Rollback, reason: "client_4xx_rate 12.00% (120/1000, 95% interval 10.13%..14.16%) > baseline 0.10% (4/4000, upper bound 0.26%) + max excess 1.00%", gate: "client_4xx_rate", status: Fail},
		{name: "a little more rejection than the baseline, within the excess", base: withErrors(stats(4000, 0, 10*ms), ErrClient4xx, 4), can: withErrors(stats(1000, 0, 10*ms), ErrClient4xx, 8), gates: g, step: longAgo,
			decision: Promote, gate: "client_4xx_rate", status: Pass},
		{name: "more rejection, too few requests to tell", base: withErrors(stats(4000, 0, 10*ms), ErrClient4xx, 4), can: withErrors(stats(40, 0, 10*ms), ErrClient4xx, 1), gates: Gates{MinRequests: 10, MinLatencySamples: 10, MaxErrorRate: 0.05}.Defaults(), step: longAgo,
			decision: Hold, reason: "not yet significant", gate: "client_4xx_rate", status: Wait},
		{name: "client 4xx gate with a tighter excess", base: withErrors(stats(4000, 0, 10*ms), ErrClient4xx, 4), can: withErrors(stats(1000, 0, 10*ms), ErrClient4xx, 40),
			gates: Gates{MinRequests: 500, MaxErrorRate: 0.05, MaxClientErrorExcess: 0.001}.Defaults(), step: longAgo, decision: Rollback, gate: "client_4xx_rate", status: Fail},
		{name: "client 4xx without baseline traffic", base: Stats{}, can: withErrors(stats(1000, 0, 10*ms), ErrClient4xx, 120), gates: g, step: lastStep,
			decision: Promote, gate: "client_4xx_rate", status: Pass},
		{name: "shadow gate without data passes", base: stats(4000, 0, 10*ms), can: stats(1000, 0, 10*ms),
			gates: Gates{MinRequests: 500, MaxShadowDisagreement: 0.1}.Defaults(), step: longAgo, decision: Promote, gate: "shadow_disagreement", status: Pass},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := Analyze(c.base, c.can, c.gates, c.step)
			if v.Decision != c.decision {
				t.Fatalf("decision %s (%s), want %s", v.Decision, v.Reason, c.decision)
			}
			if !strings.Contains(v.Reason, c.reason) {
				t.Errorf("reason %q, want it to contain %q", v.Reason, c.reason)
			}
			if c.gate != "" {
				found := false
				for _, gr := range v.Gates {
					if gr.Name == c.gate {
						found = true
						if gr.Status != c.status {
							t.Errorf("gate %s: %s (%s), want %s", c.gate, gr.Status, gr.Detail, c.status)
						}
					}
				}
				if !found {
					t.Errorf("gate %s missing", c.gate)
				}
			}
		})
	}
}

func TestGatesValidate(t *testing.T) {
	for field, g := range map[string]Gates{
		"canary.maxErrorRate": {MaxErrorRate: 2}, "canary.maxP99Ratio": {MaxP99Ratio: 0.5}, "canary.minRequests": {MinRequests: -1},
		"canary.maxNaNRate": {MaxNaNRate: -0.1}, "canary.maxClientErrorExcess": {MaxClientErrorExcess: 1.5},
	} {
		if err := g.Validate(); err == nil || !strings.HasPrefix(err.Error(), field+" ") {
			t.Errorf("%+v: %v, want an error naming %s", g, err, field)
		}
	}
	if d := (Gates{}).Defaults(); d.MaxClientErrorExcess != DefaultMaxClientErrorExcess {
		t.Errorf("default client 4xx excess %g", d.MaxClientErrorExcess)
	}
	if err := (Gates{}).Defaults().Validate(); err != nil {
		t.Error(err)
	}
}
