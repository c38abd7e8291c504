package loadtest

import (
	"fmt"
	"math"
	"time"
)

// StepVerdict is the pure judgement of one ramp step.
type StepVerdict struct {
	OK     bool
	Reason string // why the step failed ("" when OK)
}

// JudgeStep decides whether a step stayed within the budget: no errors,
// nothing left unsent, p99 at most budget and the achieved rate at least
// 90 % of the target (an open-loop generator that cannot keep up is not a
// pass).
func JudgeStep(targetRate, achievedRate float64, p99, budget time.Duration, errors, unsent int) StepVerdict {
	switch {
	case errors > 0:
		return StepVerdict{Reason: fmt.Sprintf("%d errors", errors)}
	case unsent > 0:
		return StepVerdict{Reason: fmt.Sprintf("%d requests still queued at the end of the step", unsent)}
	case p99 > budget:
		return StepVerdict{Reason: fmt.Sprintf("p99 %s > budget %s", fmtDur(p99), fmtDur(budget))}
	case achievedRate < 0.9*targetRate:
		return StepVerdict{Reason: fmt.Sprintf("achieved %.0f rps < 90%% of %.0f", achievedRate, targetRate)}
	}
	return StepVerdict{OK: true}
}

// NextRate is the rate of the ramp's next step (×factor, rounded up to a
// whole request per second, at least +1).
func NextRate(rate, factor float64) float64 {
	return math.Max(math.Ceil(rate*factor), rate+1)
}

// Replicas is how many replicas serve targetRate with headroom (0.3 = 30 %
// spare) when one replica sustains capacity requests per second; 0 when
// capacity is unknown (<= 0) or there is no target.
func Replicas(capacity, targetRate, headroom float64) int {
	if capacity <= 0 || targetRate <= 0 {
		return 0
	}
	need := targetRate * (1 + math.Max(headroom, 0)) / capacity
	return int(math.Ceil(need - 1e-9))
}

func fmtDur(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2fs", d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(d)/1e6)
	default:
		return fmt.Sprintf("%.0fµs", float64(d)/1e3)
	}
}
