package fallback

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the fallback package's Prometheus series. Build one per
// process with NewMetrics and hand it to the caches and coalescers; a nil *Metrics records nothing.
type Metrics struct {
	triggers       *prometheus.CounterVec
	fallbacks      *prometheus.CounterVec
	cacheHits      *prometheus.CounterVec
	cacheMisses    *prometheus.CounterVec
	cacheEvictions *prometheus.CounterVec
	cacheExpired   *prometheus.CounterVec
	cacheBytes     *prometheus.GaugeVec
	cacheEntries   *prometheus.GaugeVec
	coalesced      *prometheus.CounterVec
}

// NewMetrics registers the series on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		triggers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_fallback_triggers_total",
			Help: "Failed upstream attempts by model, version and trigger.",
		}, []string{"model", "version", "trigger"}),
		fallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_fallbacks_total",
			Help: "Requests answered by a fallback step (kind cache|backup|static|empty, or failed when every step failed), by trigger.",
		}, []string{"model", "kind", "trigger"}),
		cacheHits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_cache_hits_total",
			Help: "Prediction cache hits (cache is serving or last_good).",
		}, []string{"model", "cache"}),
		cacheMisses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_cache_misses_total",
			Help: "Prediction cache misses.",
		}, []string{"model", "cache"}),
		cacheEvictions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_cache_evictions_total",
			Help: "Prediction cache entries evicted to stay within the entry or byte bound.",
		}, []string{"model", "cache"}),
		cacheExpired: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_cache_expired_total",
			Help: "Prediction cache entries removed because their TTL passed.",
		}, []string{"model", "cache"}),
		cacheBytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "switchyard_cache_bytes",
			Help: "Bytes of responses held by the prediction cache.",
		}, []string{"model", "cache"}),
		cacheEntries: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "switchyard_cache_entries",
			Help: "Entries held by the prediction cache.",
		}, []string{"model", "cache"}),
		coalesced: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_coalesced_requests_total",
			Help: "Requests that shared another identical in-flight request's upstream call.",
		}, []string{"model"}),
	}
	reg.MustRegister(m.triggers, m.fallbacks,
		m.cacheHits, m.cacheMisses, m.cacheEvictions, m.cacheExpired, m.cacheBytes, m.cacheEntries, m.coalesced)
	return m
}

// Trigger counts one failed attempt of (model, version).
func (m *Metrics) Trigger(model, version string, t Trigger) {
	if m != nil && t != None {
		m.triggers.WithLabelValues(model, version, t.String()).Inc()
	}
}

// Fallback counts one request answered by step (or failed: step "failed")
// after trigger t.
func (m *Metrics) Fallback(model, kind string, t Trigger) {
	if m != nil {
		m.fallbacks.WithLabelValues(model, kind, t.String()).Inc()
	}
}
