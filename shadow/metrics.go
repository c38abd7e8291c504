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
			Name: "switchyard_shadow_dropped_total", Help: "Mirrors dropped (reason queue_full, closed, prepare; with a shadow agent also agent_down, handoff_full, config).",
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

// seriesCache keeps the series a worker updates for every comparison, so
// that looking them up (hashing and checking the label values) is not paid
// per job. One per worker: not safe for concurrent use.
type seriesCache struct {
	m       *Metrics
	jobs    []jobSeries
	outputs []outputSeries
}

type jobSeries struct {
	model, version, kind string
	compared             prometheus.Counter
	primary, shadow      prometheus.Observer // latency; nil until first observed
}

type outputSeries struct {
	model, version, kind string
	mode                 Mode
	agree                bool
	c                    prometheus.Counter
}

// seriesCacheMax bounds each cache (a mirror has one model and at most two
// targets; more label sets than this are looked up each time).
const seriesCacheMax = 16

func (sc *seriesCache) job(j *Job) *jobSeries {
	for i := range sc.jobs {
		if s := &sc.jobs[i]; s.model == j.Model && s.version == j.TargetVersion && s.kind == j.Kind {
			return s
		}
	}
	m := sc.m
	s := jobSeries{model: j.Model, version: j.TargetVersion, kind: j.Kind,
		compared: m.compared.WithLabelValues(j.Model, j.TargetVersion, j.Kind)}
	if len(sc.jobs) < seriesCacheMax {
		sc.jobs = append(sc.jobs, s)
		return &sc.jobs[len(sc.jobs)-1]
	}
	return &s
}

func (sc *seriesCache) output(j *Job, mode Mode, agree bool) prometheus.Counter {
	for i := range sc.outputs {
		if s := &sc.outputs[i]; s.mode == mode && s.agree == agree && s.model == j.Model && s.version == j.TargetVersion && s.kind == j.Kind {
			return s.c
		}
	}
	res := "agree"
	if !agree {
		res = "disagree"
	}
	c := sc.m.agreement.WithLabelValues(j.Model, j.TargetVersion, j.Kind, string(mode), res)
	if len(sc.outputs) < seriesCacheMax {
		sc.outputs = append(sc.outputs, outputSeries{model: j.Model, version: j.TargetVersion, kind: j.Kind, mode: mode, agree: agree, c: c})
	}
	return c
}

func (sc *seriesCache) observe(j *Job, c *Comparison, p, s Result) {
	m := sc.m
	if m == nil {
		return
	}
	js := sc.job(j)
	js.compared.Inc()
	for _, d := range c.Outputs {
		sc.output(j, d.Mode, d.Agree).Inc()
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
	if js.primary == nil {
		js.primary = m.latency.WithLabelValues(j.Model, j.TargetVersion, j.Kind, "primary")
	}
	js.primary.Observe(p.Latency.Seconds())
	if s.Err == nil {
		if js.shadow == nil {
			js.shadow = m.latency.WithLabelValues(j.Model, j.TargetVersion, j.Kind, "shadow")
		}
		js.shadow.Observe(s.Latency.Seconds())
	}
}

// Dropped counts a mirror dropped before it reached a Mirror (e.g. the
// proxy's hand-off to its shadow agent: reason agent_down, handoff_full).
func (m *Metrics) Dropped(model, version, kind, reason string) {
	if m != nil {
		m.dropped.WithLabelValues(model, version, kind, reason).Inc()
	}
}
