package controlplane

import (
	"context"
	"time"

	"github.com/switchyard-dev/switchyard/controlplane/store"
	"github.com/switchyard-dev/switchyard/routing"
)

// timedStore measures every store call.
type timedStore struct {
	store.Store
	m *Metrics
}

func (s timedStore) observe(op string, start time.Time) {
	s.m.storeDuration.WithLabelValues(op).Observe(time.Since(start).Seconds())
}

func (s timedStore) Get(ctx context.Context, name string) (store.Record, error) {
	defer s.observe("get", time.Now())
	return s.Store.Get(ctx, name)
}

func (s timedStore) List(ctx context.Context) ([]store.Record, int64, error) {
	defer s.observe("list", time.Now())
	return s.Store.List(ctx)
}

func (s timedStore) Put(ctx context.Context, m routing.Model, pre store.Precondition, ch store.Change) (store.Record, error) {
	defer s.observe("put", time.Now())
	return s.Store.Put(ctx, m, pre, ch)
}

func (s timedStore) Delete(ctx context.Context, name string, pre store.Precondition, ch store.Change) (store.Record, error) {
	defer s.observe("delete", time.Now())
	return s.Store.Delete(ctx, name, pre, ch)
}

func (s timedStore) History(ctx context.Context, name string, limit int) ([]store.Record, error) {
	defer s.observe("history", time.Now())
	return s.Store.History(ctx, name, limit)
}

func (s timedStore) Revision(ctx context.Context, name string, rev int64) (store.Record, error) {
	defer s.observe("revision", time.Now())
	return s.Store.Revision(ctx, name, rev)
}

func (s timedStore) Audit(ctx context.Context, q store.AuditQuery) ([]store.AuditEntry, error) {
	defer s.observe("audit", time.Now())
	return s.Store.Audit(ctx, q)
}
