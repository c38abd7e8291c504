package backend

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the backend's Prometheus metrics, labelled by model and
// version.
type Metrics struct {
	Requests     *prometheus.CounterVec   // switchyard_backend_requests_total{model,version}
	Failures     *prometheus.CounterVec   // switchyard_backend_request_failures_total{model,version,code}
	QueueSeconds *prometheus.HistogramVec // time waiting for a batch slot
	ComputeSecs  *prometheus.HistogramVec // time in ONNX Runtime (whole batch)
	RequestSecs  *prometheus.HistogramVec // end to end inside the backend
	BatchSize    *prometheus.HistogramVec // rows (dim 0) per ONNX Runtime run
	LoadSeconds  *prometheus.GaugeVec     // session creation time of the loaded version
	WarmupSecs   *prometheus.GaugeVec     // warm-up time of the loaded version
	ColdStart    *prometheus.GaugeVec     // load start to ready
	FirstRequest *prometheus.GaugeVec     // latency of the first request after ready
	Ready        *prometheus.GaugeVec     // 1 while the version is ready
	InFlight     *prometheus.GaugeVec     // requests inside the backend now (queued for a batch or running)
	Loads        *prometheus.CounterVec   // switchyard_backend_model_loads_total{model,result}
	Provider     *prometheus.GaugeVec     // switchyard_backend_model_execution_provider{model,version,requested,provider}: 1 while loaded
	QueueRejects *prometheus.CounterVec   // switchyard_backend_queue_rejections_total{model,version,reason}: queue_full, timeout
	QueueDepth   *prometheus.GaugeVec     // switchyard_backend_queue_depth{model,version}: requests waiting for an execution slot
	Refused      prometheus.Counter       // switchyard_backend_model_load_refused_total: loads of names the repository does not hold (no per-name series)
}

// NewMetrics creates the backend's metrics and registers them with reg (nil:
// not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	mv := []string{"model", "version"}
	lat := []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}
	m := &Metrics{
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_backend_requests_total", Help: "Inference requests per model version.",
		}, mv),
		Failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_backend_request_failures_total", Help: "Failed inference requests per model version and error code.",
		}, []string{"model", "version", "code"}),
		QueueSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "switchyard_backend_queue_seconds", Help: "Time a request waits in the batching queue before its run starts.", Buckets: lat,
		}, mv),
		ComputeSecs: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "switchyard_backend_compute_seconds", Help: "ONNX Runtime run time per request (the whole batch's run).", Buckets: lat,
		}, mv),
		RequestSecs: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "switchyard_backend_request_seconds", Help: "Inference time inside the backend: validation, queue, compute, split.", Buckets: lat,
		}, mv),
		BatchSize: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "switchyard_backend_batch_size", Help: "Rows (dimension 0) per ONNX Runtime run.",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256},
		}, mv),
		LoadSeconds: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "switchyard_backend_model_load_seconds", Help: "Time to create the ONNX Runtime session of the loaded version.",
		}, mv),
		WarmupSecs: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "switchyard_backend_model_warmup_seconds", Help: "Time the warm-up requests of the loaded version took.",
		}, mv),
		ColdStart: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "switchyard_backend_model_cold_start_seconds", Help: "Time from the start of loading to ready (load + warm-up).",
		}, mv),
		FirstRequest: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "switchyard_backend_model_first_request_seconds", Help: "Latency of the first real request after the version became ready.",
		}, mv),
		Ready: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "switchyard_backend_model_ready", Help: "1 while the model version is loaded and ready, else 0.",
		}, mv),
		InFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "switchyard_backend_inflight_requests",
			Help: "Inference requests inside the backend now, queued for a batch or running: the concurrency signal for autoscaling.",
		}, mv),
		Loads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_backend_model_loads_total", Help: "Model loads by result (ok, error).",
		}, []string{"model", "result"}),
		Provider: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "switchyard_backend_model_execution_provider",
			Help: "1 for each loaded model version: the execution provider its config asked for (requested) and the one it runs on (provider); requested=\"cuda\",provider=\"cpu\" is a CUDA fallback.",
		}, []string{"model", "version", "requested", "provider"}),
		QueueRejects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_backend_queue_rejections_total", Help: "Requests the model's queue policy rejected with 503 / UNAVAILABLE, by reason (queue_full, timeout).",
		}, []string{"model", "version", "reason"}),
		QueueDepth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "switchyard_backend_queue_depth", Help: "Requests waiting in the model's admission queue for an execution slot (models with a queue_policy).",
		}, mv),
		Refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchyard_backend_model_load_refused_total",
			Help: "Load calls for names that are not model folders of the repository (refused; no series per name).",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.Requests, m.Failures, m.QueueSeconds, m.ComputeSecs, m.RequestSecs, m.BatchSize,
			m.LoadSeconds, m.WarmupSecs, m.ColdStart, m.FirstRequest, m.Ready, m.InFlight, m.Loads, m.Provider, m.QueueRejects, m.QueueDepth, m.Refused)
	}
	return m
}

// versionMetrics holds one model version's curried metrics so the hot path
// does no label lookups.
type versionMetrics struct {
	requests      prometheus.Counter
	queue         prometheus.Observer
	compute       prometheus.Observer
	request       prometheus.Observer
	batch         prometheus.Observer
	inflight      prometheus.Gauge
	failuresByTag *prometheus.CounterVec
	queueRejects  *prometheus.CounterVec
	queueDepth    prometheus.Gauge
}

func (m *Metrics) forVersion(model, version string) versionMetrics {
	l := prometheus.Labels{"model": model, "version": version}
	return versionMetrics{
		requests:      m.Requests.With(l),
		queue:         m.QueueSeconds.With(l),
		compute:       m.ComputeSecs.With(l),
		request:       m.RequestSecs.With(l),
		batch:         m.BatchSize.With(l),
		inflight:      m.InFlight.With(l),
		failuresByTag: m.Failures.MustCurryWith(l),
		queueRejects:  m.QueueRejects.MustCurryWith(l),
		queueDepth:    m.QueueDepth.With(l),
	}
}
