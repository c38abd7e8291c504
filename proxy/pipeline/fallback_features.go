package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/fallback"
	"github.com/switchyard-dev/switchyard/shadow"
	"github.com/switchyard-dev/switchyard/shadow/agent"
)

// FeaturesConfig configures the prediction cache, fallback and shadow
// policies (Config.Features). Zero values take defaults. What each model
// gets comes from its desired state (spec.cache, spec.fallback,
// spec.shadow); a model without those sections pays nothing: its route
// has no policies and the pipeline only calls its version.
type FeaturesConfig struct {
	// ShadowDir holds the shadow record files, one JSON-lines file per
	// model (<model>.jsonl, rotated to .1, .2, ...). Default: <StateDir>/shadow
	// when the proxy has a StateDir; with neither, no files are written
	// (the in-memory ring still serves the admin report).
	ShadowDir string
	// ShadowRecordMaxBytes and ShadowRecordKeep bound each record file
	// (default 64 MiB, 5 rotated files).
	ShadowRecordMaxBytes int64
	ShadowRecordKeep     int
	// ShadowRecordAgreements is the share of agreeing pairs written to the
	// record file, 0..1 (default 0.01; disagreements are always written).
	ShadowRecordAgreements float64
	// ShadowRingSize is how many recent comparisons each model keeps in
	// memory for the admin report (default 4096).
	ShadowRingSize int
	// ShadowProcess is where mirrored requests are called and compared:
	// ShadowAgent (the default, also for "") in a child process at
	// SCHED_IDLE priority (ShadowAgentPriority) that the proxy starts with the first route that
	// has a shadow policy and restarts when it dies (package shadow/agent;
	// if it cannot be started, inline), or ShadowInline in the proxy's
	// process.
	ShadowProcess string
	// ShadowAgentCommand starts the agent (default: this executable with
	// the argument "shadow-agent"; any binary linking this package serves
	// as the agent, see shadowagent.go).
	ShadowAgentCommand []string
	// ShadowAgentBuffer bounds the bytes of mirrors waiting for the
	// hand-off to the agent (default 8 MiB); ShadowAgentRestartBackoff is
	// the first restart delay, doubling up to 5 s (default 100ms).
	ShadowAgentBuffer         int
	ShadowAgentRestartBackoff time.Duration
	// ShadowAgentPriority is the agent's CPU priority once started:
	// agent.PriorityIdle (the default, also for ""; SCHED_IDLE),
	// agent.PriorityLow (nice 19) or agent.PriorityNormal. The agent
	// answers its start-up check at the proxy's priority either way.
	ShadowAgentPriority string
}

// newFeatures builds the proxy's policies component: it compiles each
// route's cache, fallback and shadow policies (compile, in the pipeline's
// order: pipeline.go), keeps their long-lived pieces across
// configurations, registers their metrics on the proxy's registry, serves
// /shadow/report, /shadow/records and /fallback on the admin server, and is
// closed with the proxy.
func newFeatures(cfg FeaturesConfig) *features {
	if cfg.ShadowRecordAgreements == 0 {
		cfg.ShadowRecordAgreements = 0.01
	}
	if cfg.ShadowRingSize <= 0 {
		cfg.ShadowRingSize = 4096
	}
	if cfg.ShadowRecordKeep == 0 {
		cfg.ShadowRecordKeep = 5
	}
	if cfg.ShadowAgentBuffer <= 0 {
		cfg.ShadowAgentBuffer = 8 << 20
	}
	if cfg.ShadowAgentRestartBackoff <= 0 {
		cfg.ShadowAgentRestartBackoff = 100 * time.Millisecond
	}
	return &features{
		cfg:       cfg,
		caches:    map[string]*fallback.Cache{},
		lastGood:  map[string]*fallback.Cache{},
		coalesce:  map[string]*fallback.Coalescer[*sharedAnswer]{},
		mirrors:   map[string]*mirrorState{},
		sinks:     map[string]*recordSink{},
		liveModel: map[string]*routePolicies{},
	}
}

// features is the extension. Long-lived pieces (caches, mirrors, record
// files) are kept by model and configuration signature, so a new
// configuration that does not change a model's policy keeps its warm cache
// and its mirror; pieces no live route uses are closed after each apply.
type features struct {
	cfg       FeaturesConfig
	p         *Pipeline
	log       *slog.Logger
	fbm       *fallback.Metrics
	shm       *shadow.Metrics
	shadowDir string

	mu        sync.Mutex
	caches    map[string]*fallback.Cache // by cacheSig
	lastGood  map[string]*fallback.Cache // by model
	coalesce  map[string]*fallback.Coalescer[*sharedAnswer]
	mirrors   map[string]*mirrorState   // by shadowSig
	sinks     map[string]*recordSink    // by model
	liveModel map[string]*routePolicies // model -> features of the live route
	closed    bool
	closing   sync.WaitGroup // mirrors draining in the background

	agentMode bool                                        // ShadowProcess is agent: ensureAgent starts one
	agentOnce sync.Once                                   // the agent's start, tried once (ensureAgent)
	agent     *agent.Client                               // the running agent, under mu (nil: mirrors inline)
	onShadow  func(model, version string, disagreed bool) // in the agent: comparisons go back to the proxy
}

// attach binds the component to its proxy (metrics, logger, state dir);
// in agent mode the agent starts with the first route that shadows.
func (f *features) attach(p *Pipeline) error {
	f.p, f.log = p, p.log.With("component", "features")
	f.fbm = fallback.NewMetrics(p.cfg.Registry)
	f.shm = shadow.NewMetrics(p.cfg.Registry)
	f.shadowDir = f.cfg.ShadowDir
	if f.shadowDir == "" && p.cfg.StateDir != "" {
		f.shadowDir = filepath.Join(p.cfg.StateDir, "shadow")
	}
	if f.shadowDir != "" {
		if err := os.MkdirAll(f.shadowDir, 0o755); err != nil {
			return fmt.Errorf("shadow record dir: %w", err)
		}
	}
	switch f.cfg.ShadowProcess {
	case "", ShadowAgent:
		f.agentMode = true
		if _, err := agent.ParsePriority(f.cfg.ShadowAgentPriority); err != nil {
			return err
		}
	case ShadowInline:
	default:
		return fmt.Errorf("shadow process %q: want %q or %q", f.cfg.ShadowProcess, ShadowAgent, ShadowInline)
	}
	return nil
}

// routePolicies are one compiled route's policies, in the order the
// pipeline applies them (serve); built by compile.
type routePolicies struct {
	f     *features
	route *Route
	// keyVersion[i] is variant i's version as the cache key holds it: the
	// version name and its backend model/version, so a redeployed version
	// never serves the entries of what it replaced.
	keyVersion []string

	cache    *fallback.Cache // serving cache (nil: off)
	cacheSig string
	memo     *rawMemo // raw REST body -> key (with the cache on)
	coal     *fallback.Coalescer[*sharedAnswer]

	fb       *fallbackPolicy // nil: no fallback section
	lastGood *fallback.Cache // the chain's cache step (nil: not in the chain)

	mirror *mirrorState // nil: no shadow
}

// compile builds the route's policies (once per route per configuration,
// never per request); nil when the model has none.
func (f *features) compile(r *Route) *routePolicies {
	m := r.Model
	if !m.Spec.Cache.On() && m.Spec.Fallback == nil && m.Spec.Shadow == nil {
		return nil
	}
	rf := &routePolicies{f: f, route: r, keyVersion: make([]string, len(r.Variants))}
	for i, v := range r.Variants {
		rf.keyVersion[i] = v.Name + "\x00" + v.BackendModel + "\x00" + v.BackendVersion + "\x00" + v.Protocol
	}
	if m.Spec.Shadow != nil {
		f.ensureAgent() // the first route that shadows starts the agent
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if sh := m.Spec.Shadow; sh != nil {
		if ms, err := f.mirrorLocked(r, sh); err != nil {
			f.log.Error("shadow off for this configuration", "model", r.Name, "error", err)
		} else {
			rf.mirror = ms
		}
	}
	if fb := m.Spec.Fallback; fb != nil {
		pol, err := f.policyLocked(r, fb)
		if err != nil {
			// Validated desired state cannot get here; keep serving
			// without the fallback rather than failing the config.
			f.log.Error("fallback off for this configuration", "model", r.Name, "error", err)
		} else {
			rf.fb = pol
			if pol.hasStep(fallback.StepCache) && m.Spec.Cache.On() {
				rf.lastGood = f.lastGoodLocked(r.Name)
			}
		}
	}
	if c := m.Spec.Cache; c.On() {
		rf.cacheSig = cacheSig(r.Name, c)
		rf.cache = f.caches[rf.cacheSig]
		if rf.cache == nil {
			rf.cache = fallback.NewCache(r.Name, "serving", fallback.CacheConfig{
				MaxEntries: c.MaxEntries, MaxBytes: c.MaxBytes, TTL: c.TTL.D()}, f.fbm)
			f.caches[rf.cacheSig] = rf.cache
		}
		rf.memo = newRawMemo(4096)
		if c.CoalesceOn() {
			rf.coal = f.coalesce[r.Name]
			if rf.coal == nil {
				rf.coal = fallback.NewCoalescer[*sharedAnswer](r.Name, f.fbm)
				f.coalesce[r.Name] = rf.coal
			}
		}
	}
	return rf
}

func cacheSig(model string, c *api.Cache) string {
	return fmt.Sprintf("%s|%s|%d|%d", model, c.TTL.D(), c.MaxEntries, c.MaxBytes)
}

func (f *features) lastGoodLocked(model string) *fallback.Cache {
	c := f.lastGood[model]
	if c == nil {
		c = fallback.NewLastGood(model, fallback.CacheConfig{}, f.fbm)
		f.lastGood[model] = c
	}
	return c
}

// applied is called by Pipeline.Apply once a configuration is live: pieces no
// live route uses are closed (caches purged, mirrors drained in the
// background, record files closed).
func (f *features) applied(routes map[string]*Route) {
	f.mu.Lock()
	defer f.mu.Unlock()
	liveCache := map[string]bool{}
	liveModels := map[string]bool{}
	liveMirror := map[*mirrorState]bool{}
	live := map[string]*routePolicies{}
	for name, r := range routes {
		liveModels[name] = true
		rf := r.policies
		if rf == nil {
			continue
		}
		live[name] = rf
		if rf.cache != nil {
			liveCache[rf.cacheSig] = true
		}
		if rf.mirror != nil {
			liveMirror[rf.mirror] = true
		}
	}
	f.liveModel = live
	for sig, c := range f.caches {
		if !liveCache[sig] {
			c.Close()
			delete(f.caches, sig)
		}
	}
	for model, c := range f.lastGood {
		if rf := live[model]; rf == nil || rf.lastGood != c {
			c.Close()
			delete(f.lastGood, model)
		}
	}
	for model := range f.coalesce {
		if rf := live[model]; rf == nil || rf.coal == nil {
			delete(f.coalesce, model)
		}
	}
	for sig, ms := range f.mirrors {
		if !liveMirror[ms] {
			delete(f.mirrors, sig)
			f.closeMirrorLocked(ms)
		}
	}
	if f.agent != nil {
		f.agent.SetModels(agentModels(routes))
	}
}

// Close drains the mirrors (up to 5 s), closes the record files and purges
// the caches.
func (f *features) Close() error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil
	}
	f.closed = true
	for sig, ms := range f.mirrors {
		delete(f.mirrors, sig)
		f.closeMirrorLocked(ms)
	}
	a := f.agent
	f.mu.Unlock()
	if a != nil {
		a.Close() // the agent drains its mirrors and closes its files
	}
	f.closing.Wait() // every mirror closed: every record file released
	f.mu.Lock()
	defer f.mu.Unlock()
	var errs []error
	for model, s := range f.sinks { // none expected
		delete(f.sinks, model)
		errs = append(errs, s.w.Close())
	}
	for k, c := range f.caches {
		c.Close()
		delete(f.caches, k)
	}
	for k, c := range f.lastGood {
		c.Close()
		delete(f.lastGood, k)
	}
	return errors.Join(errs...)
}

// adminRoutes adds the extension's admin pages.
// (guard protects them: they expose captured data and internal state.)
func (f *features) adminRoutes(mux *http.ServeMux, guard func(http.Handler) http.Handler) {
	mux.Handle("GET /shadow/report", guard(http.HandlerFunc(f.serveShadowReport)))
	mux.Handle("GET /shadow/records", guard(http.HandlerFunc(f.serveShadowRecords)))
	mux.Handle("GET /fallback", guard(http.HandlerFunc(f.serveFallback)))
}

// FallbackStatus is the admin page /fallback: per model, the chain, the
// breakers of its versions and the caches.
type FallbackStatus struct {
	Models []ModelFallbackStatus `json:"models"`
}

// ModelFallbackStatus is one model's row.
type ModelFallbackStatus struct {
	Model    string                   `json:"model"`
	Chain    []string                 `json:"chain,omitempty"`
	Breakers []fallback.BreakerStatus `json:"breakers"`
	Cache    *CacheStatus             `json:"cache,omitempty"`
	LastGood *CacheStatus             `json:"lastGood,omitempty"`
	Shadow   *ShadowStatus            `json:"shadow,omitempty"`
}

// CacheStatus is one cache's size.
type CacheStatus struct {
	Entries    int   `json:"entries"`
	Bytes      int64 `json:"bytes"`
	MaxEntries int   `json:"maxEntries"`
	MaxBytes   int64 `json:"maxBytes"`
}

// ShadowStatus is one model's mirror.
type ShadowStatus struct {
	Version    string `json:"version"`
	QueueLen   int    `json:"queueLen"`
	RecordFile string `json:"recordFile,omitempty"`
}

func cacheStatus(c *fallback.Cache) *CacheStatus {
	if c == nil {
		return nil
	}
	cfg := c.Config()
	return &CacheStatus{Entries: c.Len(), Bytes: c.Bytes(), MaxEntries: cfg.MaxEntries, MaxBytes: cfg.MaxBytes}
}

// FallbackStatus reports the live routes' fallback, cache and shadow state.
func (f *features) FallbackStatus() FallbackStatus {
	out := FallbackStatus{Models: []ModelFallbackStatus{}}
	if f.p == nil {
		return out
	}
	s := f.p.snap.Load()
	if s == nil {
		return out
	}
	names := make([]string, 0, len(s.routes))
	for n := range s.routes {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		r := s.routes[n]
		ms := ModelFallbackStatus{Model: n, Breakers: []fallback.BreakerStatus{}}
		for _, v := range r.Variants {
			ms.Breakers = append(ms.Breakers, fallback.BreakerStatus{Model: n, Version: v.Name, State: v.Breaker.State().String()})
		}
		if rf := r.policies; rf != nil {
			if rf.fb != nil {
				ms.Chain = r.Model.Spec.Fallback.Chain
			}
			ms.Cache, ms.LastGood = cacheStatus(rf.cache), cacheStatus(rf.lastGood)
			if rf.mirror != nil {
				ms.Shadow = &ShadowStatus{Version: rf.mirror.target, QueueLen: rf.mirror.queueLen(), RecordFile: rf.mirror.sinkPath()}
			}
		}
		out.Models = append(out.Models, ms)
	}
	return out
}

func (f *features) serveFallback(w http.ResponseWriter, r *http.Request) {
	WriteJSON(w, http.StatusOK, f.FallbackStatus())
}

// shadowWindow reads ?window= (default 5m, at most 24h).
func shadowWindow(r *http.Request) (time.Duration, error) {
	s := r.URL.Query().Get("window")
	if s == "" {
		return 5 * time.Minute, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 || d > 24*time.Hour {
		return 0, fmt.Errorf("window: want a duration in (0, 24h] such as 5m, got %q", s)
	}
	return d, nil
}

// liveMirror returns the mirror of a model in the live configuration.
func (f *features) liveMirror(model string) (*mirrorState, error) {
	if model == "" {
		return nil, errors.New("model: required (?model=NAME)")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	rf := f.liveModel[model]
	if rf == nil || rf.mirror == nil {
		return nil, fmt.Errorf("model %q has no shadow on this proxy", model)
	}
	return rf.mirror, nil
}

// ShadowReportResponse is the admin answer of /shadow/report.
type ShadowReportResponse struct {
	Model         string        `json:"model"`
	ShadowVersion string        `json:"shadowVersion"`
	Window        string        `json:"window"`
	Report        shadow.Report `json:"report"`
}

// ShadowReport summarises a model's recent comparisons on this proxy (the
// in-memory ring) over the window before now.
func (f *features) ShadowReport(model string, window time.Duration) (ShadowReportResponse, error) {
	ms, err := f.liveMirror(model)
	if err != nil {
		return ShadowReportResponse{}, err
	}
	if ms.agent != nil {
		return f.agentReport(ms, model, window)
	}
	now := time.Now()
	rep := ms.m.Ring().Summary(now.Add(-window), now, 10)
	return ShadowReportResponse{Model: model, ShadowVersion: ms.target, Window: window.String(), Report: rep}, nil
}

func (f *features) serveShadowReport(w http.ResponseWriter, r *http.Request) {
	window, err := shadowWindow(r)
	if err != nil {
		WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	rep, err := f.ShadowReport(r.URL.Query().Get("model"), window)
	if err != nil {
		WriteError(w, http.StatusNotFound, err.Error())
		return
	}
	WriteJSON(w, http.StatusOK, rep)
}

// ShadowRecordsResponse is the admin answer of /shadow/records: the ring's
// records in the window (every compared pair, weight 1), which the control
// plane merges across proxies.
type ShadowRecordsResponse struct {
	Model         string          `json:"model"`
	ShadowVersion string          `json:"shadowVersion"`
	From          time.Time       `json:"from"`
	To            time.Time       `json:"to"`
	Records       []shadow.Record `json:"records"`
}

func (f *features) serveShadowRecords(w http.ResponseWriter, r *http.Request) {
	window, err := shadowWindow(r)
	if err != nil {
		WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	model := r.URL.Query().Get("model")
	ms, err := f.liveMirror(model)
	if err != nil {
		WriteError(w, http.StatusNotFound, err.Error())
		return
	}
	var b []byte
	if ms.agent != nil {
		b, err = f.agentRecords(ms, model, window)
	} else {
		var recs ShadowRecordsResponse
		if recs, err = f.shadowRecords(model, window); err == nil {
			b, err = json.Marshal(recs)
		}
	}
	if err != nil {
		WriteError(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(b)
}

// closeMirrorLocked stops a mirror in the background: it drains its queue
// for up to 5 s (Close waits for it).
func (f *features) closeMirrorLocked(ms *mirrorState) {
	if ms.m == nil {
		return // agent mode: the agent closes its own
	}
	f.closing.Add(1)
	go func() {
		defer f.closing.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := ms.m.Close(ctx); err != nil {
			f.log.Warn("shadow mirror closed before draining", "model", ms.model, "error", err)
		}
		if ms.sink != nil {
			f.mu.Lock()
			err := f.releaseSinkLocked(ms.sink)
			f.mu.Unlock()
			if err != nil {
				f.log.Warn("shadow record file", "model", ms.model, "error", err)
			}
		}
	}()
}
