package store

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchyard-dev/switchyard/api"
)

var latencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}

// Instrument wraps st so that every call is timed
// (switchyard_controlplane_store_duration_seconds) and every write that
// fails in the store itself is counted
// (switchyard_controlplane_store_write_errors_total), registered with reg
// (nil: not registered).
func Instrument(st Store, reg prometheus.Registerer) Store {
	m := &storeMetrics{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "switchyard_controlplane_store_duration_seconds",
			Help: "State store operation latency by operation.", Buckets: latencyBuckets,
		}, []string{"op"}),
		writeErrs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_controlplane_store_write_errors_total",
			Help: "State store writes that failed in the store itself (I/O: a full disk, a file size limit, a read-only file), by operation (put, delete, side) and cause (no_space, other); nothing of such a write is kept. Refused writes (conflicts, invalid documents) are not counted.",
		}, []string{"op", "cause"}),
	}
	if reg != nil {
		reg.MustRegister(m.duration, m.writeErrs)
	}
	return timedStore{Store: st, m: m}
}

type storeMetrics struct {
	duration  *prometheus.HistogramVec
	writeErrs *prometheus.CounterVec
}

// timedStore measures every store call.
type timedStore struct {
	Store
	m *storeMetrics
}

func (s timedStore) observe(op string, start time.Time) {
	s.m.duration.WithLabelValues(op).Observe(time.Since(start).Seconds())
}

func (s timedStore) Get(ctx context.Context, name string) (api.Record, error) {
	defer s.observe("get", time.Now())
	return s.Store.Get(ctx, name)
}

func (s timedStore) List(ctx context.Context) ([]api.Record, int64, error) {
	defer s.observe("list", time.Now())
	return s.Store.List(ctx)
}

// written counts a write that failed in the store itself.
func (s timedStore) written(op string, err error) {
	if Failure(err) {
		cause := "other"
		if OutOfSpace(err) {
			cause = "no_space"
		}
		s.m.writeErrs.WithLabelValues(op, cause).Inc()
	}
}

func (s timedStore) Put(ctx context.Context, m api.Model, pre Precondition, ch Change) (api.Record, error) {
	defer s.observe("put", time.Now())
	rec, err := s.Store.Put(ctx, m, pre, ch)
	s.written("put", err)
	return rec, err
}

func (s timedStore) Delete(ctx context.Context, name string, pre Precondition, ch Change) (api.Record, error) {
	defer s.observe("delete", time.Now())
	rec, err := s.Store.Delete(ctx, name, pre, ch)
	s.written("delete", err)
	return rec, err
}

func (s timedStore) UpdateSide(ctx context.Context, name string, ch Change) error {
	defer s.observe("side", time.Now())
	err := s.Store.UpdateSide(ctx, name, ch)
	s.written("side", err)
	return err
}

func (s timedStore) Failed(ctx context.Context, name string) (map[string]api.FailedMark, error) {
	defer s.observe("failed", time.Now())
	return s.Store.Failed(ctx, name)
}

func (s timedStore) History(ctx context.Context, name string, limit int) ([]api.Record, error) {
	defer s.observe("history", time.Now())
	return s.Store.History(ctx, name, limit)
}

func (s timedStore) Revision(ctx context.Context, name string, rev int64) (api.Record, error) {
	defer s.observe("revision", time.Now())
	return s.Store.Revision(ctx, name, rev)
}

func (s timedStore) Audit(ctx context.Context, q AuditQuery) ([]api.AuditEntry, error) {
	defer s.observe("audit", time.Now())
	return s.Store.Audit(ctx, q)
}
