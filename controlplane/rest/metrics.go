package rest

import "github.com/prometheus/client_golang/prometheus"

// metrics of the API: requests by method, route pattern and code, and
// their latency.
type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

var latencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}

// newMetrics creates the API's metrics and registers them with reg (nil:
// not registered).
func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_controlplane_api_requests_total",
			Help: "REST API requests by method, route pattern and status code.",
		}, []string{"method", "route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "switchyard_controlplane_api_request_duration_seconds",
			Help: "REST API request latency by route pattern.", Buckets: latencyBuckets,
		}, []string{"route"}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.duration)
	}
	return m
}
