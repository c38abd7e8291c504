package controlplane

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/log"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/controlplane/store"
	"github.com/switchyard-dev/switchyard/routing/xdsconv"
)

// allNodes is the one snapshot cache key: every proxy gets the same state
// of the world.
const allNodes = "switchyard"

type oneHash struct{}

func (oneHash) ID(*corev3.Node) string { return allNodes }

// slogAdapter adapts *slog.Logger to go-control-plane's log.Logger.
type slogAdapter struct{ l *slog.Logger }

func (a slogAdapter) Debugf(f string, args ...any) { a.l.Debug(fmt.Sprintf(f, args...)) }
func (a slogAdapter) Infof(f string, args ...any)  { a.l.Debug(fmt.Sprintf(f, args...)) } // chatty per request
func (a slogAdapter) Warnf(f string, args ...any)  { a.l.Warn(fmt.Sprintf(f, args...)) }
func (a slogAdapter) Errorf(f string, args ...any) { a.l.Error(fmt.Sprintf(f, args...)) }

var _ log.Logger = slogAdapter{}

// xdsServer serves the store's state over ADS (state of the world) and
// republishes a snapshot on every store change.
type xdsServer struct {
	store   store.Store
	cache   cachev3.SnapshotCache
	tracker *Tracker
	metrics *Metrics
	log     *slog.Logger
	opts    xdsconv.Options
	grpc    *grpc.Server

	mu      sync.Mutex
	version int64 // of the snapshot being served
	lastErr error
	pushed  chan struct{} // closed and replaced after each snapshot
}

func newXDSServer(ctx context.Context, st store.Store, tr *Tracker, m *Metrics, logger *slog.Logger, opts xdsconv.Options, sopts ...grpc.ServerOption) *xdsServer {
	x := &xdsServer{
		store: st, tracker: tr, metrics: m, log: logger, opts: opts,
		cache:  cachev3.NewSnapshotCache(true, oneHash{}, slogAdapter{logger}),
		pushed: make(chan struct{}),
	}
	srv := serverv3.NewServer(ctx, x.cache, tr.Callbacks())
	x.grpc = grpc.NewServer(append([]grpc.ServerOption{
		grpc.MaxConcurrentStreams(1 << 20),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	}, sopts...)...)
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(x.grpc, srv)
	return x
}

// run publishes a snapshot for the current state and then after every
// store change until ctx is done. It returns once the watch channel closes.
func (x *xdsServer) run(ctx context.Context, ready chan<- struct{}) {
	w := x.store.Watch(ctx)
	first := true
	for range w {
		x.publish(ctx)
		if first {
			close(ready)
			first = false
		}
	}
	if first {
		close(ready)
	}
}

// publish translates the store's current state into a snapshot and sets it.
// A state that cannot be translated leaves the previous snapshot in place.
func (x *xdsServer) publish(ctx context.Context) {
	start := time.Now()
	recs, rev, err := x.store.List(ctx)
	if err != nil {
		x.fail(fmt.Errorf("list store: %w", err))
		return
	}
	x.mu.Lock()
	stale := rev <= x.version && x.version != 0
	x.mu.Unlock()
	if stale {
		return
	}
	models := make([]api.Model, len(recs))
	for i, r := range recs {
		models[i] = r.Model
	}
	version := strconv.FormatInt(rev, 10)
	snap, err := x.opts.Snapshot(models, version)
	if err != nil {
		x.fail(fmt.Errorf("translate revision %d: %w", rev, err))
		return
	}
	if err := x.cache.SetSnapshot(ctx, allNodes, snap); err != nil {
		x.fail(fmt.Errorf("set snapshot %s: %w", version, err))
		return
	}
	now := time.Now()
	x.tracker.Pushed(rev, now)
	x.metrics.pushDuration.Observe(now.Sub(start).Seconds())
	x.metrics.snapshotVersion.Set(float64(rev))
	x.mu.Lock()
	x.version, x.lastErr = rev, nil
	close(x.pushed)
	x.pushed = make(chan struct{})
	x.mu.Unlock()
	x.log.Info("xds snapshot published", "version", version, "models", len(models), "proxies", x.tracker.Connected())
}

func (x *xdsServer) fail(err error) {
	x.metrics.snapshotErrors.Inc()
	x.log.Error("xds snapshot not published", "err", err)
	x.mu.Lock()
	x.lastErr = err
	x.mu.Unlock()
}

// Version is the version of the snapshot being served.
func (x *xdsServer) Version() int64 {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.version
}

// waitPublished waits until a snapshot of at least version rev is served.
func (x *xdsServer) waitPublished(ctx context.Context, rev int64) error {
	for {
		x.mu.Lock()
		v, ch := x.version, x.pushed
		x.mu.Unlock()
		if v >= rev {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}
