// Package canaryctl is the canary controller: each tick it judges every
// model's running canary against its baseline (the pure canary.Tick on a
// MetricSource's figures: the proxies' reports, controlplane/stats, or
// Prometheus, PromSource) and writes the weight changes through the store,
// so the xDS snapshot follows. It also guards the REST API's writes over a
// running canary (guard.go), runs the manual actions (actions.go), and
// picks what a rollback restores (rollback.go).
package canaryctl

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/canary"
	"github.com/switchyard-dev/switchyard/controlplane/stats"
	"github.com/switchyard-dev/switchyard/controlplane/store"
)

// Subject is the audit subject of the controller's own decisions.
const Subject = "canary-controller"

// MetricSource gives a model version's figures over the interval
// (from, to]: the proxies' own reports (the default, stats.Service) or a
// Prometheus server (PromSource).
type MetricSource interface {
	Stats(ctx context.Context, model, version string, from, to time.Time) (canary.Stats, error)
}

var (
	_ MetricSource = (*stats.Service)(nil)
	_ MetricSource = (*PromSource)(nil)
)

// Options configure the canary controller (zero values: defaults).
type Options struct {
	// Store is the desired state (required).
	Store store.Store
	// Stats is the stats service the proxies report to (required): the
	// status names the reporting proxies, and it is the default Source.
	Stats *stats.Service
	// Source of the stats the analysis reads (default: Stats); e.g. a
	// PromSource.
	Source MetricSource
	// Interval between ticks (default 1s).
	Interval time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// LegacyStatePath is where an older control plane kept the canary's
	// state in a file of its own (<state file>.canary; "": none): it is
	// imported into the store once.
	LegacyStatePath string
	// Logger (nil: discard) and Registerer (nil: metrics not registered).
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Controller runs every model's canary (spec.canary): each tick it
// judges the canary against the baseline over the step's window (pure
// canary.Tick on the source's stats), and writes weight changes through the
// store — a new revision with Change{Subject: "canary-controller", Action:
// canary-start | canary-promote | canary-promoted | canary-rollback, Reason:
// the verdict} — so the xDS snapshot follows and the audit log records it.
//
// Its bookkeeping (the run, per model) is side state of the model in the
// store, written in the same transaction as the revision of each
// transition; a rollback's failed mark (store.Failed) is written in that
// transaction too. A write that fails (a full disk, a read-only file)
// fails the transition: the state in memory stays what is durable, the
// canary holds and retries at the next tick, the status says why
// (stateError), the manual action's request gets a 5xx naming the cause,
// and switchyard_controlplane_store_write_errors_total counts it (alert
// SwitchyardStateWriteFailing).
//
// A rollback restores the split from before the canary with the canary's
// share given to the baseline, and marks the version failed, so it is not
// ramped again until reset.
//
// Lifecycle of a model's canary: when spec.canary.version names a version
// that does not already take all traffic, has no finished run and is not
// marked failed, the controller starts it (or POST .../canary/start does,
// with overrides). While it runs, the API refuses other weight changes
// (409 naming the action that resolves it) unless forced, which aborts
// the canary first (guard.go); POST .../rollback aborts it first.
// Removing or renaming spec.canary ends the run and clears its status;
// a finished run is cleared the same way.
type Controller struct {
	store    store.Store
	stats    *stats.Service
	source   MetricSource
	now      func() time.Time
	interval time.Duration
	log      *slog.Logger
	metrics  *canaryMetrics

	mu       sync.Mutex // serialises ticks, manual actions and the API's guarded writes
	books    map[string]*canaryBook
	writeErr map[string]stateWriteError // the newest failed state write per model, until one succeeds
}

// stateWriteError is a state write that failed.
type stateWriteError struct {
	At  time.Time
	Err string
}

// New creates the canary controller: it imports an older control plane's
// canary state (LegacyStatePath) and loads every model's from the store.
// Run ticks it.
func New(ctx context.Context, opts Options) (*Controller, error) {
	if opts.Store == nil || opts.Stats == nil {
		return nil, errors.New("canary controller: a store and a stats service are required")
	}
	if opts.Interval <= 0 {
		opts.Interval = time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	st := opts.Store
	if opts.LegacyStatePath != "" {
		if err := importLegacyCanaryState(ctx, st, opts.LegacyStatePath, log); err != nil {
			return nil, err
		}
	}
	books, err := loadBooks(ctx, st)
	if err != nil {
		return nil, err
	}
	c := &Controller{
		store: st, stats: opts.Stats, source: opts.Source, now: opts.Now,
		interval: opts.Interval, log: log, books: books, writeErr: map[string]stateWriteError{},
	}
	if c.source == nil {
		c.source = c.stats
	}
	c.metrics = newCanaryMetrics(opts.Registerer)
	for _, b := range books {
		c.metrics.observe(b)
	}
	return c, nil
}

// Stats is the stats service the proxies report to.
func (c *Controller) Stats() *stats.Service { return c.stats }

// Now is the controller's clock (Options.Now).
func (c *Controller) Now() time.Time { return c.now() }

// Run ticks every Interval until ctx is done.
func (c *Controller) Run(ctx context.Context) {
	t := time.NewTicker(c.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			c.TickOnce(ctx)
		}
	}
}

// TickOnce runs one round over every model (the ticker calls it; tests may
// too).
func (c *Controller) TickOnce(ctx context.Context) {
	recs, _, err := c.store.List(ctx)
	if err != nil {
		if ctx.Err() == nil {
			c.log.Error("canary tick: list models", "err", err)
		}
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	seen := map[string]bool{}
	for _, rec := range recs {
		seen[rec.Model.Metadata.Name] = true
		if err := c.reconcile(ctx, rec); err != nil && ctx.Err() == nil {
			c.log.Warn("canary tick", "model", rec.Model.Metadata.Name, "err", err)
		}
	}
	for name := range c.books {
		if seen[name] {
			continue
		}
		// The model was deleted: its canary ends with it.
		if err := c.store.UpdateSide(ctx, name, store.Change{Subject: Subject, Side: &store.Side{Kind: sideCanary}}); err != nil {
			c.writeFailed(name, "canary state write (model deleted)", err)
			continue
		}
		delete(c.books, name)
		delete(c.writeErr, name)
		c.metrics.forget(name)
	}
}

func (c *Controller) book(name string) *canaryBook {
	b := c.books[name]
	if b == nil {
		b = &canaryBook{Model: name}
		c.books[name] = b
	}
	return b
}

// commit persists nb, the model's next book, alone (no revision) with
// marks, and puts it in place only once that is durable. c.mu is held.
func (c *Controller) commit(ctx context.Context, nb *canaryBook, marks map[string]string) error {
	side, err := nb.side()
	if err != nil {
		return err
	}
	if err := c.store.UpdateSide(ctx, nb.Model, store.Change{Subject: Subject, Side: side, MarkFailed: marks}); err != nil {
		return c.writeFailed(nb.Model, "canary state write", err)
	}
	c.committed(nb)
	return nil
}

// committed puts a durable book in place. c.mu is held.
func (c *Controller) committed(nb *canaryBook) {
	c.books[nb.Model] = nb
	delete(c.writeErr, nb.Model)
	c.metrics.observe(nb)
}

// writeFailed records a failed state write of model (not a lost race: a
// store failure) for the status and the log, and returns it wrapped in
// what.
func (c *Controller) writeFailed(model, what string, err error) error {
	err = fmt.Errorf("%s: %w", what, err)
	if store.Failure(err) {
		c.writeErr[model] = stateWriteError{At: c.now(), Err: err.Error()}
		c.log.Error("canary: state write failed; the canary holds until it can persist", "model", model, "err", err)
	}
	return err
}

// configOf is the run's configuration with the current spec's thresholds
// (operators may retune gates mid-ramp; versions and steps stay).
func configOf(run *canaryRun, spec *api.Canary) canary.Config {
	cfg := run.Config
	if spec != nil {
		cfg.StepDuration = spec.StepDuration.D()
		cfg.Gates.MinRequests = spec.MinRequests
		cfg.Gates.MaxErrorRate = spec.MaxErrorRate
		cfg.Gates.MaxP99Ratio = spec.MaxP99Ratio
		cfg.Gates.MaxNaNRate = spec.MaxNaNRate
		cfg.Gates.MaxClientErrorExcess = spec.MaxClientErrorExcess
		cfg.FailuresBeforeRollback = spec.ConsecutiveFailures
	}
	return cfg.Defaults()
}

// newConfig builds a canary's configuration from spec.canary: baseline is
// the version with the largest weight other than the canary.
func newConfig(m *api.Model) (canary.Config, error) {
	spec := m.Spec.Canary
	if spec == nil || spec.Version == "" {
		return canary.Config{}, errors.New("no canary version: set spec.canary.version or give version")
	}
	if _, ok := m.Version(spec.Version); !ok {
		return canary.Config{}, fmt.Errorf("canary version %q is not a version of model %q (versions: %s)", spec.Version, m.Metadata.Name, strings.Join(m.VersionNames(), ", "))
	}
	baseline, bw := "", 0
	names := slices.Sorted(maps.Keys(m.Spec.Traffic.Weights))
	for _, v := range names {
		if w := m.Spec.Traffic.Weights[v]; v != spec.Version && w > bw {
			baseline, bw = v, w
		}
	}
	if baseline == "" {
		return canary.Config{}, fmt.Errorf("no baseline: no version other than %q takes traffic (weights %v)", spec.Version, m.Spec.Traffic.Weights)
	}
	cfg := canary.Config{Baseline: baseline, Canary: spec.Version, Steps: slices.Clone(spec.Steps)}
	run := canaryRun{Config: cfg}
	cfg = configOf(&run, spec)
	return cfg, cfg.Validate()
}

func soleHolder(weights map[string]int, version string) bool {
	if weights[version] <= 0 {
		return false
	}
	for v, w := range weights {
		if v != version && w > 0 {
			return false
		}
	}
	return true
}

// SameSplit compares two splits as shares of traffic ({v1: 4, v2: 1} is
// {v1: 80, v2: 20}).
func SameSplit(a, b map[string]int) bool {
	ta, tb := 0, 0
	for _, w := range a {
		ta += w
	}
	for _, w := range b {
		tb += w
	}
	if ta == 0 || tb == 0 {
		return ta == tb
	}
	for _, m := range []map[string]int{a, b} {
		for v := range m {
			if a[v]*tb != b[v]*ta {
				return false
			}
		}
	}
	return true
}

// reconcile advances one model's canary. c.mu is held.
func (c *Controller) reconcile(ctx context.Context, rec api.Record) error {
	name := rec.Model.Metadata.Name
	b := c.book(name)
	spec := rec.Model.Spec.Canary
	now := c.now()
	if run := b.Run; run.active() {
		if rec.Revision < run.Revision {
			return nil // read before our own newer write
		}
		switch {
		case spec == nil || spec.Version != run.Config.Canary:
			why := "spec.canary removed"
			if spec != nil {
				why = fmt.Sprintf("spec.canary.version changed to %q", spec.Version)
			}
			nb := b.clone()
			nb.Run = nil
			nb.LastRun = fmt.Sprintf("the canary of %s ended at step %d/%d: %s by %s (revision %d)", run.Config.Canary, run.State.StepNumber(), len(run.Config.Steps), why, subjectOf(rec), rec.Revision)
			if err := c.commit(ctx, nb, nil); err != nil {
				return err
			}
			c.log.Info("canary ended", "model", name, "canary", run.Config.Canary, "why", nb.LastRun)
			return nil
		case rec.Revision != run.Revision && !SameSplit(rec.Model.Spec.Traffic.Weights, run.State.Weights):
			// Written past the API's guard (another client of the store):
			// the canary cannot go on from a split it did not set.
			reason := fmt.Sprintf("weights changed outside the canary by %s (%s, revision %d)", subjectOf(rec), rec.Action, rec.Revision)
			st, _, err := canary.Act(run.State, configOf(run, spec), canary.Abort, now, reason)
			if err != nil {
				return err
			}
			st.Weights = maps.Clone(rec.Model.Spec.Traffic.Weights) // theirs stand
			nb := b.clone()
			nb.Run.State, nb.Run.Revision = st, rec.Revision
			if err := c.commit(ctx, nb, map[string]string{run.Config.Canary: reason}); err != nil {
				return err
			}
			c.metrics.decision(name, canary.Rollback)
			c.log.Warn("canary aborted", "model", name, "canary", run.Config.Canary, "reason", reason)
			return nil
		default:
			run.Revision = rec.Revision // ours, or a change that left the split alone
			if run.State.Phase != canary.Progressing {
				return nil
			}
			cfg := configOf(run, spec)
			base, can, err := c.window(ctx, name, cfg, run.State.StepStarted, now)
			if err != nil {
				return err
			}
			st, tr := canary.Tick(run.State, cfg, base, can, now)
			nb := b.clone()
			nb.Run.State = st
			return c.apply(ctx, b, nb, rec, tr, Subject, false)
		}
	}
	if run := b.Run; run != nil && (spec == nil || spec.Version != run.Config.Canary) {
		// A finished run whose version spec.canary no longer names: clear
		// it, so the status and the phase metric (and its alert) say none.
		nb := b.clone()
		nb.Run = nil
		nb.LastRun = fmt.Sprintf("the canary of %s was %s at step %d/%d", run.Config.Canary, run.State.Phase, run.State.StepNumber(), len(run.Config.Steps))
		if err := c.commit(ctx, nb, nil); err != nil {
			return err
		}
		b = nb
	}
	if spec == nil || spec.Version == "" {
		return nil
	}
	v := spec.Version
	switch {
	case b.Run != nil && b.Run.Config.Canary == v:
		return nil // this version's canary finished; start or reset to run again
	case soleHolder(rec.Model.Spec.Traffic.Weights, v):
		return nil
	}
	failed, _, err := failedVersions(ctx, c.store, name)
	if err != nil || slices.Contains(failed, v) {
		return err
	}
	_, err = c.start(ctx, b, rec, rec.Model.Clone(), Subject, "spec.canary.version is "+v)
	return err
}

// window reads both versions' figures over (max(stepStart, now-retention), now].
func (c *Controller) window(ctx context.Context, model string, cfg canary.Config, stepStart, now time.Time) (base, can canary.Stats, err error) {
	from := stepStart
	if base, err = c.source.Stats(ctx, model, cfg.Baseline, from, now); err != nil {
		return base, can, fmt.Errorf("stats of %s/%s: %w", model, cfg.Baseline, err)
	}
	if can, err = c.source.Stats(ctx, model, cfg.Canary, from, now); err != nil {
		return base, can, fmt.Errorf("stats of %s/%s: %w", model, cfg.Canary, err)
	}
	return base, can, nil
}

func subjectOf(rec api.Record) string {
	if rec.Subject == "" {
		return "unknown"
	}
	return rec.Subject
}

// start begins a canary of m (the model to write: rec's document, maybe
// with spec.canary changed by the caller). c.mu is held.
func (c *Controller) start(ctx context.Context, b *canaryBook, rec api.Record, m api.Model, subject, why string) (int64, error) {
	cfg, err := newConfig(&m)
	if err != nil {
		return 0, err
	}
	failed, _, err := failedVersions(ctx, c.store, m.Metadata.Name)
	if err != nil {
		return 0, err
	}
	now := c.now()
	st, tr, err := canary.Start(cfg, m.Spec.Traffic.Weights, failed, now)
	if err != nil {
		return 0, err
	}
	if why != "" {
		st.History[len(st.History)-1].Reason += " (" + why + ")"
	}
	st.History[len(st.History)-1].Manual = subject != Subject
	nb := b.clone()
	nb.Run = &canaryRun{Config: cfg, State: st, Revision: rec.Revision}
	nb.LastRun = ""
	if err := c.apply(ctx, b, nb, storeRecordWith(rec, m), tr, subject, subject != Subject); err != nil {
		return 0, err
	}
	c.log.Info("canary started", "model", m.Metadata.Name, "baseline", cfg.Baseline, "canary", cfg.Canary, "steps", cfg.Steps, "subject", subject)
	return nb.Run.Revision, nil
}

func storeRecordWith(rec api.Record, m api.Model) api.Record {
	rec.Model = m
	return rec
}

// actionOf names the revision of a transition by the state's newest event.
func actionOf(st *canary.State) string {
	if n := len(st.History); n > 0 {
		e := st.History[n-1]
		switch e.Kind {
		case "start":
			return ActionStart
		case "promote":
			return ActionPromote
		case "promoted":
			return ActionPromoted
		case "rollback":
			if e.Manual {
				return ActionAbort
			}
			return ActionRollback
		case "pause":
			return ActionPause
		case "resume":
			return ActionResume
		}
	}
	return "canary"
}

// apply makes a transition from b (the model's book now) to nb (with the
// new run state) durable, then puts nb in place. When the weights change
// (or always, for a manual action, so the audit log names who did it) it
// writes a new revision of rec's document with the new weights, and nb —
// and, for a rollback, the version's failed mark — in the same
// transaction; otherwise nb alone when something durable changed (an
// event, the failure count, the phase). If the write fails nothing
// changes here (the next tick tries again) and the error says why. A tick
// that changes nothing durable keeps its verdict in memory only (the
// status's gates). c.mu is held.
func (c *Controller) apply(ctx context.Context, b, nb *canaryBook, rec api.Record, tr canary.Transition, subject string, manual bool) error {
	run := nb.Run
	st := &run.State
	name := rec.Model.Metadata.Name
	var last canary.Event
	if n := len(st.History); n > 0 {
		last = st.History[n-1]
	}
	var marks map[string]string
	if st.Phase == canary.RolledBack && tr.Decision == canary.Rollback {
		marks = map[string]string{run.Config.Canary: last.Reason}
	}
	var prev *canary.State
	if b.Run != nil {
		prev = &b.Run.State
	}
	switch {
	case tr.Changed || manual:
		m := rec.Model.Clone()
		if tr.Changed {
			m.Spec.Traffic.Weights = maps.Clone(tr.Weights)
		}
		reason := tr.Reason
		if last.Reason != "" {
			reason = last.Reason
		}
		reason = fmt.Sprintf("canary %s (%s -> %s, step %d/%d): %s", run.Config.Canary, run.Config.Baseline, run.Config.Canary, st.StepNumber(), len(run.Config.Steps), reason)
		if err := api.Normalize(&m); err != nil {
			return fmt.Errorf("canary write: %w", err)
		}
		side, err := nb.side()
		if err != nil {
			return err
		}
		nrec, err := c.store.Put(ctx, m, store.Precondition{IfRevision: rec.Revision},
			store.Change{Subject: subject, Action: actionOf(st), Reason: reason, MarkFailed: marks, Side: side})
		if err != nil {
			return c.writeFailed(name, fmt.Sprintf("canary write (%s)", actionOf(st)), err)
		}
		run.Revision = nrec.Revision
		c.committed(nb)
		c.log.Info("canary decision applied", "model", name, "action", actionOf(st), "weights", m.Spec.Traffic.Weights, "revision", nrec.Revision, "reason", reason)
	case prev == nil || len(st.History) != len(prev.History) || st.ConsecutiveFailures != prev.ConsecutiveFailures || st.Phase != prev.Phase:
		if err := c.commit(ctx, nb, marks); err != nil {
			return err
		}
	default:
		c.books[name] = nb
		c.metrics.observe(nb)
	}
	if tr.Decision != "" {
		c.metrics.decision(name, tr.Decision)
	}
	if marks != nil {
		c.log.Warn("canary rolled back", "model", name, "canary", run.Config.Canary, "weights", st.Weights, "reason", last.Reason)
	}
	return nil
}

// canaryMetrics export each model's canary state.
type canaryMetrics struct {
	phase     *prometheus.GaugeVec
	step      *prometheus.GaugeVec
	weight    *prometheus.GaugeVec
	decisions *prometheus.CounterVec
	last      *prometheus.GaugeVec
}

var canaryPhases = []string{"none", string(canary.Progressing), string(canary.Paused), string(canary.Promoted), string(canary.RolledBack)}

func newCanaryMetrics(reg prometheus.Registerer) *canaryMetrics {
	m := &canaryMetrics{
		phase: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "switchyard_canary_phase",
			Help: "1 for the phase each model's canary is in (none, progressing, paused, promoted, rolled_back), else 0.",
		}, []string{"model", "phase"}),
		step: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "switchyard_canary_step",
			Help: "The canary's step, from 1 (0: no canary).",
		}, []string{"model"}),
		weight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "switchyard_canary_weight_percent",
			Help: "Share of traffic the canary version gets now, in percent.",
		}, []string{"model"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_canary_decisions_total",
			Help: "Canary analyses and actions by decision (promote, hold, rollback).",
		}, []string{"model", "decision"}),
		last: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "switchyard_canary_last_decision",
			Help: "1 for the decision of each model's newest canary analysis (promote, hold, rollback), else 0.",
		}, []string{"model", "decision"}),
	}
	if reg != nil {
		reg.MustRegister(m.phase, m.step, m.weight, m.decisions, m.last)
	}
	return m
}

func (m *canaryMetrics) observe(b *canaryBook) {
	phase, step, weight := "none", 0, 0
	if r := b.Run; r != nil && r.Ended == "" {
		phase, step = string(r.State.Phase), r.State.StepNumber()
		total := 0
		for _, w := range r.State.Weights {
			total += w
		}
		if total > 0 {
			weight = 100 * r.State.Weights[r.Config.Canary] / total
		}
	}
	for _, p := range canaryPhases {
		v := 0.0
		if p == phase {
			v = 1
		}
		m.phase.WithLabelValues(b.Model, p).Set(v)
	}
	m.step.WithLabelValues(b.Model).Set(float64(step))
	m.weight.WithLabelValues(b.Model).Set(float64(weight))
}

// forget drops a deleted model's series.
func (m *canaryMetrics) forget(model string) {
	for _, v := range []interface {
		DeletePartialMatch(prometheus.Labels) int
	}{m.phase, m.step, m.weight, m.decisions, m.last} {
		v.DeletePartialMatch(prometheus.Labels{"model": model})
	}
}

func (m *canaryMetrics) decision(model string, d canary.Decision) {
	m.decisions.WithLabelValues(model, string(d)).Inc()
	for _, x := range []canary.Decision{canary.Promote, canary.Hold, canary.Rollback} {
		v := 0.0
		if x == d {
			v = 1
		}
		m.last.WithLabelValues(model, string(x)).Set(v)
	}
}

// sortedVersions lists a split's versions by name.
func sortedVersions(w map[string]int) []string {
	out := make([]string, 0, len(w))
	for v := range w {
		out = append(out, v)
	}
	sort.Strings(out)
	return out
}
