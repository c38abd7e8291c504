package api

import (
	"encoding/json"
	"fmt"
	"time"

	"go.yaml.in/yaml/v3"
)

// APIVersion and KindModel identify a Model document.
const (
	APIVersion = "switchyard.dev/v1"
	KindModel  = "Model"
)

// Protocols a version's endpoints speak (Open Inference Protocol v2).
const (
	ProtocolHTTP = "http"
	ProtocolGRPC = "grpc"
)

// DefaultOverrideHeader is the request header that pins a request to a
// version by name (and the response header naming the version that answered).
const DefaultOverrideHeader = "x-switchyard-variant"

// MaxWeight is the largest weight one version may carry. Weights are relative
// integers: a version's share of traffic is its weight divided by the sum of
// all weights. {v1: 80, v2: 20} and {v1: 4, v2: 1} are the same split.
const MaxWeight = 10000

// Model is the desired state of one virtual model: the whole traffic policy
// of the endpoint /v2/models/{metadata.name}/infer.
//
// Optional sections (Retries, Shadow, Canary, Fallback, Cache) are pointers:
// nil means the feature is off for this model. When a section is present,
// Defaults fills its unset (zero) fields.
type Model struct {
	APIVersion string   `json:"apiVersion" yaml:"apiVersion"`
	Kind       string   `json:"kind" yaml:"kind"`
	Metadata   Metadata `json:"metadata" yaml:"metadata"`
	Spec       Spec     `json:"spec" yaml:"spec"`
}

// Metadata names the model.
type Metadata struct {
	// Name is the virtual model name: a DNS label (lowercase letters,
	// digits, '-'; at most 63 characters).
	Name   string            `json:"name" yaml:"name"`
	Labels map[string]string `json:"labels,omitempty" yaml:"labels,omitempty"`
}

// Spec is a model's traffic policy.
type Spec struct {
	Versions []Version `json:"versions" yaml:"versions"`
	Traffic  Traffic   `json:"traffic" yaml:"traffic"`
	// Timeout is the latency budget of one request, retries included.
	// Default 1s.
	Timeout  Duration  `json:"timeout,omitempty" yaml:"timeout,omitempty"`
	Retries  *Retries  `json:"retries,omitempty" yaml:"retries,omitempty"`
	Shadow   *Shadow   `json:"shadow,omitempty" yaml:"shadow,omitempty"`
	Canary   *Canary   `json:"canary,omitempty" yaml:"canary,omitempty"`
	Fallback *Fallback `json:"fallback,omitempty" yaml:"fallback,omitempty"`
	Cache    *Cache    `json:"cache,omitempty" yaml:"cache,omitempty"`
	// Concurrency caps the requests in flight to each version (load
	// shedding); none by default.
	Concurrency *Concurrency `json:"concurrency,omitempty" yaml:"concurrency,omitempty"`
}

// Concurrency is spec.concurrency: one limiter per version of the model.
// A request over a version's cap is shed at once: the fallback chain
// answers it where spec.fallback has one, else 503 with Retry-After
// (gRPC UNAVAILABLE). A shed request is an overload: it opens no breaker
// and fails no canary error gate.
type Concurrency struct {
	// Adaptive: the cap follows measured latency (a gradient limiter, in
	// the spirit of Envoy's adaptive concurrency filter and Netflix's
	// Gradient2), between MinLimit and MaxLimit, starting at Limit.
	// Otherwise Limit is a fixed cap.
	Adaptive bool `json:"adaptive,omitempty" yaml:"adaptive,omitempty"`
	// Limit is the fixed cap (required without adaptive), or the adaptive
	// cap's start (default 32).
	Limit int `json:"limit,omitempty" yaml:"limit,omitempty"`
	// MinLimit and MaxLimit bound the adaptive cap (defaults 4 and 1000).
	MinLimit int `json:"minLimit,omitempty" yaml:"minLimit,omitempty"`
	MaxLimit int `json:"maxLimit,omitempty" yaml:"maxLimit,omitempty"`
	// Tolerance is how far latency may rise over the version's no-load
	// latency before the adaptive cap shrinks (default 1.5).
	Tolerance float64 `json:"tolerance,omitempty" yaml:"tolerance,omitempty"`
}

// DefaultConcurrencyMaxLimit is spec.concurrency.maxLimit's default.
const DefaultConcurrencyMaxLimit = 1000

// ConcurrencyOf is the model's concurrency policy: spec.concurrency, or
// the older spelling spec.fallback.maxConcurrency as a fixed cap (nil:
// none).
func (s *Spec) ConcurrencyOf() *Concurrency {
	if s.Concurrency != nil {
		return s.Concurrency
	}
	if f := s.Fallback; f != nil && f.MaxConcurrency > 0 {
		return &Concurrency{Limit: f.MaxConcurrency}
	}
	return nil
}

// Version is one deployed model version behind the virtual model.
type Version struct {
	// Name identifies the version within the model (v1, v2, lite, ...).
	Name string `json:"name" yaml:"name"`
	// Endpoints are host:port addresses of OIP v2 servers.
	Endpoints []string `json:"endpoints" yaml:"endpoints"`
	// Protocol is "http" (OIP v2 REST, default) or "grpc".
	Protocol string `json:"protocol,omitempty" yaml:"protocol,omitempty"`
	// BackendModel is the model name at the backend (default metadata.name).
	BackendModel string `json:"backendModel,omitempty" yaml:"backendModel,omitempty"`
	// BackendVersion is the model version at the backend (optional; empty
	// means the backend's default version).
	BackendVersion string `json:"backendVersion,omitempty" yaml:"backendVersion,omitempty"`
	// TLS, if set, is how the proxy connects to this version's endpoints
	// over TLS (mTLS with a client certificate); without it the proxy's
	// default applies (its --upstream-ca / --upstream-cert flags), else
	// plaintext. Translated into the xDS cluster's transport_socket
	// (Envoy's UpstreamTlsContext with file names).
	TLS *UpstreamTLS `json:"tls,omitempty" yaml:"tls,omitempty"`
}

// UpstreamTLS names files on the proxy's host (absolute paths, read at
// connection time and reloaded when they change).
type UpstreamTLS struct {
	// CAFile is the CA bundle that the backends' certificates must chain
	// to (required unless Disabled).
	CAFile string `json:"caFile,omitempty" yaml:"caFile,omitempty"`
	// CertFile and KeyFile are the client certificate presented (mTLS);
	// both or neither.
	CertFile string `json:"certFile,omitempty" yaml:"certFile,omitempty"`
	KeyFile  string `json:"keyFile,omitempty" yaml:"keyFile,omitempty"`
	// ServerName is the name checked in the backends' certificates
	// (default: each endpoint's host).
	ServerName string `json:"serverName,omitempty" yaml:"serverName,omitempty"`
	// Disabled connects in plaintext even where the proxy has a default.
	Disabled bool `json:"disabled,omitempty" yaml:"disabled,omitempty"`
}

// Traffic is the split between versions.
type Traffic struct {
	// Weights maps version name to a relative integer weight, each
	// 0..MaxWeight, total > 0. A version absent from the map gets no
	// traffic (weight 0). A proxy normalises the weights.
	// Default for a single-version model: {thatVersion: 100}.
	Weights map[string]int `json:"weights" yaml:"weights"`
	// StickyHeader, when set, buckets requests by a hash of this header's
	// value so that one user stays on one version.
	StickyHeader string `json:"stickyHeader,omitempty" yaml:"stickyHeader,omitempty"`
	// OverrideHeader pins a request to the version it names.
	// Default x-switchyard-variant.
	OverrideHeader string `json:"overrideHeader,omitempty" yaml:"overrideHeader,omitempty"`
}

// Retries of a failed upstream call.
type Retries struct {
	// Attempts is the number of retries after the first try (0..10).
	Attempts int `json:"attempts" yaml:"attempts"`
	// BudgetPercent caps retries at this share of active requests (0..100;
	// 0 means the default of 20).
	BudgetPercent float64 `json:"budgetPercent,omitempty" yaml:"budgetPercent,omitempty"`
}

// Shadow sampling modes.
const (
	SamplingRandom = "random"
	SamplingSticky = "sticky"
)

// Compare modes for shadow diffs.
const (
	CompareNumeric = "numeric"
	CompareTopK    = "topk"
	CompareArgmax  = "argmax"
	CompareExact   = "exact"
)

// Shadow mirrors a share of requests to a version whose answers are compared
// with the primary's and never returned.
type Shadow struct {
	Version string `json:"version" yaml:"version"`
	// Percent of requests mirrored, (0, 100].
	Percent float64 `json:"percent" yaml:"percent"`
	// Sampling is "random" (default) or "sticky" (by traffic.stickyHeader).
	Sampling string `json:"sampling,omitempty" yaml:"sampling,omitempty"`
	// QueueSize bounds the mirror queue (default 1024); a full queue drops.
	QueueSize int `json:"queueSize,omitempty" yaml:"queueSize,omitempty"`
	// Workers calling the shadow (default 4).
	Workers int `json:"workers,omitempty" yaml:"workers,omitempty"`
	// Timeout of one shadow call (default spec.timeout).
	Timeout Duration `json:"timeout,omitempty" yaml:"timeout,omitempty"`
	Compare Compare  `json:"compare" yaml:"compare"`
	// NoiseFloorPercent is the share of mirrored requests (0..100) that are
	// also sent to the primary version a second time and compared with the
	// primary's own answer, to measure the noise floor (the disagreement a
	// nondeterministic model has with itself); reported apart from the
	// shadow figures. 0: off.
	NoiseFloorPercent float64 `json:"noiseFloorPercent,omitempty" yaml:"noiseFloorPercent,omitempty"`
	// Batch joins mirrored requests into one call of the shadow version
	// (absent: one call per mirrored request). The shadow's answers are
	// compared, never returned, so nobody waits for the batch; the proxy
	// saves the round trips and the shadow backend runs one batch. The
	// shadow latency reported is then that of the joined call.
	Batch *ShadowBatch `json:"batch,omitempty" yaml:"batch,omitempty"`
}

// ShadowBatch bounds a batched shadow call.
type ShadowBatch struct {
	// MaxRows is the most rows (dimension 0 of the inputs, summed) one
	// call carries, 2..4096.
	MaxRows int `json:"maxRows" yaml:"maxRows"`
	// MaxDelay is how long a worker waits for more mirrored requests after
	// the first (default 0: join only what is already queued), at most 1s.
	MaxDelay Duration `json:"maxDelay,omitempty" yaml:"maxDelay,omitempty"`
}

// Compare says how two answers are compared.
type Compare struct {
	// Mode is numeric (default: element-wise with tolerances), topk, argmax
	// or exact.
	Mode string `json:"mode,omitempty" yaml:"mode,omitempty"`
	// K for topk (default 10).
	K int `json:"k,omitempty" yaml:"k,omitempty"`
	// AbsTol and RelTol for numeric: |a-b| <= absTol + relTol*|b|
	// (defaults 1e-5 and 1e-3).
	AbsTol float64 `json:"absTol,omitempty" yaml:"absTol,omitempty"`
	RelTol float64 `json:"relTol,omitempty" yaml:"relTol,omitempty"`
	// Outputs restricts the comparison to these output tensors (default all).
	Outputs []string `json:"outputs,omitempty" yaml:"outputs,omitempty"`
}

// Canary ramps traffic to a version step by step, gated on its numbers.
type Canary struct {
	Version string `json:"version" yaml:"version"`
	// Steps are the canary's traffic percentages, strictly increasing,
	// each 1..100, ending at 100 (default 20, 50, 80, 100).
	Steps []int `json:"steps,omitempty" yaml:"steps,omitempty"`
	// StepDuration is the minimum time per step (default 5m).
	StepDuration Duration `json:"stepDuration,omitempty" yaml:"stepDuration,omitempty"`
	// MinRequests per step before a decision (default 500).
	MinRequests int `json:"minRequests,omitempty" yaml:"minRequests,omitempty"`
	// MaxErrorRate of the canary, 0..1 (default 0.01).
	MaxErrorRate float64 `json:"maxErrorRate,omitempty" yaml:"maxErrorRate,omitempty"`
	// MaxP99Ratio: canary p99 / baseline p99, >= 1 (default 1.25).
	MaxP99Ratio float64 `json:"maxP99Ratio,omitempty" yaml:"maxP99Ratio,omitempty"`
	// MaxNaNRate: share of canary answers with NaN/Inf, 0..1 (default 0.001).
	MaxNaNRate float64 `json:"maxNaNRate,omitempty" yaml:"maxNaNRate,omitempty"`
	// ConsecutiveFailures: failed analyses in a row before rollback
	// (default 3, as canary.Config.FailuresBeforeRollback).
	ConsecutiveFailures int `json:"consecutiveFailures,omitempty" yaml:"consecutiveFailures,omitempty"`
	// MaxClientErrorExcess: how much the canary's rate of requests it
	// rejects as bad (400 / InvalidArgument) may exceed the baseline's,
	// 0..1 (0: the canary package's default, 0.01).
	MaxClientErrorExcess float64 `json:"maxClientErrorExcess,omitempty" yaml:"maxClientErrorExcess,omitempty"`
}

// Fallback chain steps.
const (
	FallbackCache  = "cache"
	FallbackBackup = "backup"
	FallbackStatic = "static"
	FallbackEmpty  = "empty"
)

// Fallback says what answers when the chosen version fails, times out, is
// overloaded or its breaker is open.
type Fallback struct {
	// Chain is tried in order: cache, backup, static, empty (each at most
	// once).
	Chain []string `json:"chain" yaml:"chain"`
	// Backup names the version the "backup" step calls.
	Backup string `json:"backup,omitempty" yaml:"backup,omitempty"`
	// BackupTimeout of the backup call (default spec.timeout).
	BackupTimeout Duration `json:"backupTimeout,omitempty" yaml:"backupTimeout,omitempty"`
	// Static is the answer of the "static" step.
	Static *Static `json:"static,omitempty" yaml:"static,omitempty"`
	// Breaker opens a version's circuit on failures (defaults below).
	Breaker Breaker `json:"breaker" yaml:"breaker"`
	// MaxConcurrency caps in-flight requests per version; above it a
	// request falls back at once (0: unlimited). The older spelling of
	// spec.concurrency.limit (a fixed cap); not both.
	MaxConcurrency int `json:"maxConcurrency,omitempty" yaml:"maxConcurrency,omitempty"`
}

// Static is a fixed answer.
type Static struct {
	Outputs []StaticTensor `json:"outputs" yaml:"outputs"`
}

// StaticTensor is one output tensor of a static answer. Numeric and BOOL
// tensors carry Data (BOOL as 0/1; integers must be whole numbers in the
// datatype's range; exact up to 2^53); BYTES tensors carry Strings.
type StaticTensor struct {
	Name     string    `json:"name" yaml:"name"`
	Datatype string    `json:"datatype" yaml:"datatype"`
	Shape    []int64   `json:"shape" yaml:"shape"`
	Data     []float64 `json:"data,omitempty" yaml:"data,omitempty"`
	Strings  []string  `json:"strings,omitempty" yaml:"strings,omitempty"`
}

// Breaker configures the per-version circuit breaker.
type Breaker struct {
	// ConsecutiveFailures that open the breaker (default 5).
	ConsecutiveFailures int `json:"consecutiveFailures,omitempty" yaml:"consecutiveFailures,omitempty"`
	// FailureRatio that opens the breaker once MinRequests were seen in
	// the window, 0..1 (0: off).
	FailureRatio float64 `json:"failureRatio,omitempty" yaml:"failureRatio,omitempty"`
	MinRequests  int     `json:"minRequests,omitempty" yaml:"minRequests,omitempty"`
	// OpenFor is the longest the breaker stays open before a probe call
	// may go through (default 10s). The first open after a closed spell
	// lasts FirstOpenFor; each failed probe doubles it, up to OpenFor;
	// a probe that succeeds closes the breaker.
	OpenFor Duration `json:"openFor,omitempty" yaml:"openFor,omitempty"`
	// FirstOpenFor is the first open's length (default min(1s, openFor);
	// set it to openFor for a fixed open time).
	FirstOpenFor Duration `json:"firstOpenFor,omitempty" yaml:"firstOpenFor,omitempty"`
}

// Cache is the prediction cache, keyed by (model, version, input hash).
type Cache struct {
	// Enabled (default true when the section is present).
	Enabled *bool `json:"enabled,omitempty" yaml:"enabled,omitempty"`
	// TTL of an entry (default 30s).
	TTL Duration `json:"ttl,omitempty" yaml:"ttl,omitempty"`
	// MaxEntries (default 10000).
	MaxEntries int `json:"maxEntries,omitempty" yaml:"maxEntries,omitempty"`
	// MaxBytes of cached responses (default 64 MiB).
	MaxBytes int64 `json:"maxBytes,omitempty" yaml:"maxBytes,omitempty"`
	// Coalesce identical in-flight requests into one upstream call
	// (default true).
	Coalesce *bool `json:"coalesce,omitempty" yaml:"coalesce,omitempty"`
}

// On reports whether the cache is configured and enabled.
func (c *Cache) On() bool { return c != nil && (c.Enabled == nil || *c.Enabled) }

// CoalesceOn reports whether in-flight coalescing is on.
func (c *Cache) CoalesceOn() bool { return c.On() && (c.Coalesce == nil || *c.Coalesce) }

// Version returns the version with this name.
func (m *Model) Version(name string) (*Version, bool) {
	for i := range m.Spec.Versions {
		if m.Spec.Versions[i].Name == name {
			return &m.Spec.Versions[i], true
		}
	}
	return nil, false
}

// VersionNames lists the version names in document order.
func (m *Model) VersionNames() []string {
	out := make([]string, len(m.Spec.Versions))
	for i, v := range m.Spec.Versions {
		out[i] = v.Name
	}
	return out
}

// Clone returns a deep copy.
func (m Model) Clone() Model {
	b, err := json.Marshal(m)
	if err != nil {
		panic(fmt.Sprintf("api: marshal model: %v", err)) // plain data: cannot fail
	}
	var out Model
	if err := json.Unmarshal(b, &out); err != nil {
		panic(fmt.Sprintf("api: unmarshal model: %v", err))
	}
	return out
}

// Duration is a time.Duration written as a Go duration string ("50ms",
// "1m30s") in JSON and YAML.
type Duration time.Duration

// D returns the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String formats like time.Duration.
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalJSON writes "50ms".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON reads "50ms".
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("want a duration string such as \"50ms\", got %s", b)
	}
	return d.parse(s)
}

// MarshalYAML writes 50ms.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// UnmarshalYAML reads 50ms.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("want a duration string such as \"50ms\"")
	}
	return d.parse(n.Value)
}

func (d *Duration) parse(s string) error {
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("want a duration such as \"50ms\" or \"1m30s\", got %q", s)
	}
	*d = Duration(v)
	return nil
}
