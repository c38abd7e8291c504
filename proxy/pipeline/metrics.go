package pipeline

import (
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/switchyard-dev/switchyard/routing"
)

// Metrics are the proxy's Prometheus metrics.
type Metrics struct {
	Requests           *prometheus.CounterVec   // model, variant, code
	Duration           *prometheus.HistogramVec // model, variant
	UpstreamRetries    *prometheus.CounterVec   // model, variant
	UpstreamErrors     *prometheus.CounterVec   // model, variant, kind
	Ejections          *prometheus.CounterVec   // endpoint
	Picks              *prometheus.CounterVec   // model, variant, reason: why requests went to each variant
	Shed               *prometheus.CounterVec   // reason: requests refused to protect the proxy
	AdminRefused       *prometheus.CounterVec   // reason: admin calls refused (no_credential, bad_credential, not_loopback)
	BreakerState       *prometheus.GaugeVec     // model, variant: 0 closed, 1 half-open, 2 open
	BreakerTransitions *prometheus.CounterVec   // model, variant, to: breaker state changes
	ConfigInfo         *prometheus.GaugeVec     // version, source
	ConfigUpdates      *prometheus.CounterVec   // result: applied | rejected
	ConfigTimestamp    prometheus.Gauge

	mu       sync.Mutex
	variants map[string]*variantMetrics
}

// NewMetrics registers the proxy's metrics with reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_proxy_requests_total",
			Help: "Inference requests by virtual model, variant that answered and status (HTTP status, or gRPC code name).",
		}, []string{"model", "variant", "code"}),
		Duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "switchyard_proxy_request_duration_seconds",
			Help:    "Inference request latency through the proxy by virtual model and variant.",
			Buckets: []float64{.0005, .001, .002, .003, .005, .0075, .01, .015, .02, .03, .05, .075, .1, .2, .5, 1, 2, 5},
		}, []string{"model", "variant"}),
		UpstreamRetries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_proxy_upstream_retries_total",
			Help: "Upstream attempts that were retries.",
		}, []string{"model", "variant"}),
		UpstreamErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_proxy_upstream_errors_total",
			Help: "Failed upstream attempts by kind: the trigger (connect_error, timeout, unavailable, not_serving, upstream_5xx, internal, refused, nan_output, bad_answer, overload, breaker_open), or budget_exhausted.",
		}, []string{"model", "variant", "kind"}),
		Ejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_proxy_upstream_ejections_total",
			Help: "Outlier ejections of upstream endpoints.",
		}, []string{"endpoint"}),
		Picks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_proxy_picks_total",
			Help: "Inference requests by virtual model, the variant they were routed to and why: random (the weighted split), sticky (the sticky key's bucket), override (the override header), pinned (the version named in the path or gRPC model_version).",
		}, []string{"model", "variant", "reason"}),
		Shed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_proxy_shed_total",
			Help: "Requests refused with 503 + Retry-After before the pipeline to protect the proxy, by reason: buffer (the buffered request bytes budget), concurrency (a version's spec.concurrency limit; the fallback chain may still answer these).",
		}, []string{"reason"}),
		AdminRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_proxy_admin_refused_total",
			Help: "Admin calls refused by reason: no_credential, bad_credential (the admin token), not_loopback (no token configured: loopback only).",
		}, []string{"reason"}),
		BreakerState: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "switchyard_proxy_breaker_state",
			Help: "Circuit breaker state per variant: 0 closed, 1 half-open, 2 open.",
		}, []string{"model", "variant"}),
		BreakerTransitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_proxy_breaker_transitions_total",
			Help: "Circuit breaker state changes per variant, by the state entered (closed, half-open, open).",
		}, []string{"model", "variant", "to"}),
		ConfigInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "switchyard_proxy_config_info",
			Help: "The active configuration: 1 for its version and source (xds, persisted, static).",
		}, []string{"version", "source"}),
		ConfigUpdates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_proxy_config_updates_total",
			Help: "Configuration updates by result (applied, rejected).",
		}, []string{"result"}),
		ConfigTimestamp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "switchyard_proxy_config_applied_timestamp_seconds",
			Help: "Unix time the active configuration was applied.",
		}),
		variants: map[string]*variantMetrics{},
	}
	if reg != nil {
		reg.MustRegister(m.Requests, m.Duration, m.UpstreamRetries, m.UpstreamErrors, m.Ejections, m.Picks, m.Shed, m.AdminRefused,
			m.BreakerState, m.BreakerTransitions, m.ConfigInfo, m.ConfigUpdates, m.ConfigTimestamp)
	}
	return m
}

// variantMetrics are one variant's pre-resolved series, so the hot path does
// no label lookups for common codes.
type variantMetrics struct {
	model, variant string
	duration       prometheus.Observer
	retries        prometheus.Counter
	picks          [routing.NumReasons]prometheus.Counter
	codes          map[string]prometheus.Counter // read-only after build
	parent         *Metrics
}

var commonCodes = []string{"200", "400", "404", "413", "429", "500", "502", "503", "504",
	"OK", "InvalidArgument", "NotFound", "Unavailable", "DeadlineExceeded", "Internal", "ResourceExhausted"}

func (m *Metrics) variant(model, variant string) *variantMetrics {
	m.mu.Lock()
	defer m.mu.Unlock()
	key := model + "\x00" + variant
	if v, ok := m.variants[key]; ok {
		return v
	}
	v := &variantMetrics{
		model: model, variant: variant, parent: m,
		duration: m.Duration.WithLabelValues(model, variant),
		retries:  m.UpstreamRetries.WithLabelValues(model, variant),
		codes:    map[string]prometheus.Counter{},
	}
	for _, c := range commonCodes {
		v.codes[c] = m.Requests.WithLabelValues(model, variant, c)
	}
	for r := range v.picks {
		v.picks[r] = m.Picks.WithLabelValues(model, variant, routing.Reason(r).String())
	}
	m.variants[key] = v
	return v
}

func (v *variantMetrics) request(code string, seconds float64) {
	if c, ok := v.codes[code]; ok {
		c.Inc()
	} else {
		v.parent.Requests.WithLabelValues(v.model, v.variant, code).Inc()
	}
	v.duration.Observe(seconds)
}

func (v *variantMetrics) upstreamError(kind string) {
	v.parent.UpstreamErrors.WithLabelValues(v.model, v.variant, kind).Inc()
}

// HTTPCode is the metrics label of an HTTP status without allocating for
// the common ones.
func HTTPCode(status int) string {
	switch status {
	case 200:
		return "200"
	case 400:
		return "400"
	case 404:
		return "404"
	case 413:
		return "413"
	case 429:
		return "429"
	case 500:
		return "500"
	case 502:
		return "502"
	case 503:
		return "503"
	case 504:
		return "504"
	}
	return strconv.Itoa(status)
}
