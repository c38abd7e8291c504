// Package stats is what the proxies report, gathered for the canary
// analysis and for people: the statspb.Stats stream service (Service),
// registered on the xDS gRPC server, merging every proxy's per-second
// deltas into a canary.Window; the view of a version's figures the REST
// API and the canary status answer (VariantView); and the shadow report
// across proxies (ShadowReport), gathered from their admin pages.
package stats

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/switchyard-dev/switchyard/api"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/api/statspb"
	"github.com/switchyard-dev/switchyard/canary"
)

// Service is the control plane's end of the stats stream: the
// statspb.Stats gRPC service, registered on the xDS gRPC server (one
// address for proxies), merging every proxy's per-second deltas into a
// canary.Window. Reports are filed under the control plane's receive time
// (proxies' clocks may be skewed); (proxy/boot id, seq) dedupes resends; a
// proxy that stops reporting stops counting and its reports age out after
// the retention. It is a canaryctl.MetricSource.
type Service struct {
	statspb.UnimplementedStatsServer
	now     func() time.Time
	log     *slog.Logger
	metrics *statsMetrics

	mu  sync.Mutex
	win *canary.Window
}

type statsMetrics struct {
	reports *prometheus.CounterVec
	proxies prometheus.GaugeFunc
}

// liveAfter is how long a proxy counts as reporting after its last report.
const liveAfter = 5 * time.Second

// New creates the service: reports are kept for retention; now is the
// clock; its metrics are registered by Register.
func New(retention time.Duration, now func() time.Time, log *slog.Logger) *Service {
	s := &Service{now: now, log: log, win: canary.NewWindow(retention)}
	s.metrics = &statsMetrics{
		reports: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_controlplane_stats_reports_total",
			Help: "Stats reports from proxies by result (accepted, duplicate, rejected).",
		}, []string{"result"}),
		proxies: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "switchyard_controlplane_stats_reporting_proxies",
			Help: "Proxy processes that reported stats within the last 5s.",
		}, func() float64 { return float64(len(s.Proxies())) }),
	}
	return s
}

// Register puts the service's metrics on reg (once; the control plane
// does it when the canary controller that uses the service is running).
func (s *Service) Register(reg prometheus.Registerer) {
	reg.MustRegister(s.metrics.reports, s.metrics.proxies)
}

// Stream takes one proxy's reports and acknowledges each.
func (s *Service) Stream(st grpc.BidiStreamingServer[statspb.Report, statspb.Ack]) error {
	for {
		p, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		now := s.now()
		r, err := canary.ReportFromProto(p, now)
		if err != nil {
			s.metrics.reports.WithLabelValues("rejected").Inc()
			return status.Error(codes.InvalidArgument, err.Error())
		}
		s.mu.Lock()
		added := s.win.Add(r, now)
		s.mu.Unlock()
		if added {
			s.metrics.reports.WithLabelValues("accepted").Inc()
		} else {
			s.metrics.reports.WithLabelValues("duplicate").Inc()
		}
		if err := st.Send(&statspb.Ack{Seq: p.Seq}); err != nil {
			return err
		}
	}
}

// Add files a report directly (in-process reporters, tests).
func (s *Service) Add(r canary.Report) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.win.Add(r, s.now())
}

// Stats sums the reports of (model, version) received in (from, to].
func (s *Service) Stats(_ context.Context, model, version string, from, to time.Time) (canary.Stats, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.win.Prune(s.now())
	return s.win.Stats(model, version, from, to), nil
}

// Proxies lists the proxy processes ("node/bootID") that reported within
// the last 5 s.
func (s *Service) Proxies() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.win.Proxies(s.now(), liveAfter)
}

// VariantView is a version's figures as the API shows them: counts,
// rates and latency percentiles.
func VariantView(version string, st *canary.Stats) api.VariantStatsView {
	v := api.VariantStatsView{Version: version, Requests: st.Requests, Errors: st.Errors, Fallbacks: st.Fallbacks, NaNOutputs: st.NaNOutputs,
		UpstreamFailures: st.UpstreamFailures, BackupAnswers: st.BackupAnswers,
		ShadowCompared: st.ShadowCompared, ShadowDisagreed: st.ShadowDisagreed,
		P50Ms: ms(st.Latency.Quantile(0.5)), P99Ms: ms(st.Latency.Quantile(0.99))}
	if st.Requests > 0 {
		v.ErrorRate = float64(st.FailureCount()) / float64(st.Requests)
		v.ClientErrorRate = float64(st.Errors[canary.ErrClient4xx]) / float64(st.Requests)
		v.UpstreamFailureRate = float64(st.UpstreamFailureCount()) / float64(st.Requests)
	}
	return v
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
