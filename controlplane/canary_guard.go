package controlplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"syscall"

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

func abortHint(model, version string) api.Hint {
	return api.Hint{Action: api.HintCanaryAbort, Model: model, Version: version, Method: http.MethodPost, Path: modelAPIPath(model) + "/canary/abort",
		Message: fmt.Sprintf("abort the canary: %s is marked failed and the split from before the canary comes back", version)}
}

func resetHint(model, version string) api.Hint {
	return api.Hint{Action: api.HintCanaryReset, Model: model, Version: version, Method: http.MethodPost, Path: modelAPIPath(model) + "/canary/reset",
		Body: map[string]any{"version": version}, Message: fmt.Sprintf("clear the failed mark of %s (it may take traffic and be ramped again)", version)}
}

func forceHint(model, version, method, path string, body map[string]any) api.Hint {
	return api.Hint{Action: api.HintForce, Model: model, Version: version, Method: method, Path: path, Body: body,
		Message: fmt.Sprintf("repeat with force: the canary is aborted first (%s marked failed), then your change is written", version)}
}

// conflictError is an action or write that does not apply now (409), with
// the actions that would resolve it.
type conflictError struct {
	msg   string
	hints []api.Hint
}

func (e conflictError) Error() string { return e.msg }

// answerConflict answers a conflictError.
func answerConflict(w http.ResponseWriter, ce conflictError) {
	writeJSON(w, http.StatusConflict, api.ErrorResponse{Error: ce.msg, Hints: ce.hints})
}

// writeOutcome is what a write of a model's document means for its
// running canary.
type writeOutcome int

const (
	writePass     writeOutcome = iota // no canary runs, or the split stays the canary's
	writeKeep                         // the document carries the split from before the canary: keep the canary's
	writeEnds                         // spec.canary removed or renamed: the run ends; written as it is
	writeConflict                     // changes the weights the canary sets: refused unless forced
)

// judgeWrite decides what a write of next over cur does to run (nil or
// finished: nothing). weightsOnly says the request sets the weights
// alone (PUT .../weights): then any other split is a change, even the one
// from before the canary. Pure.
func judgeWrite(run *canaryRun, cur, next *api.Model, weightsOnly bool) writeOutcome {
	if !run.active() {
		return writePass
	}
	if c := next.Spec.Canary; !weightsOnly && (c == nil || c.Version != run.Config.Canary) {
		return writeEnds
	}
	nw := next.Spec.Traffic.Weights
	switch {
	case sameSplit(nw, cur.Spec.Traffic.Weights):
		return writePass
	case !weightsOnly && sameSplit(nw, run.State.Previous):
		return writeKeep
	}
	return writeConflict
}

// judge runs judgeWrite against the model's run now.
func (c *CanaryController) judge(name string, cur, next *api.Model, weightsOnly bool) (writeOutcome, *canaryRun) {
	c.mu.Lock()
	defer c.mu.Unlock()
	run := c.book(name).Run.clone()
	return judgeWrite(run, cur, next, weightsOnly), run
}

// weightsConflict is the refusal of a write that changes a running
// canary's weights; force is the hint that repeats it with force.
func weightsConflict(name string, run *canaryRun, force api.Hint) conflictError {
	return conflictError{
		msg: fmt.Sprintf("model %q has a canary of %s in progress (%s at step %d/%d, weights %s): its weights are the canary controller's; abort the canary first, or repeat with force",
			name, run.Config.Canary, run.State.Phase, run.State.StepNumber(), len(run.Config.Steps), splitString(run.State.Weights)),
		hints: []api.Hint{abortHint(name, run.Config.Canary), force},
	}
}

// abortFor aborts the model's canary, if one runs, on behalf of a request
// that needs it out of the way (a forced weight change, a rollback),
// marking its version failed. pinned > 0 is the request's If-Match: the
// abort applies to that revision only. nil when no canary ran.
func (c *CanaryController) abortFor(ctx context.Context, name string, pinned int64, subject, reason string) (*api.AbortedCanary, error) {
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
		return nil, conflictError{msg: err.Error()}
	}
	nb := b.clone()
	nb.Run.State = st
	if err := c.apply(ctx, b, nb, rec, tr, subject, true); err != nil {
		return nil, err
	}
	return &api.AbortedCanary{Canary: run.Config.Canary, Revision: nb.Run.Revision, Weights: st.Weights, Reason: st.History[len(st.History)-1].Reason}, nil
}

// storeFailure tells a store error that is a failure of the store (I/O, a
// full disk, a corrupt file) from an answer about the request (conflict,
// not found, invalid document) or its end (cancelled, store closed).
func storeFailure(err error) bool {
	var ve api.ValidationError
	switch {
	case err == nil, errors.Is(err, store.ErrConflict), errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrClosed),
		errors.As(err, &ve), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return false
	}
	var ce conflictError
	var br badRequest
	return !errors.As(err, &ce) && !errors.As(err, &br)
}

// outOfSpace reports a write that failed for want of space: ENOSPC,
// EFBIG (a file size limit) or EDQUOT, also where bbolt kept only the text
// of the cause ("file resize error: ... file too large").
func outOfSpace(err error) bool {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EFBIG) || errors.Is(err, syscall.EDQUOT) {
		return true
	}
	s := err.Error()
	for _, e := range []syscall.Errno{syscall.ENOSPC, syscall.EFBIG, syscall.EDQUOT} {
		if strings.Contains(s, e.Error()) {
			return true
		}
	}
	return false
}

// sameDocument reports whether two (normalized) documents are the same.
func sameDocument(a, b *api.Model) bool {
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && string(x) == string(y)
}
