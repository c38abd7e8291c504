package canary

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// Gates are the thresholds a canary is judged by (plain values; Defaults
// fills zero fields).
type Gates struct {
	// MinRequests of the canary in the step before it may be promoted
	// (default 500).
	MinRequests int
	// MaxErrorRate of the canary, 0..1 (default 0.01).
	MaxErrorRate float64
	// MaxP99Ratio: canary p99 / baseline p99 (default 1.25).
	MaxP99Ratio float64
	// MinLatencySamples on both sides before the p99 gate judges (default
	// 100).
	MinLatencySamples int
	// MaxNaNRate: share of canary answers with NaN/Inf (default 0.001).
	MaxNaNRate float64
	// MaxFallbackRate: share of canary requests answered by a fallback
	// (default: MaxErrorRate).
	MaxFallbackRate float64
	// MaxShadowDisagreement: share of shadow comparisons that disagreed
	// (0: gate off).
	MaxShadowDisagreement float64
	// MaxClientErrorExcess: how much the canary's client_4xx rate (requests
	// it rejected as bad, 400 / InvalidArgument) may exceed the
	// baseline's over the same window, 0..1 (default 0.01: one percentage
	// point).
	MaxClientErrorExcess float64
	// Z is the normal quantile of the Wilson score intervals (default 1.96,
	// a 95 % two-sided interval).
	Z float64
}

// Defaults returns g with zero fields set.
func (g Gates) Defaults() Gates {
	if g.MinRequests == 0 {
		g.MinRequests = 500
	}
	if g.MaxErrorRate == 0 {
		g.MaxErrorRate = 0.01
	}
	if g.MaxP99Ratio == 0 {
		g.MaxP99Ratio = 1.25
	}
	if g.MinLatencySamples == 0 {
		g.MinLatencySamples = 100
	}
	if g.MaxNaNRate == 0 {
		g.MaxNaNRate = 0.001
	}
	if g.MaxFallbackRate == 0 {
		g.MaxFallbackRate = g.MaxErrorRate
	}
	if g.MaxClientErrorExcess == 0 {
		g.MaxClientErrorExcess = DefaultMaxClientErrorExcess
	}
	if g.Z == 0 {
		g.Z = 1.96
	}
	return g
}

// DefaultMaxClientErrorExcess is the client_4xx_rate gate's allowance: the
// canary may reject one request in a hundred more than the baseline.
const DefaultMaxClientErrorExcess = 0.01

// Validate names the first bad field.
func (g Gates) Validate() error {
	rate := func(name string, v float64) error {
		if v < 0 || v > 1 {
			return fmt.Errorf("canary.%s must be within 0..1, got %g", name, v)
		}
		return nil
	}
	for _, c := range []struct {
		n string
		v float64
	}{{"maxErrorRate", g.MaxErrorRate}, {"maxNaNRate", g.MaxNaNRate}, {"maxFallbackRate", g.MaxFallbackRate}, {"maxShadowDisagreement", g.MaxShadowDisagreement}, {"maxClientErrorExcess", g.MaxClientErrorExcess}} {
		if err := rate(c.n, c.v); err != nil {
			return err
		}
	}
	switch {
	case g.MinRequests < 0:
		return fmt.Errorf("canary.minRequests must be >= 0, got %d", g.MinRequests)
	case g.MaxP99Ratio != 0 && g.MaxP99Ratio < 1:
		return fmt.Errorf("canary.maxP99Ratio must be >= 1, got %g", g.MaxP99Ratio)
	case g.MinLatencySamples < 0:
		return fmt.Errorf("canary.minLatencySamples must be >= 0, got %d", g.MinLatencySamples)
	case g.Z < 0:
		return fmt.Errorf("canary.z must be >= 0, got %g", g.Z)
	}
	return nil
}

// Decision is the outcome of one analysis.
type Decision string

// Decisions.
const (
	Promote  Decision = "promote"
	Hold     Decision = "hold"
	Rollback Decision = "rollback"
)

// GateStatus is one gate's verdict.
type GateStatus string

// Gate statuses.
const (
	Pass GateStatus = "pass"
	Fail GateStatus = "fail"
	Wait GateStatus = "wait" // not enough evidence either way
)

// GateResult is one gate's value against its threshold, for the status API.
type GateResult struct {
	Name      string     `json:"name"`
	Status    GateStatus `json:"status"`
	Value     float64    `json:"value"`
	Threshold float64    `json:"threshold"`
	// Lower and Upper bound the canary's rate (Wilson score interval), for
	// rate gates.
	Lower    float64 `json:"lower,omitempty"`
	Upper    float64 `json:"upper,omitempty"`
	Baseline float64 `json:"baseline"`
	Detail   string  `json:"detail"`
}

// Verdict is one analysis: the decision, why, and every gate.
type Verdict struct {
	Decision Decision     `json:"decision"`
	Reason   string       `json:"reason"`
	Gates    []GateResult `json:"gates"`
}

// StepInfo places the analysis in its step.
type StepInfo struct {
	Started     time.Time
	MinDuration time.Duration
	Now         time.Time
	// NoBaseline says the step sends the baseline no traffic (the last
	// step, at 100 %): the few baseline samples still in the window (from
	// before the split changed) are not waited for by the p99 gate.
	NoBaseline bool
}

// Wilson returns the Wilson score interval of a binomial proportion: k
// successes in n trials at normal quantile z. n = 0 gives [0, 1].
func Wilson(k, n uint64, z float64) (lo, hi float64) {
	if n == 0 {
		return 0, 1
	}
	nf := float64(n)
	p := float64(k) / nf
	z2 := z * z
	den := 1 + z2/nf
	center := (p + z2/(2*nf)) / den
	half := z * math.Sqrt(p*(1-p)/nf+z2/(4*nf*nf)) / den
	return max(0, center-half), min(1, center+half)
}

// rateGate judges a "bad events per request" rate of the canary:
//
//   - fail when the lower Wilson bound of the canary's rate exceeds max and
//     (when the baseline has traffic) also exceeds the upper Wilson bound of
//     the baseline's rate: the canary is bad with confidence, and worse
//     than what it would replace;
//   - pass when the observed rate is at most max;
//   - otherwise wait: too few requests to tell (1 error in 12 requests has
//     a lower bound of 1.5 %, 100 in 1200 of 6.9 %), or as bad as the
//     baseline.
func rateGate(name string, bad, n, baseBad, baseN uint64, max, z float64) GateResult {
	g, ok := observeRate(name, bad, n, baseBad, baseN, max, z)
	if !ok {
		return g
	}
	_, baseHi := Wilson(baseBad, baseN, z)
	switch {
	case g.Lower > max && (baseN == 0 || g.Lower > baseHi):
		g.Status = Fail
		g.Detail = fmt.Sprintf("%s %s (%d/%d, %.0f%% interval %s..%s) > max %s; baseline %s (%d/%d)",
			name, pct(g.Value), bad, n, confidence(z), pct(g.Lower), pct(g.Upper), pct(max), pct(g.Baseline), baseBad, baseN)
	case g.Value <= max:
		g.Status = Pass
		g.Detail = fmt.Sprintf("%s %s (%d/%d) <= max %s", name, pct(g.Value), bad, n, pct(max))
	case g.Lower > max:
		g.Status = Wait
		g.Detail = fmt.Sprintf("%s %s (%d/%d) > max %s but not worse than baseline %s (%d/%d)", name, pct(g.Value), bad, n, pct(max), pct(g.Baseline), baseBad, baseN)
	default:
		g.Status = Wait
		g.Detail = fmt.Sprintf("%s %s (%d/%d) > max %s, not yet significant (lower bound %s)", name, pct(g.Value), bad, n, pct(max), pct(g.Lower))
	}
	return g
}

// observeRate fills a rate gate's figures: the baseline's rate, the
// canary's and its Wilson interval; ok is false (the gate waits) while the
// canary has no requests.
func observeRate(name string, bad, n, baseBad, baseN uint64, threshold, z float64) (g GateResult, ok bool) {
	g = GateResult{Name: name, Threshold: threshold}
	if baseN > 0 {
		g.Baseline = float64(baseBad) / float64(baseN)
	}
	if n == 0 {
		g.Status, g.Detail = Wait, "no canary requests yet"
		return g, false
	}
	g.Value = float64(bad) / float64(n)
	g.Lower, g.Upper = Wilson(bad, n, z)
	return g, true
}

// excessGate judges how much more often the canary rejects requests than
// the baseline over the same window (client_4xx answers per request):
//
//   - pass without baseline traffic to compare with (the last step, or no
//     baseline requests in the window);
//   - fail when the lower Wilson bound of the canary's rate is above the
//     upper Wilson bound of the baseline's plus maxExcess: the canary
//     rejects clearly more than the baseline does, beyond the allowance;
//   - pass when the observed canary rate is at most the observed baseline
//     rate plus maxExcess;
//   - otherwise wait: too few requests to tell.
func excessGate(name string, bad, n, baseBad, baseN uint64, maxExcess, z float64, noBaseline bool) GateResult {
	g, ok := observeRate(name, bad, n, baseBad, baseN, maxExcess, z)
	if !ok {
		return g
	}
	if baseN == 0 || noBaseline {
		g.Status = Pass
		g.Detail = fmt.Sprintf("%s %s (%d/%d): no baseline traffic to compare with", name, pct(g.Value), bad, n)
		return g
	}
	_, baseHi := Wilson(baseBad, baseN, z)
	switch {
	case g.Lower > baseHi+maxExcess:
		g.Status = Fail
		g.Detail = fmt.Sprintf("%s %s (%d/%d, %.0f%% interval %s..%s) > baseline %s (%d/%d, upper bound %s) + max excess %s",
			name, pct(g.Value), bad, n, confidence(z), pct(g.Lower), pct(g.Upper), pct(g.Baseline), baseBad, baseN, pct(baseHi), pct(maxExcess))
	case g.Value <= g.Baseline+maxExcess:
		g.Status = Pass
		g.Detail = fmt.Sprintf("%s %s (%d/%d) <= baseline %s (%d/%d) + max excess %s", name, pct(g.Value), bad, n, pct(g.Baseline), baseBad, baseN, pct(maxExcess))
	default:
		g.Status = Wait
		g.Detail = fmt.Sprintf("%s %s (%d/%d) > baseline %s (%d/%d) + max excess %s, not yet significant (lower bound %s, baseline upper bound %s)",
			name, pct(g.Value), bad, n, pct(g.Baseline), baseBad, baseN, pct(maxExcess), pct(g.Lower), pct(baseHi))
	}
	return g
}

func pct(v float64) string { return fmt.Sprintf("%.2f%%", 100*v) }

func confidence(z float64) float64 { return 100 * math.Erf(z/math.Sqrt2) }

func p99Gate(base, can *Stats, g Gates, noBaseline bool) GateResult {
	r := GateResult{Name: "p99_ratio", Threshold: g.MaxP99Ratio}
	need := uint64(g.MinLatencySamples)
	switch {
	case (base.Latency.Total == 0 || noBaseline && base.Latency.Total < need) && can.Latency.Total >= need:
		r.Status, r.Detail = Pass, "no baseline traffic to compare with"
		return r
	case can.Latency.Total < need || base.Latency.Total < need:
		r.Status = Wait
		r.Detail = fmt.Sprintf("waiting: %d/%d canary and %d/%d baseline latency samples", can.Latency.Total, need, base.Latency.Total, need)
		return r
	}
	bp, cp := base.Latency.Quantile(0.99), can.Latency.Quantile(0.99)
	r.Baseline = bp.Seconds()
	if bp <= 0 {
		r.Status, r.Detail = Pass, "baseline p99 is 0"
		return r
	}
	r.Value = float64(cp) / float64(bp)
	if r.Value > g.MaxP99Ratio {
		r.Status = Fail
		r.Detail = fmt.Sprintf("p99 %s vs baseline %s: ratio %.2f > max %.2f", cp.Round(time.Microsecond), bp.Round(time.Microsecond), r.Value, g.MaxP99Ratio)
	} else {
		r.Status = Pass
		r.Detail = fmt.Sprintf("p99 %s vs baseline %s: ratio %.2f <= max %.2f", cp.Round(time.Microsecond), bp.Round(time.Microsecond), r.Value, g.MaxP99Ratio)
	}
	return r
}

// Analyze judges the canary against the baseline over the same window: a
// pure function of the two Stats, the gates (through Defaults) and the
// step's timing. Any failing gate gives Rollback (the state machine waits
// for enough consecutive ones); otherwise Hold until the canary has
// MinRequests, the step its MinDuration and every gate enough data;
// then Promote.
//
// The error and fallback gates count only the version's own failures:
// client_4xx (the request was rejected as bad) and overload (a full
// backend or concurrency limit; a fallback answered) are left out. The
// client_4xx_rate gate compares the canary's rejections with the
// baseline's instead.
func Analyze(base, can Stats, g Gates, step StepInfo) Verdict {
	g = g.Defaults()
	v := Verdict{Gates: []GateResult{
		rateGate("error_rate", can.FailureCount(), can.Requests, base.FailureCount(), base.Requests, g.MaxErrorRate, g.Z),
		p99Gate(&base, &can, g, step.NoBaseline),
		rateGate("nan_rate", can.NaNOutputs, can.Requests, base.NaNOutputs, base.Requests, g.MaxNaNRate, g.Z),
		rateGate("fallback_rate", can.OwnFallbacks(), can.Requests, base.OwnFallbacks(), base.Requests, g.MaxFallbackRate, g.Z),
		excessGate("client_4xx_rate", can.Errors[ErrClient4xx], can.Requests, base.Errors[ErrClient4xx], base.Requests, g.MaxClientErrorExcess, g.Z, step.NoBaseline),
	}}
	if g.MaxShadowDisagreement > 0 {
		if can.ShadowCompared == 0 {
			v.Gates = append(v.Gates, GateResult{Name: "shadow_disagreement", Status: Pass, Threshold: g.MaxShadowDisagreement, Detail: "no shadow comparisons in the window"})
		} else {
			v.Gates = append(v.Gates, rateGate("shadow_disagreement", can.ShadowDisagreed, can.ShadowCompared, 0, 0, g.MaxShadowDisagreement, g.Z))
		}
	}
	var failing []string
	for _, gr := range v.Gates {
		if gr.Status == Fail {
			failing = append(failing, gr.Detail)
		}
	}
	if len(failing) > 0 {
		v.Decision, v.Reason = Rollback, strings.Join(failing, "; ")
		return v
	}
	v.Decision = Hold
	if can.Requests < uint64(g.MinRequests) {
		v.Reason = fmt.Sprintf("waiting: %d/%d canary requests", can.Requests, g.MinRequests)
		return v
	}
	if left := step.Started.Add(step.MinDuration).Sub(step.Now); left > 0 {
		round := time.Second
		if left < 10*time.Second {
			round = time.Millisecond
		}
		v.Reason = fmt.Sprintf("waiting: %s left in step", left.Round(round))
		return v
	}
	for _, gr := range v.Gates {
		if gr.Status == Wait {
			v.Reason = "waiting: " + strings.TrimPrefix(gr.Detail, "waiting: ")
			return v
		}
	}
	v.Decision, v.Reason = Promote, "all gates pass"
	return v
}
