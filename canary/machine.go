package canary

import (
	"fmt"
	"maps"
	"slices"
	"time"
)

// Phase is where a canary stands.
type Phase string

// Phases.
const (
	Progressing Phase = "progressing" // ramping; each Tick analyses
	Paused      Phase = "paused"      // weights frozen until Resume
	Promoted    Phase = "promoted"    // the canary takes all traffic (terminal)
	RolledBack  Phase = "rolled_back" // the previous split is restored (terminal); the canary is marked failed
)

// Action is a manual command.
type Action string

// Manual actions (Start is the Start function).
const (
	Pause      Action = "pause"
	Resume     Action = "resume"
	PromoteNow Action = "promote"
	Abort      Action = "abort" // roll back now
)

// Config is one canary (plain values; Defaults fills zero fields).
type Config struct {
	Baseline string // the version taking traffic now
	Canary   string // the version being ramped
	// Steps are the canary's traffic percentages, increasing, ending at
	// 100 (default 20, 50, 80, 100).
	Steps []int
	// StepDuration is the minimum time per step (default 5m).
	StepDuration time.Duration
	Gates        Gates
	// FailuresBeforeRollback: consecutive failing analyses needed to roll
	// back, so one noisy window does not end a release (default 3).
	FailuresBeforeRollback int
	// HistoryLimit bounds State.History (default 100).
	HistoryLimit int
}

// Defaults returns c with zero fields set.
func (c Config) Defaults() Config {
	if len(c.Steps) == 0 {
		c.Steps = []int{20, 50, 80, 100}
	}
	if c.StepDuration == 0 {
		c.StepDuration = 5 * time.Minute
	}
	c.Gates = c.Gates.Defaults()
	if c.FailuresBeforeRollback == 0 {
		c.FailuresBeforeRollback = 3
	}
	if c.HistoryLimit == 0 {
		c.HistoryLimit = 100
	}
	return c
}

// Validate names the first bad field.
func (c Config) Validate() error {
	switch {
	case c.Baseline == "" || c.Canary == "":
		return fmt.Errorf("canary: baseline and canary versions are required")
	case c.Baseline == c.Canary:
		return fmt.Errorf("canary.version %q is already the baseline", c.Canary)
	case c.StepDuration < 0:
		return fmt.Errorf("canary.stepDuration must be >= 0, got %s", c.StepDuration)
	case c.FailuresBeforeRollback < 0:
		return fmt.Errorf("canary.consecutiveFailures must be >= 0, got %d", c.FailuresBeforeRollback)
	}
	prev := 0
	for i, s := range c.Steps {
		if s <= prev || s > 100 {
			return fmt.Errorf("canary.steps[%d] = %d: steps must increase within 1..100", i, s)
		}
		prev = s
	}
	if len(c.Steps) > 0 && prev != 100 {
		return fmt.Errorf("canary.steps must end at 100, ends at %d", prev)
	}
	return c.Gates.Validate()
}

// Event is one entry of a canary's history.
type Event struct {
	Time     time.Time      `json:"time"`
	Kind     string         `json:"kind"` // start, promote, hold, rollback_check, rollback, pause, resume, promoted
	Step     int            `json:"step"` // the step after the event, counted from 1 (as the status and the metric count)
	Weights  map[string]int `json:"weights,omitempty"`
	Reason   string         `json:"reason,omitempty"`
	Manual   bool           `json:"manual,omitempty"`
	Decision Decision       `json:"decision,omitempty"`
}

// State is a canary's whole state: a plain value the control plane stores
// with the model and hands back to Tick and Act.
type State struct {
	Phase Phase `json:"phase"`
	// Step indexes Config.Steps (from 0). Everything shown to people —
	// events, the status API, the step metric — counts steps from 1:
	// StepNumber.
	Step        int       `json:"step"`
	StepStarted time.Time `json:"step_started"`
	// Weights are the split to apply now (percent, summing to 100).
	Weights map[string]int `json:"weights"`
	// Previous is the split before the canary started. A rollback
	// restores it with the canary's share given to the baseline
	// (RestoreSplit), so the failed version gets no traffic.
	Previous            map[string]int `json:"previous"`
	ConsecutiveFailures int            `json:"consecutive_failures"`
	// Failed is the canary version, once rolled back: it may not be
	// started again until the operator clears it.
	Failed      string   `json:"failed,omitempty"`
	LastVerdict *Verdict `json:"last_verdict,omitempty"`
	History     []Event  `json:"history,omitempty"`
}

// Transition tells the caller what to apply after Start, Tick or Act.
type Transition struct {
	// Changed says Weights differ from before: write them through the
	// store and xDS path.
	Changed bool
	Weights map[string]int
	// Decision of the analysis (Tick), if one ran.
	Decision Decision
	Reason   string
}

func (c *Config) weightsAt(step int) map[string]int {
	w := c.Steps[step]
	if w >= 100 {
		return map[string]int{c.Canary: 100}
	}
	return map[string]int{c.Baseline: 100 - w, c.Canary: w}
}

// StepNumber is the step counted from 1, as people see it.
func (s *State) StepNumber() int { return s.Step + 1 }

func (s *State) record(c *Config, e Event) {
	e.Step = s.StepNumber()
	if e.Weights == nil {
		e.Weights = s.Weights
	}
	s.History = append(s.History, e)
	if over := len(s.History) - c.HistoryLimit; over > 0 {
		s.History = slices.Delete(s.History, 0, over)
	}
}

// Start begins a canary at its first step. current is the split in force
// (restored on rollback); failed lists versions marked failed by earlier
// rollbacks.
func Start(c Config, current map[string]int, failed []string, now time.Time) (State, Transition, error) {
	c = c.Defaults()
	if err := c.Validate(); err != nil {
		return State{}, Transition{}, err
	}
	if slices.Contains(failed, c.Canary) {
		return State{}, Transition{}, fmt.Errorf("version %q failed an earlier canary; reset it before ramping it again", c.Canary)
	}
	s := State{Phase: Progressing, StepStarted: now, Previous: maps.Clone(current), Weights: c.weightsAt(0)}
	s.record(&c, Event{Time: now, Kind: "start", Manual: true, Reason: fmt.Sprintf("%s -> %s over steps %v", c.Baseline, c.Canary, c.Steps)})
	return s, Transition{Changed: true, Weights: s.Weights}, nil
}

// Tick runs one analysis over the stats of the baseline and the canary (the
// caller takes both from the same window, starting no earlier than
// s.StepStarted) and advances the state. Pure: the state is not modified;
// the new one is returned.
func Tick(s State, c Config, base, can Stats, now time.Time) (State, Transition) {
	c = c.Defaults()
	s = s.clone()
	if s.Phase != Progressing {
		return s, Transition{Weights: s.Weights, Decision: Hold, Reason: string(s.Phase)}
	}
	v := Analyze(base, can, c.Gates, StepInfo{Started: s.StepStarted, MinDuration: c.StepDuration, Now: now,
		NoBaseline: c.weightsAt(min(s.Step, len(c.Steps)-1))[c.Baseline] == 0})
	s.LastVerdict = &v
	switch v.Decision {
	case Rollback:
		s.ConsecutiveFailures++
		if s.ConsecutiveFailures < c.FailuresBeforeRollback {
			reason := fmt.Sprintf("failing check %d/%d: %s", s.ConsecutiveFailures, c.FailuresBeforeRollback, v.Reason)
			s.record(&c, Event{Time: now, Kind: "rollback_check", Decision: Hold, Reason: reason})
			return s, Transition{Weights: s.Weights, Decision: Hold, Reason: reason}
		}
		return s.rollback(&c, now, v.Reason, false)
	case Promote:
		s.ConsecutiveFailures = 0
		return s.advance(&c, now, v.Reason, false)
	}
	s.ConsecutiveFailures = 0
	// Record a hold only when its reason changes, so a long wait does not
	// flood the history.
	if n := len(s.History); n == 0 || s.History[n-1].Kind != "hold" || s.History[n-1].Reason != v.Reason {
		s.record(&c, Event{Time: now, Kind: "hold", Decision: Hold, Reason: v.Reason})
	}
	return s, Transition{Weights: s.Weights, Decision: Hold, Reason: v.Reason}
}

func (s State) advance(c *Config, now time.Time, reason string, manual bool) (State, Transition) {
	if s.Step+1 >= len(c.Steps) {
		s.Phase = Promoted
		s.Weights = map[string]int{c.Canary: 100}
		s.record(c, Event{Time: now, Kind: "promoted", Decision: Promote, Reason: reason, Manual: manual})
		return s, Transition{Changed: true, Weights: s.Weights, Decision: Promote, Reason: reason}
	}
	s.Step++
	s.StepStarted = now
	s.Weights = c.weightsAt(s.Step)
	s.record(c, Event{Time: now, Kind: "promote", Decision: Promote, Reason: reason, Manual: manual})
	return s, Transition{Changed: true, Weights: s.Weights, Decision: Promote, Reason: reason}
}

func (s State) rollback(c *Config, now time.Time, reason string, manual bool) (State, Transition) {
	s.Phase = RolledBack
	s.Failed = c.Canary
	s.Weights = RestoreSplit(s.Previous, c.Baseline, c.Canary)
	s.record(c, Event{Time: now, Kind: "rollback", Decision: Rollback, Reason: reason, Manual: manual})
	return s, Transition{Changed: true, Weights: s.Weights, Decision: Rollback, Reason: reason}
}

// RestoreSplit is the split a rollback writes: prev (the split before the
// canary started) with the canary's share given to the baseline, so the
// version that failed gets no traffic even when it had some before its
// canary ({v1: 80, v2: 20} with canary v2 restores {v1: 100, v2: 0}).
// Without prev, everything goes to the baseline.
func RestoreSplit(prev map[string]int, baseline, canary string) map[string]int {
	if len(prev) == 0 {
		return map[string]int{baseline: 100}
	}
	w := maps.Clone(prev)
	if n := w[canary]; n > 0 {
		w[baseline] += n
		w[canary] = 0
	}
	return w
}

// Act applies a manual action. Pause freezes the weights; Resume restarts
// the current step's clock (time paused does not count); PromoteNow moves
// to the next step at once, skipping the gates (repeat it to reach 100);
// Abort rolls back like an automatic rollback (RestoreSplit) and marks the
// canary failed. An
// action that does not apply in the current phase is an error naming both.
func Act(s State, c Config, a Action, now time.Time, reason string) (State, Transition, error) {
	c = c.Defaults()
	s = s.clone()
	terminal := s.Phase == Promoted || s.Phase == RolledBack
	switch {
	case terminal:
		return s, Transition{Weights: s.Weights}, fmt.Errorf("canary is %s: %s does not apply", s.Phase, a)
	case a == Pause && s.Phase == Progressing:
		s.Phase = Paused
		s.record(&c, Event{Time: now, Kind: "pause", Manual: true, Reason: reason})
		return s, Transition{Weights: s.Weights}, nil
	case a == Resume && s.Phase == Paused:
		s.Phase = Progressing
		s.StepStarted = now
		s.ConsecutiveFailures = 0
		s.record(&c, Event{Time: now, Kind: "resume", Manual: true, Reason: reason})
		return s, Transition{Weights: s.Weights}, nil
	case a == PromoteNow:
		s.Phase = Progressing
		ns, t := s.advance(&c, now, manualReason("promoted by hand", reason), true)
		return ns, t, nil
	case a == Abort:
		ns, t := s.rollback(&c, now, manualReason("aborted by hand", reason), true)
		return ns, t, nil
	}
	return s, Transition{Weights: s.Weights}, fmt.Errorf("canary is %s: %s does not apply", s.Phase, a)
}

func manualReason(what, why string) string {
	if why == "" {
		return what
	}
	return what + ": " + why
}

func (s State) clone() State {
	s.Weights = maps.Clone(s.Weights)
	s.Previous = maps.Clone(s.Previous)
	s.History = slices.Clone(s.History)
	return s
}
