// Package pipeline is the proxy's transport-neutral request pipeline: the
// compiled routes and their policies (route.go, fallback_features.go), one
// exchange's way through them (pipeline.go: Begin, Serve, Finish, HandOff),
// the upstream attempts (invoke.go), the prediction cache (cache.go), the
// fallback chain (fallback.go), the shadow capture and agent (shadow.go,
// shadowagent.go), what a request counts as for the canary (report.go),
// overload (overload.go) and the request metrics (metrics.go).
//
// A Pipeline is built by package proxy (New) and fed configurations
// (Apply); the front-ends (package proxy/front) turn their wire into an Exchange and a Result
// back into their wire.
package pipeline

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/fallback"
	"github.com/switchyard-dev/switchyard/internal/tlsutil"
	"github.com/switchyard-dev/switchyard/oip"
	"github.com/switchyard-dev/switchyard/proxy/report"
	"github.com/switchyard-dev/switchyard/proxy/upstream"
	"github.com/switchyard-dev/switchyard/shadow/agent"
	"github.com/switchyard-dev/switchyard/telemetry"
)

// Config is what the pipeline takes from the proxy's configuration
// (proxy.Config's fields of the same names). Zero values get proxy.New's
// defaults.
type Config struct {
	// StateDir is where shadow records go by default (<StateDir>/shadow).
	StateDir string
	// Features configures the cache, fallback and shadow policies.
	Features FeaturesConfig
	// Logger (nil: discard) and LogSampleEvery (successful requests
	// logged one in LogSampleEvery; errors always).
	Logger         *slog.Logger
	LogSampleEvery int
	// Registry receives the metrics (nil: a new registry).
	Registry *prometheus.Registry
	// TracerProvider records spans (nil or no-op: none).
	TracerProvider trace.TracerProvider
	// Outlier is the endpoints' ejection policy.
	Outlier upstream.Outlier
	// MaxBodyBytes bounds request bodies; MaxBufferedBytes the bytes of
	// request bodies held at once.
	MaxBodyBytes, MaxBufferedBytes int64
	// LeanGRPC: plaintext gRPC versions get ModelInfer on the lean client
	// (GRPCLean); false: grpc-go's (GRPCGo).
	LeanGRPC bool
	// MaxIdleConnsPerEndpoint bounds each HTTP upstream pool.
	MaxIdleConnsPerEndpoint int
	// UpstreamTLS is the default TLS to backends (nil: plaintext).
	UpstreamTLS *tlsutil.Files
}

// Pipeline is the request pipeline of one proxy: its live routes, the
// registry of their long-lived pieces (pools, breakers, limiters, retry
// budgets), the policies, and what every exchange reports to (metrics,
// tracer, log, the canary's stats recorder).
type Pipeline struct {
	cfg     Config
	log     *slog.Logger
	metrics *Metrics
	reg     *registry
	sampler *telemetry.Sampler
	tracing bool
	tracer  trace.Tracer
	prop    propagation.TextMapPropagator

	snap    atomic.Pointer[Snapshot]
	applyMu sync.Mutex

	stats    *report.Recorder
	features *features // the routes' cache, fallback and shadow policies
	budget   *ByteBudget
}

// New builds a pipeline with no configuration yet (Apply gives it one).
func New(cfg Config) (*Pipeline, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.LogSampleEvery == 0 {
		cfg.LogSampleEvery = 100
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	if cfg.Outlier == (upstream.Outlier{}) {
		cfg.Outlier = upstream.DefaultOutlier
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = oip.DefaultMaxBodyBytes
	}
	if cfg.MaxBufferedBytes <= 0 {
		cfg.MaxBufferedBytes = DefaultMaxBufferedBytes
	}
	p := &Pipeline{
		cfg:     cfg,
		log:     cfg.Logger,
		metrics: NewMetrics(cfg.Registry),
		sampler: telemetry.NewSampler(cfg.LogSampleEvery),
		prop:    telemetry.Propagator(),
		stats:   report.NewRecorder(),
		budget:  &ByteBudget{limit: cfg.MaxBufferedBytes},
	}
	cfg.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "switchyard_proxy_buffered_request_bytes",
		Help: "Bytes of request bodies the proxy holds now (the budget is --max-buffered-bytes).",
	}, func() float64 { return float64(p.BufferedBytes()) }))
	if telemetry.Enabled(cfg.TracerProvider) {
		p.tracing = true
		p.tracer = cfg.TracerProvider.Tracer("github.com/switchyard-dev/switchyard/proxy")
	}
	p.reg = newRegistry(cfg.MaxIdleConnsPerEndpoint, p.onBreakerChange, nil)
	p.reg.leanGRPC = cfg.LeanGRPC
	p.reg.upTLS = cfg.UpstreamTLS
	if f := cfg.UpstreamTLS; f != nil {
		if f.CA == "" {
			return nil, fmt.Errorf("upstream TLS needs the CA that the backends' certificates chain to")
		}
		if _, _, err := p.reg.upstreamTLS(nil); err != nil { // the files load now, not at the first request
			return nil, err
		}
	}
	p.features = newFeatures(cfg.Features)
	if err := p.features.attach(p); err != nil {
		return nil, err
	}
	return p, nil
}

// Apply validates models and makes them the active configuration atomically.
// On error the active configuration is unchanged. Models are defaulted
// first; the slice is not modified.
func (p *Pipeline) Apply(models []api.Model, version, source string) error {
	p.applyMu.Lock()
	defer p.applyMu.Unlock()
	ms := make([]api.Model, len(models))
	for i := range models {
		ms[i] = models[i].Clone()
		ms[i].Defaults()
		if err := ms[i].Validate(); err != nil {
			p.metrics.ConfigUpdates.WithLabelValues("rejected").Inc()
			return fmt.Errorf("model %q: %w", ms[i].Metadata.Name, err)
		}
	}
	ms = sortedModels(ms)
	s, err := p.compile(ms, version, source)
	if err != nil {
		p.metrics.ConfigUpdates.WithLabelValues("rejected").Inc()
		return err
	}
	old := p.snap.Swap(s)
	p.reg.mu.Lock()
	p.reg.prune(s)
	p.reg.mu.Unlock()
	if old != nil {
		p.metrics.ConfigInfo.DeleteLabelValues(old.version, old.source)
	}
	p.metrics.ConfigInfo.WithLabelValues(version, source).Set(1)
	p.features.applied(s.routes) // pieces of removed policies close
	p.metrics.ConfigTimestamp.Set(float64(s.applied.Unix()))
	p.metrics.ConfigUpdates.WithLabelValues("applied").Inc()
	for _, r := range s.routes {
		for _, v := range r.Variants {
			p.metrics.BreakerState.WithLabelValues(r.Name, v.Name).Set(float64(v.Breaker.State()))
		}
	}
	p.log.Info("configuration applied", "version", version, "source", source, "models", len(ms))
	return nil
}

func (p *Pipeline) onBreakerChange(model, variant string, from, to fallback.BreakerState) {
	p.metrics.BreakerState.WithLabelValues(model, variant).Set(float64(to))
	p.metrics.BreakerTransitions.WithLabelValues(model, variant, to.String()).Inc()
	p.log.Warn("circuit breaker state change", "model", model, "variant", variant, "from", from.String(), "to", to.String())
}

// Live describes the active configuration; ok is false before the first.
type Live struct {
	Models          []api.Model
	Version, Source string
	Applied         time.Time
}

// Live returns the active configuration (ok false before the first one).
func (p *Pipeline) Live() (Live, bool) {
	s := p.snap.Load()
	if s == nil {
		return Live{}, false
	}
	return Live{Models: s.models, Version: s.version, Source: s.source, Applied: s.applied}, true
}

// Route returns the compiled route of a model in the active configuration.
func (p *Pipeline) Route(name string) *Route {
	if s := p.snap.Load(); s != nil {
		return s.routes[name]
	}
	return nil
}

// Routes returns the active configuration's routes by name.
func (p *Pipeline) Routes() []*Route {
	s := p.snap.Load()
	if s == nil {
		return nil
	}
	out := make([]*Route, 0, len(s.routes))
	for _, r := range s.routes {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Metrics returns the pipeline's metrics.
func (p *Pipeline) Metrics() *Metrics { return p.metrics }

// Stats is the canary's stats recorder (the stats reporter ships it).
func (p *Pipeline) Stats() *report.Recorder { return p.stats }

// AdminRoutes adds the policies' admin pages to mux (/shadow/report,
// /shadow/records, /fallback), each behind guard.
func (p *Pipeline) AdminRoutes(mux *http.ServeMux, guard func(http.Handler) http.Handler) {
	p.features.adminRoutes(mux, guard)
}

// Snapshot is the active configuration (nil before the first one).
func (p *Pipeline) Snapshot() *Snapshot { return p.snap.Load() }

// Budget is the buffered-bytes budget the front-ends take request bodies
// from (overload.go).
func (p *Pipeline) Budget() *ByteBudget { return p.budget }

// MaxBodyBytes bounds a request body (Config.MaxBodyBytes).
func (p *Pipeline) MaxBodyBytes() int64 { return p.cfg.MaxBodyBytes }

// Tracing reports whether spans are recorded (Begin needs the incoming
// trace context's carrier only then).
func (p *Pipeline) Tracing() bool { return p.tracing }

// Logger is the pipeline's logger.
func (p *Pipeline) Logger() *slog.Logger { return p.log }

// BufferedBytes is the bytes of request bodies held now (the budget of
// Config.MaxBufferedBytes).
func (p *Pipeline) BufferedBytes() int64 { return p.budget.used.Load() }

// ShadowAgent is the running shadow agent's client (nil: none, the mirrors
// run in this process).
func (p *Pipeline) ShadowAgent() *agent.Client {
	p.features.mu.Lock()
	defer p.features.mu.Unlock()
	return p.features.agent
}

// CutUpstreams ends every upstream call in flight at once (a drain past
// its bound: Endpoint.Cut); the pipeline stays usable until Close.
func (p *Pipeline) CutUpstreams() { p.reg.cutAll() }

// Close closes the upstream connections and the policies (the shadow
// mirrors drain their queues); the front-ends have stopped.
func (p *Pipeline) Close() error {
	p.reg.closeAll()
	return p.features.Close()
}
