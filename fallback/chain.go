package fallback

import (
	"fmt"
	"strings"

	"github.com/switchyard-dev/switchyard/oip"
)

// Response headers (and gRPC metadata keys) that mark a fallback answer.
const (
	HeaderFallback       = "x-switchyard-fallback"        // cache | backup | static | empty
	HeaderFallbackReason = "x-switchyard-fallback-reason" // the Trigger, e.g. timeout
	HeaderCache          = "x-switchyard-cache"           // "hit" on a prediction cache hit
)

// Step is one step of a fallback chain. Its String is the value of
// x-switchyard-fallback and the "kind" metrics label.
type Step uint8

// Chain steps.
const (
	StepCache  Step = iota + 1 // the last good answer for the same input (LastGood store)
	StepBackup                 // another version of the model, with its own budget
	StepStatic                 // a fixed answer from the desired state
	StepEmpty                  // an empty answer with 200
)

func (s Step) String() string {
	switch s {
	case StepCache:
		return "cache"
	case StepBackup:
		return "backup"
	case StepStatic:
		return "static"
	case StepEmpty:
		return "empty"
	}
	return "unknown"
}

// ParseStep reads "cache", "backup", "static" or "empty".
func ParseStep(s string) (Step, error) {
	for _, st := range []Step{StepCache, StepBackup, StepStatic, StepEmpty} {
		if st.String() == s {
			return st, nil
		}
	}
	return 0, fmt.Errorf("unknown fallback step %q (allowed: cache, backup, static, empty)", s)
}

// ParseChain reads a chain such as ["cache", "backup", "static"]; a step may
// appear at most once.
func ParseChain(names []string) ([]Step, error) {
	out := make([]Step, 0, len(names))
	seen := map[Step]bool{}
	for i, n := range names {
		st, err := ParseStep(n)
		if err != nil {
			return nil, fmt.Errorf("fallback.chain[%d]: %w", i, err)
		}
		if seen[st] {
			return nil, fmt.Errorf("fallback.chain[%d]: step %q appears twice", i, n)
		}
		seen[st] = true
		out = append(out, st)
	}
	return out, nil
}

// Availability says which steps can answer right now.
type Availability struct {
	LastGood bool // the LastGood store holds an entry for this input
	Backup   bool // a backup version is configured (and is not the version that failed)
	Static   bool // a static answer is configured
}

func (a Availability) has(s Step) (bool, string) {
	switch s {
	case StepCache:
		return a.LastGood, "no last good answer for this input"
	case StepBackup:
		return a.Backup, "no backup version configured"
	case StepStatic:
		return a.Static, "no static answer configured"
	case StepEmpty:
		return true, ""
	}
	return false, "unknown step"
}

// Attempt records what happened to one chain step.
type Attempt struct {
	Step    Step
	Skipped string // why the step was not tried (unavailable), or ""
	Err     error  // why the tried step failed, or nil
}

func (a Attempt) String() string {
	switch {
	case a.Skipped != "":
		return a.Step.String() + ": skipped (" + a.Skipped + ")"
	case a.Err != nil:
		return a.Step.String() + ": " + a.Err.Error()
	}
	return a.Step.String() + ": ok"
}

// Plan is the pure planning step: the steps of chain to try, in order,
// given what is available, and the attempts of the steps skipped (for the
// error message when everything fails).
func Plan(chain []Step, avail Availability) (try []Step, skipped []Attempt) {
	for _, s := range chain {
		if ok, why := avail.has(s); ok {
			try = append(try, s)
		} else {
			skipped = append(skipped, Attempt{Step: s, Skipped: why})
		}
	}
	return try, skipped
}

// Walk plans the chain and calls try for each available step in order until
// one succeeds (returns nil). It returns the step that answered, or an
// *ExhaustedError naming every step and why it did not answer. The trigger
// is the reason the primary failed.
func Walk(chain []Step, avail Availability, trigger Trigger, try func(Step) error) (Step, error) {
	steps, _ := Plan(chain, avail)
	var attempts []Attempt
	next := 0
	for _, s := range chain {
		if next < len(steps) && steps[next] == s {
			next++
			err := try(s)
			if err == nil {
				return s, nil
			}
			attempts = append(attempts, Attempt{Step: s, Err: err})
			continue
		}
		_, why := avail.has(s)
		attempts = append(attempts, Attempt{Step: s, Skipped: why})
	}
	return 0, &ExhaustedError{Trigger: trigger, Attempts: attempts}
}

// ExhaustedError says the primary failed and no fallback step answered. It
// maps to 503 / UNAVAILABLE.
type ExhaustedError struct {
	Trigger  Trigger
	Attempts []Attempt
}

func (e *ExhaustedError) Error() string {
	var b strings.Builder
	b.WriteString("upstream failed (")
	b.WriteString(e.Trigger.String())
	b.WriteString(") and every fallback failed")
	if len(e.Attempts) == 0 {
		b.WriteString(": no fallback chain configured")
		return b.String()
	}
	b.WriteString(": ")
	for i, a := range e.Attempts {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(a.String())
	}
	return b.String()
}

// OIP converts the error into a protocol error (503 / UNAVAILABLE).
func (e *ExhaustedError) OIP() *oip.Error {
	return &oip.Error{Code: oip.Unavailable, Msg: e.Error()}
}

// EmptyResponse is the answer of the empty step for a request of rows rows
// (its batch dimension; < 0: unknown): for each tensor of like (typically
// the static spec or the model's output metadata) an output of the same
// name and datatype whose last dimension is 0 and whose batch dimension
// (the first, for rank >= 2) follows the request, so clients that index by
// name and row still find the output. With like empty, no outputs.
func EmptyResponse(model, id string, like []oip.Tensor, rows int64) *oip.InferResponse {
	r := &oip.InferResponse{ModelName: model, ID: id, Outputs: make([]oip.Tensor, len(like))}
	for i, t := range like {
		shape := append([]int64(nil), t.Shape...)
		if len(shape) == 0 {
			shape = []int64{0}
		} else {
			shape[len(shape)-1] = 0
		}
		if len(shape) >= 2 && rows >= 0 {
			shape[0] = rows
		}
		r.Outputs[i] = oip.Tensor{Name: t.Name, Datatype: t.Datatype, Shape: shape, Raw: []byte{}}
	}
	return r
}
