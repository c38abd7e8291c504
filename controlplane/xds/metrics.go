package xds

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics of the xDS server: snapshots, pushes, ACKs, NACKs, refused
// streams. Build one per process (or per test) with NewMetrics; nothing is
// registered globally.
type Metrics struct {
	snapshotVersion prometheus.Gauge
	snapshotErrors  prometheus.Counter
	connected       prometheus.GaugeFunc
	pushDuration    prometheus.Histogram
	ackLatency      prometheus.Histogram
	nacks           prometheus.Counter
	streamsRefused  *prometheus.CounterVec
}

var latencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}

// NewMetrics creates the xDS server's metrics and registers them with
// reg (nil: not registered). connected reports the number of connected
// proxies when scraped (nil: 0).
func NewMetrics(reg prometheus.Registerer, connected func() int) *Metrics {
	if connected == nil {
		connected = func() int { return 0 }
	}
	m := &Metrics{
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
		reg.MustRegister(m.snapshotVersion, m.snapshotErrors, m.connected, m.pushDuration, m.ackLatency, m.nacks, m.streamsRefused)
	}
	return m
}
