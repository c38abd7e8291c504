package controlplane

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics of the control plane. Build one per process (or per test) with
// NewMetrics; nothing is registered globally.
type Metrics struct {
	apiRequests     *prometheus.CounterVec
	apiDuration     *prometheus.HistogramVec
	storeDuration   *prometheus.HistogramVec
	storeWriteErrs  *prometheus.CounterVec
	snapshotVersion prometheus.Gauge
	snapshotErrors  prometheus.Counter
	connected       prometheus.GaugeFunc
	pushDuration    prometheus.Histogram
	ackLatency      prometheus.Histogram
	nacks           prometheus.Counter
	streamsRefused  *prometheus.CounterVec
}

var latencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}

// NewMetrics creates the control plane's metrics and registers them with
// reg (nil: not registered). connected reports the number of connected
// proxies when scraped (nil: 0).
func NewMetrics(reg prometheus.Registerer, connected func() int) *Metrics {
	if connected == nil {
		connected = func() int { return 0 }
	}
	m := &Metrics{
		apiRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_controlplane_api_requests_total",
			Help: "REST API requests by method, route pattern and status code.",
		}, []string{"method", "route", "code"}),
		apiDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "switchyard_controlplane_api_request_duration_seconds",
			Help: "REST API request latency by route pattern.", Buckets: latencyBuckets,
		}, []string{"route"}),
		storeDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "switchyard_controlplane_store_duration_seconds",
			Help: "State store operation latency by operation.", Buckets: latencyBuckets,
		}, []string{"op"}),
		storeWriteErrs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_controlplane_store_write_errors_total",
			Help: "State store writes that failed in the store itself (I/O: a full disk, a file size limit, a read-only file), by operation (put, delete, side) and cause (no_space, other); nothing of such a write is kept. Refused writes (conflicts, invalid documents) are not counted.",
		}, []string{"op", "cause"}),
		snapshotVersion: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "switchyard_controlplane_snapshot_version",
			Help: "Version (store revision) of the xDS snapshot being served.",
		}),
		snapshotErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchyard_controlplane_snapshot_errors_total",
			Help: "Store states that could not be turned into an xDS snapshot (the previous one stays).",
		}),
		connected: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "switchyard_controlplane_connected_proxies",
			Help: "xDS streams from identified proxies.",
		}, func() float64 { return float64(connected()) }),
		pushDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "switchyard_controlplane_push_duration_seconds",
			Help: "Time from a store change notification to the new snapshot being set (translated and handed to the streams).", Buckets: latencyBuckets,
		}),
		ackLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "switchyard_controlplane_ack_latency_seconds",
			Help: "Time from setting a snapshot to a proxy ACKing it (all its resource types).", Buckets: latencyBuckets,
		}),
		nacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchyard_controlplane_nacks_total",
			Help: "xDS responses rejected by proxies.",
		}),
		streamsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_controlplane_streams_refused_total",
			Help: "xDS (ads) and stats streams refused: no or a bad credential, or a node id / report proxy that is not the caller's identity.",
		}, []string{"service"}),
	}
	m.streamsRefused.WithLabelValues("ads")
	m.streamsRefused.WithLabelValues("stats")
	if reg != nil {
		reg.MustRegister(m.apiRequests, m.apiDuration, m.storeDuration, m.storeWriteErrs, m.snapshotVersion, m.snapshotErrors,
			m.connected, m.pushDuration, m.ackLatency, m.nacks, m.streamsRefused)
	}
	return m
}
