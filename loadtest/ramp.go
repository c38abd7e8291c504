package loadtest

import (
	"context"
	"fmt"
	"time"
)

// RampConfig steps the rate up until a step fails.
type RampConfig struct {
	StartRate   float64       // first step's rate
	Factor      float64       // rate multiplier per step (1.5)
	MaxRate     float64       // never step above this
	Step        time.Duration // each step's duration
	Budget      time.Duration // p99 budget
	Duration    time.Duration // bound of the whole ramp
	MaxRequests int           // bound of the whole ramp
	Workers     int
	Timeout     time.Duration
	TargetRate  float64 // for the replica estimate (0: none)
	Headroom    float64 // e.g. 0.3
	Progress    func(rate float64, p Progress)
}

// Validate rejects an unbounded ramp.
func (c RampConfig) Validate() error {
	switch {
	case !(c.StartRate > 0):
		return fmt.Errorf("ramp start rate must be > 0, got %v", c.StartRate)
	case !(c.Factor > 1):
		return fmt.Errorf("ramp factor must be > 1, got %v", c.Factor)
	case c.MaxRate < c.StartRate:
		return fmt.Errorf("ramp max rate %v is below the start rate %v", c.MaxRate, c.StartRate)
	case c.Step <= 0:
		return fmt.Errorf("ramp step must be > 0, got %v", c.Step)
	case c.Budget <= 0:
		return fmt.Errorf("p99 budget must be > 0, got %v", c.Budget)
	case c.Duration < c.Step:
		return fmt.Errorf("duration %v is shorter than one ramp step %v", c.Duration, c.Step)
	case c.MaxRequests <= 0:
		return fmt.Errorf("max-requests must be > 0, got %d", c.MaxRequests)
	}
	return nil
}

// RampStep is one step of a ramp.
type RampStep struct {
	Rate     float64       `json:"rate"`
	Achieved float64       `json:"achieved_rate"`
	P50      time.Duration `json:"p50_ns"`
	P99      time.Duration `json:"p99_ns"`
	Errors   int           `json:"errors"`
	Unsent   int           `json:"unsent"`
	OK       bool          `json:"ok"`
	Reason   string        `json:"reason,omitempty"`
	Result   *Result       `json:"-"`
}

// RampResult is the outcome of a ramp.
type RampResult struct {
	Steps    []RampStep    `json:"steps"`
	Budget   time.Duration `json:"p99_budget_ns"`
	Capacity float64       `json:"capacity_rps"` // last good rate; 0 if none passed
	// StopReason says why the ramp ended.
	StopReason string  `json:"stop_reason"`
	TargetRate float64 `json:"target_rate,omitempty"`
	Headroom   float64 `json:"headroom"`
	Replicas   int     `json:"replicas,omitempty"`
}

// Ramp runs steps of cfg.Step at StartRate, ×Factor each, until a step
// fails JudgeStep, the next rate exceeds MaxRate, or the next step would
// go past Duration or MaxRequests.
func Ramp(ctx context.Context, cfg RampConfig, s Sender) (*RampResult, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	out := &RampResult{Budget: cfg.Budget, TargetRate: cfg.TargetRate, Headroom: cfg.Headroom}
	used := time.Duration(0)
	sent := 0
	rate := cfg.StartRate
	for {
		if rate > cfg.MaxRate {
			out.StopReason = fmt.Sprintf("next rate %.0f rps is above --ramp-max %.0f", rate, cfg.MaxRate)
			break
		}
		if used+cfg.Step > cfg.Duration {
			out.StopReason = fmt.Sprintf("--duration %s reached", cfg.Duration)
			break
		}
		n := Planned(rate, cfg.Step, cfg.MaxRequests)
		if sent+n > cfg.MaxRequests {
			out.StopReason = fmt.Sprintf("--max-requests %d reached", cfg.MaxRequests)
			break
		}
		rc := Config{Rate: rate, Duration: cfg.Step, MaxRequests: n, Workers: cfg.Workers, Timeout: cfg.Timeout}
		if cfg.Progress != nil {
			r := rate
			rc.Progress = func(p Progress) { cfg.Progress(r, p) }
		}
		res, err := Run(ctx, rc, s)
		if err != nil {
			return out, err
		}
		used += cfg.Step
		sent += res.Scheduled
		st := RampStep{
			Rate: rate, Achieved: res.AchievedRate(), P50: res.Hist.Quantile(0.5), P99: res.Hist.Quantile(0.99),
			Errors: res.ErrorCount(), Unsent: res.Unsent, Result: res,
		}
		v := JudgeStep(rate, st.Achieved, st.P99, cfg.Budget, st.Errors, st.Unsent)
		st.OK, st.Reason = v.OK, v.Reason
		out.Steps = append(out.Steps, st)
		if !v.OK {
			out.StopReason = fmt.Sprintf("step at %.0f rps failed: %s", rate, v.Reason)
			break
		}
		out.Capacity = rate
		rate = NextRate(rate, cfg.Factor)
	}
	out.Replicas = Replicas(out.Capacity, cfg.TargetRate, cfg.Headroom)
	return out, nil
}
