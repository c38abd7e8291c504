package shadow

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the shadow package's Prometheus series, labelled by model,
// the mirrored-to version and kind (shadow | noise_floor). Build one per
// process with NewMetrics; a nil *Metrics records nothing.
type Metrics struct {
	mirrored  *prometheus.CounterVec
	dropped   *prometheus.CounterVec
	compared  *prometheus.CounterVec
	agreement *prometheus.CounterVec
	errors    *prometheus.CounterVec
	nan       *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	records   *prometheus.CounterVec
	batchJobs *prometheus.HistogramVec
}

// NewMetrics registers the series on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	l := []string{"model", "version", "kind"}
	m := &Metrics{
		mirrored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_shadow_mirrored_total", Help: "Requests put on the mirror queue.",
		}, l),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_shadow_dropped_total", Help: "Mirrors dropped (reason queue_full or closed).",
		}, append(l, "reason")),
		compared: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_shadow_compared_total", Help: "Pairs compared.",
		}, l),
		agreement: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_shadow_outputs_compared_total", Help: "Outputs compared by mode and result (agree | disagree).",
		}, append(l, "mode", "result")),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_shadow_errors_total", Help: "Pairs where one side failed: side shadow (shadow failed, primary answered), primary (the reverse) or both.",
		}, append(l, "side")),
		nan: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_shadow_nan_total", Help: "Answers with NaN/Inf outputs by side.",
		}, append(l, "side")),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "switchyard_shadow_latency_seconds", Help: "Latency of the primary and of the mirrored call, by side.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, append(l, "side")),
		records: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_shadow_records_total", Help: "Records written to the record file (result written | error).",
		}, []string{"model", "result"}),
	}
	m.batchJobs = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "switchyard_shadow_batch_jobs", Help: "Mirrored requests joined into one batched shadow call.",
		Buckets: []float64{2, 4, 8, 16, 32, 64, 128},
	}, l)
	reg.MustRegister(m.mirrored, m.dropped, m.compared, m.agreement, m.errors, m.nan, m.latency, m.records, m.batchJobs)
	return m
}

func (m *Metrics) observe(j *Job, c *Comparison, p, s Result) {
	if m == nil {
		return
	}
	l := []string{j.Model, j.TargetVersion, j.Kind}
	m.compared.WithLabelValues(l...).Inc()
	for _, d := range c.Outputs {
		res := "agree"
		if !d.Agree {
			res = "disagree"
		}
		m.agreement.WithLabelValues(j.Model, j.TargetVersion, j.Kind, string(d.Mode), res).Inc()
	}
	pFailed, sFailed := c.PrimaryError != "", c.ShadowError != ""
	switch {
	case pFailed && sFailed:
		m.errors.WithLabelValues(j.Model, j.TargetVersion, j.Kind, "both").Inc()
	case sFailed:
		m.errors.WithLabelValues(j.Model, j.TargetVersion, j.Kind, "shadow").Inc()
	case pFailed:
		m.errors.WithLabelValues(j.Model, j.TargetVersion, j.Kind, "primary").Inc()
	}
	if c.ShadowNaN {
		m.nan.WithLabelValues(j.Model, j.TargetVersion, j.Kind, "shadow").Inc()
	}
	if c.PrimaryNaN {
		m.nan.WithLabelValues(j.Model, j.TargetVersion, j.Kind, "primary").Inc()
	}
	m.latency.WithLabelValues(j.Model, j.TargetVersion, j.Kind, "primary").Observe(p.Latency.Seconds())
	if s.Err == nil {
		m.latency.WithLabelValues(j.Model, j.TargetVersion, j.Kind, "shadow").Observe(s.Latency.Seconds())
	}
}
