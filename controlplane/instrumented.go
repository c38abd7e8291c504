package controlplane

import (
	"context"
	"time"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/controlplane/store"
)

// timedStore measures every store call.
type timedStore struct {
	store.Store
	m *Metrics
}

func (s timedStore) observe(op string, start time.Time) {
	s.m.storeDuration.WithLabelValues(op).Observe(time.Since(start).Seconds())
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
	if storeFailure(err) {
		cause := "other"
		if outOfSpace(err) {
			cause = "no_space"
		}
		s.m.storeWriteErrs.WithLabelValues(op, cause).Inc()
	}
}

func (s timedStore) Put(ctx context.Context, m api.Model, pre store.Precondition, ch store.Change) (api.Record, error) {
	defer s.observe("put", time.Now())
	rec, err := s.Store.Put(ctx, m, pre, ch)
	s.written("put", err)
	return rec, err
}

func (s timedStore) Delete(ctx context.Context, name string, pre store.Precondition, ch store.Change) (api.Record, error) {
	defer s.observe("delete", time.Now())
	rec, err := s.Store.Delete(ctx, name, pre, ch)
	s.written("delete", err)
	return rec, err
}

func (s timedStore) UpdateSide(ctx context.Context, name string, ch store.Change) error {
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

func (s timedStore) Audit(ctx context.Context, q store.AuditQuery) ([]api.AuditEntry, error) {
	defer s.observe("audit", time.Now())
	return s.Store.Audit(ctx, q)
}
