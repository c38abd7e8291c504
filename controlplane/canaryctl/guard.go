package canaryctl

import (
	"context"
	"fmt"
	"net/http"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/canary"
	"github.com/switchyard-dev/switchyard/controlplane/store"
)

// While a canary runs, its weights are the controller's. A write through
// the API that would change them (PUT .../weights, or a PUT of the
// document with other weights) is refused with 409 and hints naming what
// resolves it — abort the canary, or repeat with force, which aborts the
// canary first (its version is marked failed) and then writes. A
// document that differs only in carrying the split from before the canary
// (re-applying the file that started it) keeps the canary's weights: a
// no-op when nothing else changed, never a 409. Removing or renaming
// spec.canary ends the run and is written as it is. POST .../rollback
// aborts a running canary first.

func modelAPIPath(name string) string { return "/v1/models/" + name }

// AbortHint is the hint naming POST .../canary/abort.
func AbortHint(model, version string) api.Hint {
	return api.Hint{Action: api.HintCanaryAbort, Model: model, Version: version, Method: http.MethodPost, Path: modelAPIPath(model) + "/canary/abort",
		Message: fmt.Sprintf("abort the canary: %s is marked failed and the split from before the canary comes back", version)}
}

// ResetHint is the hint naming POST .../canary/reset of version.
func ResetHint(model, version string) api.Hint {
	return api.Hint{Action: api.HintCanaryReset, Model: model, Version: version, Method: http.MethodPost, Path: modelAPIPath(model) + "/canary/reset",
		Body: map[string]any{"version": version}, Message: fmt.Sprintf("clear the failed mark of %s (it may take traffic and be ramped again)", version)}
}

// ConflictError is an action or write that does not apply now (409), with
// the actions that would resolve it.
type ConflictError struct {
	Msg   string
	Hints []api.Hint
}

func (e ConflictError) Error() string { return e.Msg }

// BadRequestError is an action the request got wrong (400).
type BadRequestError struct{ Msg string }

func (e BadRequestError) Error() string { return e.Msg }

// WriteOutcome is what a write of a model's document means for its
// running canary.
type WriteOutcome int

const (
	WritePass     WriteOutcome = iota // no canary runs, or the split stays the canary's
	WriteKeep                         // the document carries the split from before the canary: keep the canary's
	WriteEnds                         // spec.canary removed or renamed: the run ends; written as it is
	WriteConflict                     // changes the weights the canary sets: refused unless forced
)

// judgeWrite decides what a write of next over cur does to run (nil or
// finished: nothing). weightsOnly says the request sets the weights
// alone (PUT .../weights): then any other split is a change, even the one
// from before the canary. Pure.
func judgeWrite(run *canaryRun, cur, next *api.Model, weightsOnly bool) WriteOutcome {
	if !run.active() {
		return WritePass
	}
	if c := next.Spec.Canary; !weightsOnly && (c == nil || c.Version != run.Config.Canary) {
		return WriteEnds
	}
	nw := next.Spec.Traffic.Weights
	switch {
	case SameSplit(nw, cur.Spec.Traffic.Weights):
		return WritePass
	case !weightsOnly && SameSplit(nw, run.State.Previous):
		return WriteKeep
	}
	return WriteConflict
}

// Verdict is what a write means for a model's running canary (Judge).
type Verdict struct {
	Outcome WriteOutcome
	// Canary is the running canary's version ("": none).
	Canary string
	model  string
	run    *canaryRun
}

// Judge runs judgeWrite against the model's run now.
func (c *Controller) Judge(name string, cur, next *api.Model, weightsOnly bool) Verdict {
	c.mu.Lock()
	defer c.mu.Unlock()
	run := c.book(name).Run.clone()
	v := Verdict{Outcome: judgeWrite(run, cur, next, weightsOnly), model: name, run: run}
	if run != nil {
		v.Canary = run.Config.Canary
	}
	return v
}

// Conflict is the refusal of a write that changes a running canary's
// weights (Outcome WriteConflict); force is the hint that repeats it with
// force.
func (v Verdict) Conflict(force api.Hint) ConflictError {
	name, run := v.model, v.run
	return ConflictError{
		Msg: fmt.Sprintf("model %q has a canary of %s in progress (%s at step %d/%d, weights %s): its weights are the canary controller's; abort the canary first, or repeat with force",
			name, run.Config.Canary, run.State.Phase, run.State.StepNumber(), len(run.Config.Steps), splitString(run.State.Weights)),
		Hints: []api.Hint{AbortHint(name, run.Config.Canary), force},
	}
}

// AbortFor aborts the model's canary, if one runs, on behalf of a request
// that needs it out of the way (a forced weight change, a rollback),
// marking its version failed. pinned > 0 is the request's If-Match: the
// abort applies to that revision only. nil when no canary ran.
func (c *Controller) AbortFor(ctx context.Context, name string, pinned int64, subject, reason string) (*api.AbortedCanary, error) {
	rec, err := c.store.Get(ctx, name)
	if err != nil {
		return nil, err
	}
	if pinned > 0 && rec.Revision != pinned {
		return nil, fmt.Errorf("model %q is at revision %d, not %d: %w", name, rec.Revision, pinned, store.ErrConflict)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	b := c.book(name)
	run := b.Run
	if !run.active() {
		return nil, nil
	}
	if rec.Revision < run.Revision {
		return nil, fmt.Errorf("model %q changed while aborting its canary: %w", name, store.ErrConflict)
	}
	st, tr, err := canary.Act(run.State, configOf(run, rec.Model.Spec.Canary), canary.Abort, c.now(), reason)
	if err != nil {
		return nil, ConflictError{Msg: err.Error()}
	}
	nb := b.clone()
	nb.Run.State = st
	if err := c.apply(ctx, b, nb, rec, tr, subject, true); err != nil {
		return nil, err
	}
	return &api.AbortedCanary{Canary: run.Config.Canary, Revision: nb.Run.Revision, Weights: st.Weights, Reason: st.History[len(st.History)-1].Reason}, nil
}
