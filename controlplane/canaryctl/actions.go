package canaryctl

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/canary"
	"github.com/switchyard-dev/switchyard/controlplane/stats"
	"github.com/switchyard-dev/switchyard/controlplane/store"
)

// The manual actions (start, pause, resume, promote, abort, reset) and the
// status, as the REST API's canary endpoints (controlplane/rest) serve
// them.

// Status reports a model's canary.
func (c *Controller) Status(ctx context.Context, name string) (api.CanaryStatus, error) {
	// Under the lock, so the document and the book are of the same moment
	// (a tick writes both under it).
	c.mu.Lock()
	rec, err := c.store.Get(ctx, name)
	if err != nil {
		c.mu.Unlock()
		return api.CanaryStatus{}, err
	}
	b := c.book(name).clone()
	writeErr, hasWriteErr := c.writeErr[name]
	failed, failedWhy, ferr := failedVersions(ctx, c.store, name)
	c.mu.Unlock()
	if ferr != nil {
		return api.CanaryStatus{}, ferr
	}
	now := c.now()
	s := api.CanaryStatus{Model: name, Phase: "none", Weights: rec.Model.Spec.Traffic.Weights, FailedVersions: failedWhy,
		History: []canary.Event{}, ReportingProxies: c.stats.Proxies(), Revision: rec.Revision}
	if hasWriteErr {
		s.StateError = fmt.Sprintf("%s: %s (the canary holds until its state can be written)", writeErr.At.UTC().Format(time.RFC3339), writeErr.Err)
	}
	if s.ReportingProxies == nil {
		s.ReportingProxies = []string{}
	}
	spec := rec.Model.Spec.Canary
	run := b.Run
	if run != nil && !run.active() && (spec == nil || spec.Version != run.Config.Canary) {
		run = nil // finished, and no longer asked for: the next tick clears it
	}
	if run == nil {
		switch {
		case spec == nil:
			s.Reason = "no canary: spec.canary is not set (POST .../canary/start with a version, or set spec.canary.version)"
		case slices.Contains(failed, spec.Version):
			s.Canary = spec.Version
			s.Reason = fmt.Sprintf("version %q failed an earlier canary (%s); POST .../canary/reset to ramp it again", spec.Version, failedWhy[spec.Version])
		case soleHolder(rec.Model.Spec.Traffic.Weights, spec.Version):
			s.Canary = spec.Version
			s.Reason = fmt.Sprintf("version %q already takes all traffic", spec.Version)
		default:
			s.Canary = spec.Version
			s.Reason = "waiting for the controller's next tick to start it"
		}
		if b.LastRun != "" {
			s.Reason += "; last run: " + b.LastRun
		}
		return s, nil
	}
	cfg := configOf(run, spec)
	st := &run.State
	s.Phase, s.Canary, s.Baseline = string(st.Phase), cfg.Canary, cfg.Baseline
	s.Step, s.Steps = st.StepNumber(), cfg.Steps
	if st.Step < len(cfg.Steps) {
		s.StepWeight = cfg.Steps[st.Step]
	}
	started := st.StepStarted
	s.StepStarted = &started
	s.TimeInStep = now.Sub(started).Round(time.Millisecond).String()
	s.StepDuration = cfg.StepDuration.String()
	s.MinRequests = cfg.Gates.MinRequests
	s.ConsecutiveFailures, s.FailuresToRollback = st.ConsecutiveFailures, cfg.FailuresBeforeRollback
	s.History = st.History
	if s.History == nil {
		s.History = []canary.Event{}
	}
	if v := st.LastVerdict; v != nil {
		s.Gates = v.Gates
	}
	if n := len(st.History); n > 0 {
		last := st.History[n-1]
		s.Decision, s.Reason = string(last.Decision), last.Reason
		if last.Decision == "" {
			s.Decision = last.Kind
		}
	}
	switch {
	case st.Phase == canary.Progressing && st.LastVerdict != nil && st.ConsecutiveFailures == 0:
		s.Decision, s.Reason = string(st.LastVerdict.Decision), st.LastVerdict.Reason
	case st.Phase == canary.Paused:
		s.Reason = "paused: " + s.Reason
	}
	if st.Phase == canary.Progressing || st.Phase == canary.Paused {
		if base, can, err := c.window(ctx, name, cfg, started, now); err == nil {
			s.Window = &api.CanaryWindow{From: started, To: now, Baseline: stats.VariantView(cfg.Baseline, &base), Canary: stats.VariantView(cfg.Canary, &can)}
		}
	}
	return s, nil
}

// Act runs a manual action (start, pause, resume, promote, abort, reset) on
// a model's canary for subject and returns the revision it wrote.
func (c *Controller) Act(ctx context.Context, name, action string, req api.CanaryActionRequest, subject string) (int64, error) {
	rec, err := c.store.Get(ctx, name)
	if err != nil {
		return 0, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	b := c.book(name)
	now := c.now()
	run := b.Run
	switch action {
	case "start":
		if run.active() {
			return 0, ConflictError{fmt.Sprintf("model %q: the canary of %q is already %s at step %d; abort it first", name, run.Config.Canary, run.State.Phase, run.State.StepNumber()),
				[]api.Hint{AbortHint(name, run.Config.Canary)}}
		}
		m := rec.Model.Clone()
		if m.Spec.Canary == nil {
			m.Spec.Canary = &api.Canary{}
		}
		cs := m.Spec.Canary
		if req.Version != "" {
			cs.Version = req.Version
		}
		if len(req.Steps) > 0 {
			cs.Steps = req.Steps
		}
		if req.StepDuration != 0 {
			cs.StepDuration = req.StepDuration
		}
		if req.MinRequests != 0 {
			cs.MinRequests = req.MinRequests
		}
		if cs.Version == "" {
			return 0, BadRequestError{"version: required (the model has no spec.canary.version)"}
		}
		if err := api.Normalize(&m); err != nil {
			return 0, err
		}
		failed, failedWhy, err := failedVersions(ctx, c.store, name)
		if err != nil {
			return 0, err
		}
		switch {
		case slices.Contains(failed, cs.Version):
			return 0, ConflictError{fmt.Sprintf("version %q failed an earlier canary (%s); POST /v1/models/%s/canary/reset to ramp it again", cs.Version, failedWhy[cs.Version], name),
				[]api.Hint{ResetHint(name, cs.Version)}}
		case soleHolder(m.Spec.Traffic.Weights, cs.Version):
			return 0, ConflictError{fmt.Sprintf("version %q already takes all traffic", cs.Version), nil}
		}
		if _, err := newConfig(&m); err != nil {
			return 0, BadRequestError{err.Error()}
		}
		return c.start(ctx, b, rec, m, subject, manualWhy(req.Reason))
	case "pause", "resume", "promote", "abort":
		if !run.active() {
			phase := "none"
			if run != nil {
				phase = string(run.State.Phase)
			}
			return 0, ConflictError{fmt.Sprintf("model %q has no canary in progress (phase %s): %s does not apply", name, phase, action), nil}
		}
		if rec.Revision < run.Revision {
			return 0, fmt.Errorf("model %q changed during the %s: %w", name, action, store.ErrConflict)
		}
		st, tr, err := canary.Act(run.State, configOf(run, rec.Model.Spec.Canary), canary.Action(action), now, req.Reason)
		if err != nil {
			return 0, ConflictError{err.Error(), nil}
		}
		nb := b.clone()
		nb.Run.State = st
		if err := c.apply(ctx, b, nb, rec, tr, subject, true); err != nil {
			return 0, err
		}
		return nb.Run.Revision, nil
	case "reset":
		if run.active() {
			return 0, ConflictError{fmt.Sprintf("model %q: the canary of %q is in progress; abort it before a reset", name, run.Config.Canary),
				[]api.Hint{AbortHint(name, run.Config.Canary)}}
		}
		v := req.Version
		if v == "" && rec.Model.Spec.Canary != nil {
			v = rec.Model.Spec.Canary.Version
		}
		if v == "" {
			return 0, BadRequestError{"version: required (the model has no spec.canary.version)"}
		}
		failed, _, err := failedVersions(ctx, c.store, name)
		if err != nil {
			return 0, err
		}
		finished := run != nil && run.Config.Canary == v
		if !slices.Contains(failed, v) && !finished {
			return 0, ConflictError{fmt.Sprintf("version %q of model %q has no failed or finished canary to reset", v, name), nil}
		}
		reason := fmt.Sprintf("canary %s reset: it may be ramped again", v)
		if req.Reason != "" {
			reason += ": " + req.Reason
		}
		nb := b.clone()
		if finished {
			nb.Run = nil
			nb.LastRun = ""
		}
		side, err := nb.side()
		if err != nil {
			return 0, err
		}
		nrec, err := c.store.Put(ctx, rec.Model, store.Precondition{IfRevision: rec.Revision},
			store.Change{Subject: subject, Action: ActionReset, Reason: reason, ClearFailed: []string{v}, Side: side})
		if err != nil {
			return 0, c.writeFailed(name, "canary write (canary-reset)", err)
		}
		c.committed(nb)
		c.log.Info("canary reset", "model", name, "version", v, "subject", subject)
		return nrec.Revision, nil
	}
	return 0, BadRequestError{fmt.Sprintf("unknown canary action %q", action)}
}

func manualWhy(reason string) string {
	if reason == "" {
		return "started by hand"
	}
	return "started by hand: " + reason
}

// splitString formats a split for messages: "v1=80 v2=20".
func splitString(w map[string]int) string {
	parts := make([]string, 0, len(w))
	for _, v := range slices.Sorted(maps.Keys(w)) {
		parts = append(parts, fmt.Sprintf("%s=%d", v, w[v]))
	}
	return strings.Join(parts, " ")
}
