package pipeline

import (
	"crypto/tls"
	"fmt"
	"math/rand/v2"
	"net/textproto"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/fallback"
	"github.com/switchyard-dev/switchyard/internal/tlsutil"
	"github.com/switchyard-dev/switchyard/oip"
	"github.com/switchyard-dev/switchyard/proxy/upstream"
	"github.com/switchyard-dev/switchyard/routing"
)

// Route is the compiled, immutable form of one model's configuration.
type Route struct {
	// Name is the virtual model name.
	Name string
	// Model is the configuration the route was built from (do not modify).
	Model  *api.Model
	Picker *routing.Picker
	// Variants are the model's versions in document order (Picker indices).
	Variants []*Variant
	Timeout  time.Duration
	Retries  int
	Budget   *upstream.RetryBudget

	// policies are the route's compiled cache, fallback and shadow
	// policies (nil: none, the route only calls its versions).
	policies *routePolicies
	// validate: the route has a fallback policy, so each upstream
	// attempt's answer is decoded to judge it (NaN/Inf, batch dimension).
	validate bool

	stickyHTTP, overrideHTTP string // canonical header keys
	stickyMD, overrideMD     string // lowercase gRPC metadata keys
}

// Variant returns the variant with this version name, or nil.
func (r *Route) Variant(name string) *Variant {
	if i := r.Picker.Index(name); i >= 0 {
		return r.Variants[i]
	}
	return nil
}

// PassesThrough reports whether a gRPC request in wire form stays bytes on
// this route (no policies and no answer validation read its tensors).
func (r *Route) PassesThrough() bool { return r.policies == nil && !r.validate }

// Limiter is the version's concurrency limit (spec.concurrency; nil: none).
func (v *Variant) Limiter() *fallback.Limiter { return v.limiter }

// Variant is one version of a route.
type Variant struct {
	Route          *Route
	Name           string
	Index          int
	Protocol       string
	BackendModel   string
	BackendVersion string
	Endpoints      []*upstream.Endpoint
	Breaker        *fallback.Breaker
	// limiter caps the requests in flight (spec.concurrency; nil: none).
	limiter *fallback.Limiter

	// The backend's describe paths (OIP v2 REST: metadata, ready, config,
	// statistics).
	MetadataPath, ReadyPath, ConfigPath, StatsPath string

	inferPath   string
	headerValue []string // for x-switchyard-variant
	metrics     *variantMetrics
}

// HeaderValue is the x-switchyard-variant header's value (shared: do not
// modify).
func (v *Variant) HeaderValue() []string { return v.headerValue }

// CountRequest counts one answered request of this version under code (the
// HTTP status's or the gRPC code's name) in the request metrics; the
// pipeline's Finish does it for every exchange.
func (v *Variant) CountRequest(code string, seconds float64) { v.metrics.request(code, seconds) }

// OverrideHeader is the route's override header (canonical form; "" when
// none); OverrideMetadata and StickyMetadata are the override and sticky
// keys in lowercase (gRPC metadata, h1 header lookup).
func (r *Route) OverrideHeader() string   { return r.overrideHTTP }
func (r *Route) OverrideMetadata() string { return r.overrideMD }
func (r *Route) StickyMetadata() string   { return r.stickyMD }

// Route is the compiled route of model (nil: none, or no snapshot).
func (s *Snapshot) Route(model string) *Route {
	if s == nil {
		return nil
	}
	return s.routes[model]
}

// RouteBytes is Route for a name held as bytes, without a copy.
func (s *Snapshot) RouteBytes(model []byte) *Route {
	if s == nil {
		return nil
	}
	return s.routes[string(model)]
}

// Models are the snapshot's models, by name (do not modify).
func (s *Snapshot) Models() []api.Model { return s.models }

// Resolve finds the route and picks the variant of a request. A version in
// the path (/v2/models/{name}/versions/{v}/...) pins that version.
func (s *Snapshot) Resolve(model, pathVersion, override, key string) (*Route, routing.Choice, *oip.Error) {
	if s == nil {
		return nil, routing.Choice{}, oip.Errorf(oip.Unavailable, "no configuration yet: the proxy has not reached its control plane and has no persisted configuration")
	}
	r := s.Route(model)
	if r == nil {
		return nil, routing.Choice{}, oip.Errorf(oip.NotFound, "unknown model %q; known models: %s", model, s.Names())
	}
	if pathVersion != "" {
		// Pinned: like the override header (any version, whatever its
		// weight), counted as pinned.
		i := r.Picker.Index(pathVersion)
		if i < 0 {
			return nil, routing.Choice{}, NoSuchVersion(r, pathVersion)
		}
		return r, routing.Choice{Index: i, Reason: routing.ReasonPinned}, nil
	}
	return r, r.Picker.Pick(override, key, rand.Uint64()), nil
}

// Names lists the snapshot's models ("a, b, c", for error messages).
func (s *Snapshot) Names() string { return s.names }

// Snapshot is one applied configuration. Requests load it once and use it
// throughout, so a request sees the old or the new configuration, never a
// mix.
type Snapshot struct {
	version string
	source  string
	applied time.Time
	models  []api.Model
	routes  map[string]*Route
	names   string // "a, b, c" for 404 messages
}

// registry keeps long-lived upstream state across configurations: endpoint
// pools (by protocol and address), breakers and retry budgets (by model and
// version), so a new configuration keeps warm connections, ejections and
// breaker state.
type registry struct {
	mu        sync.Mutex
	endpoints map[string]*upstream.Endpoint
	breakers  map[string]breakerEntry
	budgets   map[string]budgetEntry
	limiters  map[string]limiterEntry
	retired   []retiredEndpoint
	maxIdle   int
	grpcOpts  []grpc.DialOption
	// leanGRPC: plaintext gRPC endpoints pass ModelInfer through on
	// internal/h2's client (Config.GRPCTransport).
	leanGRPC  bool
	onBreaker func(model, version string, from, to fallback.BreakerState)
	// upTLS is the proxy's default upstream TLS (Config.UpstreamTLS; nil:
	// plaintext unless a version says otherwise); tlsCfgs the client
	// configurations built so far, by files.
	upTLS   *tlsutil.Files
	tlsCfgs map[string]*tls.Config
}

type breakerEntry struct {
	cfg api.Breaker
	b   *fallback.Breaker
}

type limiterEntry struct {
	cfg api.Concurrency
	l   *fallback.Limiter
}

type budgetEntry struct {
	percent float64
	b       *upstream.RetryBudget
}

func newRegistry(maxIdle int, onBreaker func(model, version string, from, to fallback.BreakerState), grpcOpts []grpc.DialOption) *registry {
	return &registry{
		endpoints: map[string]*upstream.Endpoint{},
		breakers:  map[string]breakerEntry{},
		budgets:   map[string]budgetEntry{},
		limiters:  map[string]limiterEntry{},
		maxIdle:   maxIdle,
		grpcOpts:  append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, grpcOpts...),
		onBreaker: onBreaker,
	}
}

// upstreamTLS is a version's TLS to its endpoints: its own tls section,
// else the proxy's default; "", nil: plaintext. The key names the files
// (endpoints with different TLS are different pools).
func (g *registry) upstreamTLS(t *api.UpstreamTLS) (string, *tls.Config, error) {
	var f tlsutil.Files
	var serverName string
	switch {
	case t != nil && t.Disabled:
		return "", nil, nil
	case t != nil:
		f, serverName = tlsutil.Files{CA: t.CAFile, Cert: t.CertFile, Key: t.KeyFile}, t.ServerName
	case g.upTLS != nil:
		f = *g.upTLS
	default:
		return "", nil, nil
	}
	key := strings.Join([]string{f.CA, f.Cert, f.Key, serverName}, "|")
	if c, ok := g.tlsCfgs[key]; ok {
		return key, c, nil
	}
	c, err := tlsutil.NewClientConfig(f, tlsutil.ClientOptions{ServerName: serverName})
	if err != nil {
		return "", nil, fmt.Errorf("upstream tls: %w", err)
	}
	if g.tlsCfgs == nil {
		g.tlsCfgs = map[string]*tls.Config{}
	}
	g.tlsCfgs[key] = c
	return key, c, nil
}

func (g *registry) endpoint(protocol, addr string, t *api.UpstreamTLS) (*upstream.Endpoint, error) {
	tkey, tcfg, err := g.upstreamTLS(t)
	if err != nil {
		return nil, err
	}
	key := protocol + "://" + addr
	if tcfg != nil {
		key += " tls " + tkey
	}
	if e, ok := g.endpoints[key]; ok {
		return e, nil
	}
	var e *upstream.Endpoint
	switch {
	case protocol == api.ProtocolGRPC:
		opts := g.grpcOpts
		if tcfg != nil {
			opts = append(slices.Clip(opts), grpc.WithTransportCredentials(credentials.NewTLS(tcfg)))
		}
		if e, err = upstream.NewGRPCEndpoint(addr, opts...); err != nil {
			return nil, err
		}
		if g.leanGRPC {
			e.UseLeanClient(tcfg)
		}
	case tcfg != nil:
		e = upstream.NewHTTPSEndpoint(addr, g.maxIdle, tcfg)
	default:
		e = upstream.NewHTTPEndpoint(addr, g.maxIdle)
	}
	g.endpoints[key] = e
	return e, nil
}

// prune closes endpoints no route of s uses. Pools close idle connections
// at once; connections in use close when their request finishes.
func (g *registry) prune(s *Snapshot) {
	used := map[*upstream.Endpoint]bool{}
	for _, r := range s.routes {
		for _, v := range r.Variants {
			for _, e := range v.Endpoints {
				used[e] = true
			}
		}
	}
	now := time.Now()
	kept := g.retired[:0]
	for _, r := range g.retired {
		if now.Sub(r.at) > retireGrace {
			r.e.Close()
		} else {
			kept = append(kept, r)
		}
	}
	g.retired = kept
	for k, e := range g.endpoints {
		if !used[e] {
			delete(g.endpoints, k)
			g.retired = append(g.retired, retiredEndpoint{e: e, at: now})
		}
	}
}

// retireGrace is how long a dropped endpoint stays open for requests that
// still hold an older snapshot; it is closed at a later prune or at Close.
const retireGrace = 30 * time.Second

type retiredEndpoint struct {
	e  *upstream.Endpoint
	at time.Time
}

func (g *registry) closeAll() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for k, e := range g.endpoints {
		e.Close()
		delete(g.endpoints, k)
	}
	for _, r := range g.retired {
		r.e.Close()
	}
	g.retired = nil
}

// cutAll ends every upstream call in flight (Endpoint.Cut): a drain whose
// bound passed must not wait for the versions' timeouts.
func (g *registry) cutAll() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, e := range g.endpoints {
		e.Cut()
	}
	for _, r := range g.retired {
		r.e.Cut()
	}
}

// breaker is the one circuit breaker of model/version, kept across
// configurations while its settings stay the same; onBreaker (the proxy's
// gauge switchyard_proxy_breaker_state and log line) hears its changes.
func (g *registry) breaker(model, version string, cfg api.Breaker) *fallback.Breaker {
	key := model + "/" + version
	if e, ok := g.breakers[key]; ok && e.cfg == cfg {
		return e.b
	}
	var notify func(from, to fallback.BreakerState)
	if g.onBreaker != nil {
		notify = func(from, to fallback.BreakerState) { g.onBreaker(model, version, from, to) }
	}
	b := fallback.NewBreaker(fallback.BreakerConfig{
		ConsecutiveFailures: cfg.ConsecutiveFailures,
		FailureRatio:        cfg.FailureRatio,
		MinRequests:         cfg.MinRequests,
		OpenFor:             cfg.OpenFor.D(),
		FirstOpenFor:        cfg.FirstOpenFor.D(),
	}, nil, notify)
	g.breakers[key] = breakerEntry{cfg: cfg, b: b}
	return b
}

// limiter is the concurrency limiter of model/version, kept across
// configurations while its settings stay the same (an adaptive limit keeps
// what it learnt).
func (g *registry) limiter(model, version string, cfg api.Concurrency) *fallback.Limiter {
	key := model + "/" + version
	if e, ok := g.limiters[key]; ok && e.cfg == cfg {
		return e.l
	}
	l := fallback.NewLimiter(cfg.Limit)
	if cfg.Adaptive {
		l = fallback.NewAdaptiveLimiter(fallback.AdaptiveConfig{Initial: cfg.Limit, MinLimit: cfg.MinLimit, MaxLimit: cfg.MaxLimit, Tolerance: cfg.Tolerance})
	}
	g.limiters[key] = limiterEntry{cfg: cfg, l: l}
	return l
}

func (g *registry) budget(model string, percent float64) *upstream.RetryBudget {
	if e, ok := g.budgets[model]; ok && e.percent == percent {
		return e.b
	}
	b := upstream.NewRetryBudget(percent, 10)
	g.budgets[model] = budgetEntry{percent: percent, b: b}
	return b
}

// compile builds a snapshot from validated models.
func (p *Pipeline) compile(models []api.Model, version, source string) (*Snapshot, error) {
	s := &Snapshot{version: version, source: source, applied: time.Now(), models: models, routes: map[string]*Route{}}
	g := p.reg
	g.mu.Lock()
	defer g.mu.Unlock()
	names := make([]string, 0, len(models))
	for i := range models {
		m := &models[i]
		if _, dup := s.routes[m.Metadata.Name]; dup {
			return nil, fmt.Errorf("model %q configured twice", m.Metadata.Name)
		}
		picker, err := routing.NewPicker(m)
		if err != nil {
			return nil, err
		}
		r := &Route{
			Name:    m.Metadata.Name,
			Model:   m,
			Picker:  picker,
			Timeout: m.Spec.Timeout.D(),
		}
		if r.Timeout <= 0 {
			r.Timeout = api.DefaultTimeout.D()
		}
		percent := float64(api.DefaultRetryBudgetPercent)
		if rt := m.Spec.Retries; rt != nil {
			r.Retries = rt.Attempts
			if rt.BudgetPercent > 0 {
				percent = rt.BudgetPercent
			}
		}
		r.Budget = g.budget(r.Name, percent)
		if h := m.Spec.Traffic.StickyHeader; h != "" {
			r.stickyHTTP, r.stickyMD = textproto.CanonicalMIMEHeaderKey(h), strings.ToLower(h)
		}
		override := m.Spec.Traffic.OverrideHeader
		if override == "" {
			override = api.DefaultOverrideHeader
		}
		r.overrideHTTP, r.overrideMD = textproto.CanonicalMIMEHeaderKey(override), strings.ToLower(override)
		var bcfg api.Breaker
		if f := m.Spec.Fallback; f != nil {
			bcfg = f.Breaker
			r.validate = true
		}
		for j, ver := range m.Spec.Versions {
			v := &Variant{
				Route: r, Name: ver.Name, Index: j, Protocol: ver.Protocol,
				BackendModel: ver.BackendModel, BackendVersion: ver.BackendVersion,
				headerValue: []string{ver.Name},
			}
			if v.Protocol == "" {
				v.Protocol = api.ProtocolHTTP
			}
			if v.BackendModel == "" {
				v.BackendModel = r.Name
			}
			base := "/v2/models/" + url.PathEscape(v.BackendModel)
			if v.BackendVersion != "" {
				base += "/versions/" + url.PathEscape(v.BackendVersion)
			}
			v.inferPath, v.MetadataPath, v.ReadyPath = base+"/infer", base, base+"/ready"
			v.ConfigPath, v.StatsPath = base+"/config", base+"/stats"
			if len(ver.Endpoints) == 0 {
				return nil, fmt.Errorf("model %q version %q: no endpoints", r.Name, v.Name)
			}
			for _, addr := range ver.Endpoints {
				e, err := g.endpoint(v.Protocol, addr, ver.TLS)
				if err != nil {
					return nil, fmt.Errorf("model %q version %q: %w", r.Name, v.Name, err)
				}
				v.Endpoints = append(v.Endpoints, e)
			}
			v.Breaker = g.breaker(r.Name, v.Name, bcfg)
			if c := m.Spec.ConcurrencyOf(); c != nil {
				v.limiter = g.limiter(r.Name, v.Name, *c)
			}
			v.metrics = p.metrics.variant(r.Name, v.Name)
			r.Variants = append(r.Variants, v)
		}
		r.policies = p.features.compile(r)
		s.routes[r.Name] = r
		names = append(names, r.Name)
	}
	sort.Strings(names)
	s.names = strings.Join(names, ", ")
	if s.names == "" {
		s.names = "(none)"
	}
	return s, nil
}

func sortedModels(models []api.Model) []api.Model {
	out := slices.Clone(models)
	sort.Slice(out, func(i, j int) bool { return out[i].Metadata.Name < out[j].Metadata.Name })
	return out
}

func NoSuchVersion(r *Route, version string) *oip.Error {
	return oip.Errorf(oip.NotFound, "model %q has no version %q; versions: %s", r.Name, version, strings.Join(r.Model.VersionNames(), ", "))
}
