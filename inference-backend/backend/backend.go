// Package backend is Switchyard's inference backend: it serves the ONNX
// models of a model repository through ONNX Runtime and implements
// oip.Server, which the oip package puts on OIP v2 REST and gRPC.
//
// Repository layout: DIR/<model>/<version>/model.onnx (versions are folders
// named 1, 2, ...), with an optional DIR/<model>/config.yaml (ModelConfig).
// Inputs and outputs come from the ONNX model itself. Requests are validated
// against that signature before ONNX Runtime sees them; concurrent requests
// are joined into batches where the model's config turns dynamic batching
// on; a loaded version runs warm-up requests before it reports ready; load,
// reload and unload drain in-flight requests before sessions close.
package backend

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchyard-dev/switchyard/oip"
)

// Model states reported by the repository index.
const (
	StateReady       = "READY"
	StateLoading     = "LOADING"
	StateUnavailable = "UNAVAILABLE"
	StateUnloading   = "UNLOADING"
)

// Options configure a Backend.
type Options struct {
	// ModelRepository is the repository folder (required).
	ModelRepository string
	// ORTLibrary is the ONNX Runtime shared library; "" searches (see
	// FindORTLibrary).
	ORTLibrary string
	// ExecutionProvider, if set ("cpu" or "cuda"), overrides every model's
	// execution_provider.
	ExecutionProvider string
	// ConfigOverride, if set, may adjust each model's config after
	// config.yaml is read (tests and benchmarks use it).
	ConfigOverride func(model string, cfg *ModelConfig)
	// Logger receives structured logs; nil discards them.
	Logger *slog.Logger
	// Metrics; nil creates unregistered metrics.
	Metrics *Metrics
	// Version is reported in the server metadata ("dev" if empty).
	Version string
}

// Backend serves a model repository. It implements oip.Server.
type Backend struct {
	opts    Options
	log     *slog.Logger
	metrics *Metrics

	mu      sync.RWMutex
	models  map[string]*model
	ready   atomic.Bool // startup loading finished
	closing atomic.Bool
}

var _ oip.Server = (*Backend)(nil)

// model is one model name and its served versions.
type model struct {
	name   string
	loadMu sync.Mutex // serialises load and unload of this model

	// guarded by Backend.mu
	state    string
	reason   string
	versions map[string]*version
	latest   *version
}

// version is one loaded model version.
type version struct {
	model    string
	name     string
	cfg      ModelConfig
	sess     *Session
	batcher  *batcher // nil: batching off
	gate     *gate    // nil: no queue policy
	inflight sync.WaitGroup
	metrics  versionMetrics
	stats    versionStats // Triton's statistics (triton.go)
	first    atomic.Bool  // first real request seen
}

// New checks the repository, initialises ONNX Runtime and returns a Backend
// with no models loaded yet: call LoadAll (or LoadModel).
func New(opts Options) (*Backend, error) {
	if opts.ModelRepository == "" {
		return nil, fmt.Errorf("model repository: not set")
	}
	if _, err := listModels(opts.ModelRepository); err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	lib, err := InitORT(opts.ORTLibrary)
	if err != nil {
		return nil, err
	}
	log.Info("onnx runtime ready", "library", lib, "version", ORTVersion())
	m := opts.Metrics
	if m == nil {
		m = NewMetrics(nil)
	}
	if opts.Version == "" {
		opts.Version = "dev"
	}
	return &Backend{opts: opts, log: log, metrics: m, models: map[string]*model{}}, nil
}

// Metrics returns the backend's metrics.
func (b *Backend) Metrics() *Metrics { return b.metrics }

// LoadAll loads every model in the repository, then marks the server ready.
// A model that fails to load is logged and reported UNAVAILABLE with the
// reason; the others are served. It returns the names that failed.
func (b *Backend) LoadAll(ctx context.Context) (failed []string) {
	names, err := listModels(b.opts.ModelRepository)
	if err != nil {
		b.log.Error("list model repository", "err", err.Error())
	}
	for _, name := range names {
		if ctx.Err() != nil {
			break
		}
		if err := b.LoadModel(ctx, name); err != nil {
			failed = append(failed, name)
		}
	}
	b.ready.Store(true)
	return failed
}

// Close unloads every model (draining in-flight requests) and marks the
// server not ready.
func (b *Backend) Close() {
	b.closing.Store(true)
	b.ready.Store(false)
	b.mu.RLock()
	names := make([]string, 0, len(b.models))
	for n := range b.models {
		names = append(names, n)
	}
	b.mu.RUnlock()
	for _, n := range names {
		_ = b.unload(n, "server shutting down")
	}
}

// Live reports whether the server is up.
func (b *Backend) Live(context.Context) bool { return true }

// Ready reports whether startup loading has finished and the server is not
// shutting down.
func (b *Backend) Ready(context.Context) bool { return b.ready.Load() && !b.closing.Load() }

// ServerMetadata describes the server.
func (b *Backend) ServerMetadata(context.Context) oip.ServerMetadata {
	return oip.ServerMetadata{Name: "switchyard-backend", Version: b.opts.Version, Extensions: []string{"model_repository", "model_configuration", "statistics", "binary_tensor_data"}}
}

// lookup finds a model version; version "" is the latest served one.
// Callers hold b.mu.
func (b *Backend) lookup(name, ver string) (*version, error) {
	m := b.models[name]
	if m == nil {
		return nil, oip.Errorf(oip.NotFound, "unknown model %q", name)
	}
	if len(m.versions) == 0 {
		switch m.state {
		case StateLoading:
			return nil, oip.Errorf(oip.Unavailable, "model %q is loading", name)
		default:
			reason := m.reason
			if reason == "" {
				reason = "not loaded"
			}
			return nil, oip.Errorf(oip.NotFound, "model %q is not available: %s", name, reason)
		}
	}
	if ver == "" {
		return m.latest, nil
	}
	v := m.versions[ver]
	if v == nil {
		return nil, oip.Errorf(oip.NotFound, "model %q has no version %q (served versions: %s)", name, ver, strings.Join(sortedVersions(m.versions), ", "))
	}
	return v, nil
}

func sortedVersions(vs map[string]*version) []string {
	out := make([]string, 0, len(vs))
	for k := range vs {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool {
		a, _ := strconv.ParseInt(out[i], 10, 64)
		c, _ := strconv.ParseInt(out[j], 10, 64)
		return a < c
	})
	return out
}

// acquire finds a version and counts a request in flight on it; release
// with v.inflight.Done().
func (b *Backend) acquire(name, ver string) (*version, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	v, err := b.lookup(name, ver)
	if err != nil {
		return nil, err
	}
	v.inflight.Add(1)
	return v, nil
}

// ModelReady reports whether a model version is ready. An unknown model or
// version is NotFound; a known model that is loading or unloaded is false.
func (b *Backend) ModelReady(_ context.Context, name, ver string) (bool, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	m := b.models[name]
	if m == nil {
		return false, oip.Errorf(oip.NotFound, "unknown model %q", name)
	}
	if len(m.versions) == 0 {
		return false, nil
	}
	if _, err := b.lookup(name, ver); err != nil {
		return false, err
	}
	return true, nil
}

// ModelMetadata describes a served model version (its signature).
func (b *Backend) ModelMetadata(_ context.Context, name, ver string) (*oip.ModelMetadata, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	v, err := b.lookup(name, ver)
	if err != nil {
		return nil, err
	}
	return &oip.ModelMetadata{
		Name:     name,
		Versions: sortedVersions(b.models[name].versions),
		Platform: "onnxruntime_onnx",
		Inputs:   v.sess.Inputs(),
		Outputs:  v.sess.Outputs(),
	}, nil
}

// Infer runs one inference request.
func (b *Backend) Infer(ctx context.Context, req *oip.InferRequest) (*oip.InferResponse, error) {
	start := time.Now()
	v, err := b.acquire(req.ModelName, req.ModelVersion)
	if err != nil {
		return nil, err
	}
	defer v.inflight.Done()
	v.metrics.requests.Inc()
	if v.gate != nil {
		level, timeout, err := requestQueue(v.cfg.PriorityLevels, v.cfg.DefaultPriority, v.cfg.QueuePolicy, req.Parameters)
		if err == nil {
			err = v.gate.acquire(ctx, level, timeout)
		}
		if err != nil {
			v.metrics.failuresByTag.WithLabelValues(codeName(oip.CodeOf(err))).Inc()
			return nil, err
		}
		defer v.gate.release()
	}
	resp, rows, ph, err := v.infer(ctx, req)
	now := time.Now()
	d := now.Sub(start)
	v.stats.request(now, d, err == nil, rows, ph)
	if err != nil {
		v.metrics.failuresByTag.WithLabelValues(codeName(oip.CodeOf(err))).Inc()
		return nil, err
	}
	v.metrics.request.Observe(d.Seconds())
	if v.first.CompareAndSwap(false, true) {
		b.metrics.FirstRequest.WithLabelValues(v.model, v.name).Set(d.Seconds())
	}
	return resp, nil
}

func codeName(c oip.Code) string {
	switch c {
	case oip.InvalidArgument:
		return "invalid_argument"
	case oip.NotFound:
		return "not_found"
	case oip.TooLarge:
		return "too_large"
	case oip.Unavailable:
		return "unavailable"
	case oip.DeadlineExceeded:
		return "deadline_exceeded"
	case oip.FailedPrecondition:
		return "failed_precondition"
	case oip.ResourceExhausted:
		return "resource_exhausted"
	case oip.Canceled:
		return "canceled"
	}
	return "internal"
}

// infer runs one request on the version; n is its number of inferences
// (the batch rows of a batched model, else 1) and ph the parts of its time
// (Triton's statistics).
func (v *version) infer(ctx context.Context, req *oip.InferRequest) (resp *oip.InferResponse, n int, ph phases, err error) {
	v.metrics.inflight.Inc()
	defer v.metrics.inflight.Dec()
	defer func() {
		if r := recover(); r != nil {
			resp, err = nil, oip.Errorf(oip.Internal, "internal error serving model %q: %v", v.model, r)
		}
	}()
	t0 := time.Now()
	bound := make([]*oip.Tensor, len(v.sess.inputs))
	if err := v.sess.bindInputs(v.model, req.Inputs, bound); err != nil {
		return nil, 0, ph, err
	}
	for _, o := range req.Outputs {
		if _, ok := v.sess.outIndex[o.Name]; !ok {
			return nil, 0, ph, oip.Errorf(oip.InvalidArgument, "model %q has no output %q (outputs: %s)", v.model, o.Name, listSpecs(v.sess.outputs))
		}
	}
	var outs []oip.Tensor
	rows := int64(-1)
	if v.cfg.MaxBatchSize > 0 {
		rows, err = v.batchRows(bound)
		if err != nil {
			return nil, 0, ph, err
		}
	}
	n = 1
	if rows > 0 {
		n = int(rows)
	}
	ph.input = time.Since(t0)
	if v.batcher != nil && rows > 0 {
		j := v.batcher.getJob()
		j.ctx, j.inputs, j.rows = ctx, bound, rows
		v.batcher.submit(j)
		outs, err = j.outputs, j.err
		ph.queue, ph.infer = j.queued, j.compute
		v.metrics.queue.Observe(j.queued.Seconds())
		v.metrics.compute.Observe(j.compute.Seconds())
		v.batcher.putJob(j)
	} else {
		s := time.Now()
		outs, err = safeRun(v.sess.run, bound)
		ph.infer = time.Since(s)
		v.metrics.queue.Observe(0)
		v.metrics.compute.Observe(ph.infer.Seconds())
		if err == nil {
			v.metrics.batch.Observe(float64(n))
		}
	}
	if err != nil {
		return nil, n, ph, err
	}
	t1 := time.Now()
	resp = &oip.InferResponse{ModelName: v.model, ModelVersion: v.name, ID: req.ID}
	if len(req.Outputs) == 0 {
		resp.Outputs = outs
	} else {
		resp.Outputs = make([]oip.Tensor, 0, len(req.Outputs))
		for _, o := range req.Outputs {
			t := outs[v.sess.outIndex[o.Name]]
			t.Parameters = o.Parameters
			resp.Outputs = append(resp.Outputs, t)
		}
	}
	ph.output = time.Since(t1)
	if v.batcher == nil || rows <= 0 {
		v.stats.execution(n, ph)
	}
	return resp, n, ph, nil
}

// batchRows checks dimension 0 of every input against max_batch_size; all
// inputs must agree on it.
func (v *version) batchRows(bound []*oip.Tensor) (int64, error) {
	rows := int64(-1)
	for _, t := range bound {
		if len(t.Shape) == 0 {
			return 0, oip.Errorf(oip.InvalidArgument, "input %q: model %q is batched (max_batch_size %d) and needs a batch dimension; got a scalar", t.Name, v.model, v.cfg.MaxBatchSize)
		}
		if rows >= 0 && t.Shape[0] != rows {
			return 0, oip.Errorf(oip.InvalidArgument, "input %q: batch dimension %d differs from the other inputs' %d", t.Name, t.Shape[0], rows)
		}
		rows = t.Shape[0]
	}
	if rows > int64(v.cfg.MaxBatchSize) {
		return 0, oip.Errorf(oip.InvalidArgument, "batch of %d rows is more than model %q's max_batch_size %d", rows, v.model, v.cfg.MaxBatchSize)
	}
	return rows, nil
}

// LoadModel loads (or reloads) a model from the repository: it reads the
// config, loads and warms up every version the policy selects, then swaps
// them in atomically and drains and closes the versions they replace. If
// anything fails, the versions already served stay served.
func (b *Backend) LoadModel(ctx context.Context, name string) error {
	// Only names the repository holds get an entry, a metric series or a
	// lock: a flood of loads for made-up names leaves nothing behind.
	if err := b.inRepository(name); err != nil {
		b.metrics.Refused.Inc()
		return err
	}
	b.mu.Lock()
	m := b.models[name]
	if m == nil {
		m = &model{name: name, state: StateLoading}
		b.models[name] = m
	}
	b.mu.Unlock()
	m.loadMu.Lock()
	defer m.loadMu.Unlock()
	if b.closing.Load() {
		return oip.Errorf(oip.Unavailable, "server is shutting down")
	}
	b.mu.Lock()
	if len(m.versions) == 0 {
		m.state, m.reason = StateLoading, ""
	}
	b.mu.Unlock()

	fail := func(err error) error {
		b.metrics.Loads.WithLabelValues(name, "error").Inc()
		b.log.Error("model load failed", "model", name, "err", err.Error())
		b.mu.Lock()
		if len(m.versions) == 0 {
			m.state, m.reason = StateUnavailable, b.scrub(err.Error())
		}
		b.mu.Unlock()
		return oip.Errorf(oip.CodeOf(err), "%s", b.scrub(err.Error()))
	}
	src, err := readModel(b.opts.ModelRepository, name, b.override(name))
	if err != nil {
		if errors.Is(err, errNoModelFolder) {
			// Removed between the check and the read.
			b.mu.Lock()
			if len(m.versions) == 0 {
				delete(b.models, name)
			}
			b.mu.Unlock()
			return oip.Errorf(oip.NotFound, "load model %q: not in the model repository", name)
		}
		return fail(oip.Errorf(oip.InvalidArgument, "load model %q: %v", name, err))
	}
	loaded := map[string]*version{}
	var latest *version
	for _, ver := range src.Versions {
		if err := ctx.Err(); err != nil {
			closeVersions(loaded)
			return fail(oip.Errorf(oip.Unavailable, "load model %q: %v", name, err))
		}
		v, err := b.loadVersion(src, ver)
		if err != nil {
			closeVersions(loaded)
			return fail(oip.Errorf(oip.InvalidArgument, "load model %q version %d: %v", name, ver, err))
		}
		loaded[v.name] = v
		latest = v
	}

	b.mu.Lock()
	old := m.versions
	m.versions, m.latest = loaded, latest
	m.state, m.reason = StateReady, ""
	b.mu.Unlock()
	for _, v := range loaded {
		b.metrics.Ready.WithLabelValues(name, v.name).Set(1)
		b.metrics.Provider.DeletePartialMatch(prometheus.Labels{"model": name, "version": v.name})
		b.metrics.Provider.WithLabelValues(name, v.name, v.cfg.ExecutionProvider, v.sess.Provider()).Set(1)
	}
	b.metrics.Loads.WithLabelValues(name, "ok").Inc()
	b.log.Info("model ready", "model", name, "versions", sortedVersions(loaded))
	b.drain(old, loaded)
	return nil
}

// inRepository checks that name is a model folder of the repository; the
// error names no server path.
func (b *Backend) inRepository(name string) error {
	if !validModelName(name) {
		return oip.Errorf(oip.InvalidArgument, "load model %q: invalid model name (a folder name of the model repository: no /, \\, or leading dot)", name)
	}
	st, err := os.Stat(filepath.Join(b.opts.ModelRepository, name))
	if err != nil || !st.IsDir() {
		return oip.Errorf(oip.NotFound, "load model %q: not in the model repository", name)
	}
	return nil
}

// scrub replaces the repository's absolute path in a message meant for a
// caller with "<repository>": answers and the index name no server paths.
func (b *Backend) scrub(msg string) string {
	repo := filepath.Clean(b.opts.ModelRepository)
	if abs, err := filepath.Abs(repo); err == nil && abs != repo {
		msg = strings.ReplaceAll(msg, abs, "<repository>")
	}
	if repo != "." && repo != "" {
		msg = strings.ReplaceAll(msg, repo, "<repository>")
	}
	return msg
}

// override combines the options' provider and config override for a model.
func (b *Backend) override(name string) func(*ModelConfig) {
	if b.opts.ExecutionProvider == "" && b.opts.ConfigOverride == nil {
		return nil
	}
	return func(c *ModelConfig) {
		if b.opts.ExecutionProvider != "" {
			c.ExecutionProvider = b.opts.ExecutionProvider
		}
		if b.opts.ConfigOverride != nil {
			b.opts.ConfigOverride(name, c)
		}
	}
}

// drain waits for requests in flight on the replaced versions, then closes
// them. Versions also present in keep (by name) stay marked ready.
func (b *Backend) drain(old, keep map[string]*version) {
	for name, v := range old {
		v.inflight.Wait()
		v.close()
		if keep[name] == nil {
			b.metrics.Ready.WithLabelValues(v.model, name).Set(0)
			b.metrics.Provider.DeletePartialMatch(prometheus.Labels{"model": v.model, "version": name})
		}
		b.log.Info("model version closed", "model", v.model, "version", name)
	}
}

func closeVersions(vs map[string]*version) {
	for _, v := range vs {
		v.close()
	}
}

func (v *version) close() {
	if v.batcher != nil {
		v.batcher.stop()
		v.batcher = nil
	}
	v.sess.Close()
}

// loadVersion creates the session, checks batching fits the signature,
// starts the batcher and runs the warm-up requests.
func (b *Backend) loadVersion(src *modelSource, ver int64) (*version, error) {
	start := time.Now()
	cfg := src.Config
	vname := strconv.FormatInt(ver, 10)
	sess, err := NewSession(src.path(ver), SessionOptions{
		IntraOpThreads: cfg.IntraOpThreads,
		InterOpThreads: cfg.InterOpThreads,
		NoSpinning:     cfg.AllowSpinning != nil && !*cfg.AllowSpinning,
		Provider:       cfg.ExecutionProvider,
		Logger:         b.log.With("model", src.Name, "version", vname),
	})
	if err != nil {
		return nil, err
	}
	loadTime := time.Since(start)
	v := &version{model: src.Name, name: vname, cfg: cfg, sess: sess, metrics: b.metrics.forVersion(src.Name, vname)}
	if cfg.MaxBatchSize > 0 {
		if err := checkBatchable(sess); err != nil {
			sess.Close()
			return nil, fmt.Errorf("max_batch_size %d: %w", cfg.MaxBatchSize, err)
		}
	}
	if cfg.batching() {
		v.batcher = newBatcher(cfg.MaxBatchSize, cfg.InstanceCount, cfg.DynamicBatching.MaxQueueDelay, cfg.DynamicBatching.PreferredBatchSizes,
			sess.run, func(rows int, compute time.Duration, ok bool) {
				v.metrics.batch.Observe(float64(rows))
				if ok {
					v.stats.execution(rows, phases{input: -1, infer: compute, output: -1})
				}
			})
	}
	if cfg.queued() {
		v.gate = newGate(src.Name, vname, cfg.slots(), cfg.PriorityLevels, queueSize(cfg.QueuePolicy),
			func(reason string) { v.metrics.queueRejects.WithLabelValues(reason).Inc() }, v.metrics.queueDepth.Add)
		v.metrics.queueRejects.WithLabelValues("queue_full")
		v.metrics.queueRejects.WithLabelValues("timeout")
	}
	ws := time.Now()
	if err := v.warmup(cfg.Warmup); err != nil {
		b.log.Warn("warm-up request failed; the model is served anyway (it may need real inputs)",
			"model", src.Name, "version", vname, "err", err.Error())
	}
	warm := time.Since(ws)
	cold := time.Since(start)
	b.metrics.LoadSeconds.WithLabelValues(src.Name, vname).Set(loadTime.Seconds())
	b.metrics.WarmupSecs.WithLabelValues(src.Name, vname).Set(warm.Seconds())
	b.metrics.ColdStart.WithLabelValues(src.Name, vname).Set(cold.Seconds())
	b.log.Info("model version loaded", "model", src.Name, "version", vname, "provider", sess.Provider(),
		"load_ms", ms(loadTime), "warmup_ms", ms(warm), "cold_start_ms", ms(cold),
		"max_batch_size", cfg.MaxBatchSize, "dynamic_batching", cfg.batching())
	return v, nil
}

func queueSize(p *QueuePolicy) int {
	if p == nil {
		return 0
	}
	return p.MaxQueueSize
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// checkBatchable: batching joins along dimension 0, so every input and
// output needs a dynamic dimension 0 and fixed-width data.
func checkBatchable(s *Session) error {
	for _, list := range [][]tensorSpec{s.inputs, s.outputs} {
		for _, t := range list {
			if t.Datatype == oip.BYTES {
				return fmt.Errorf("%s is BYTES, which cannot be batched", t.Name)
			}
			if t.RankKnown && (len(t.Shape) == 0 || t.Shape[0] != -1) {
				return fmt.Errorf("%s has shape %v; batching needs a dynamic first dimension (-1)", t.Name, t.Shape)
			}
		}
	}
	return nil
}

// warmup runs n synthetic requests: zeros (empty strings for BYTES) with
// every dynamic dimension 1, straight on the session (not counted in the
// request metrics).
func (v *version) warmup(n int) error {
	if n == 0 {
		return nil
	}
	inputs := make([]oip.Tensor, len(v.sess.inputs))
	for i, spec := range v.sess.inputs {
		shape := []int64{1}
		if spec.RankKnown {
			shape = make([]int64, len(spec.Shape))
			for d, x := range spec.Shape {
				shape[d] = max(x, 1)
			}
		}
		count, err := oip.NumElements(shape)
		if err != nil {
			return err
		}
		var raw []byte
		if spec.Datatype == oip.BYTES {
			for range count {
				raw = oip.AppendBytesElement(raw, nil)
			}
		} else {
			raw = make([]byte, count*int64(spec.Datatype.Size()))
		}
		inputs[i] = oip.Tensor{Name: spec.Name, Datatype: spec.Datatype, Shape: shape, Raw: raw}
	}
	bound := make([]*oip.Tensor, len(inputs))
	if err := v.sess.bindInputs(v.model, inputs, bound); err != nil {
		return err
	}
	for range n {
		if _, err := safeRun(v.sess.run, bound); err != nil {
			return err
		}
	}
	return nil
}

// UnloadModel stops serving a model: new requests get NotFound at once,
// requests in flight finish, then its sessions close.
func (b *Backend) UnloadModel(_ context.Context, name string) error {
	return b.unload(name, "unloaded")
}

func (b *Backend) unload(name, reason string) error {
	b.mu.RLock()
	m := b.models[name]
	b.mu.RUnlock()
	if m == nil {
		return oip.Errorf(oip.NotFound, "unknown model %q", name)
	}
	m.loadMu.Lock()
	defer m.loadMu.Unlock()
	b.mu.Lock()
	old := m.versions
	m.versions, m.latest = nil, nil
	m.state, m.reason = StateUnavailable, reason
	b.mu.Unlock()
	b.drain(old, nil)
	b.log.Info("model unloaded", "model", name, "reason", reason)
	return nil
}

// RepositoryIndex lists the repository's models: one entry per served
// version, and one entry for each model folder that is not served (with its
// state and reason).
func (b *Backend) RepositoryIndex(_ context.Context, readyOnly bool) ([]oip.RepositoryModel, error) {
	names, err := listModels(b.opts.ModelRepository)
	if err != nil {
		b.log.Error("list model repository", "err", err.Error())
		return nil, oip.Errorf(oip.Internal, "the model repository cannot be listed (see the backend's log)")
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	seen := map[string]bool{}
	for n := range b.models {
		seen[n] = true
	}
	for _, n := range names {
		seen[n] = true
	}
	all := make([]string, 0, len(seen))
	for n := range seen {
		all = append(all, n)
	}
	sort.Strings(all)
	var out []oip.RepositoryModel
	for _, n := range all {
		m := b.models[n]
		switch {
		case m != nil && len(m.versions) > 0:
			for _, v := range sortedVersions(m.versions) {
				out = append(out, oip.RepositoryModel{Name: n, Version: v, State: StateReady})
			}
		case readyOnly:
		case m != nil:
			out = append(out, oip.RepositoryModel{Name: n, State: m.state, Reason: m.reason})
		default:
			out = append(out, oip.RepositoryModel{Name: n, State: StateUnavailable, Reason: "not loaded"})
		}
	}
	return out, nil
}
