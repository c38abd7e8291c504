// Package xds is the control plane's xDS side: it watches the store,
// translates every revision into one state-of-the-world snapshot (the pure
// routing/xdsconv), serves it over ADS, tracks each proxy's ACK or NACK of
// it (Tracker), and authenticates and binds the xDS and stats streams
// (xdsauth.go). The stats service (controlplane/stats) is registered on
// the same gRPC server (GRPC), so proxies have one address.
package xds

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
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/api/statspb"
	"github.com/switchyard-dev/switchyard/controlplane/auth"
	"github.com/switchyard-dev/switchyard/controlplane/store"
	"github.com/switchyard-dev/switchyard/internal/seclog"
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

// Options of a Server.
type Options struct {
	// Store is the desired state the snapshots are made of.
	Store store.Store
	// Auth authenticates the streams' bearer tokens (nil: none).
	Auth *auth.Authenticator
	// AllowAnonymous accepts streams without a credential although Auth
	// takes tokens (Config.AllowAnonymousXDS); with an InsecureLoopback
	// Auth anonymous streams are accepted anyway.
	AllowAnonymous bool
	// Seclog records refused streams.
	Seclog *seclog.Log
	// Listener configures the Listener in the served xDS (edge Envoy).
	Listener xdsconv.Options
	// Logger (nil: discard).
	Logger *slog.Logger
	// Registerer for the metrics (nil: not registered).
	Registerer prometheus.Registerer
	// ServerOptions are added to the gRPC server's (e.g. TLS credentials).
	ServerOptions []grpc.ServerOption
}

// Server serves the store's state over ADS (state of the world) and
// republishes a snapshot on every store change.
type Server struct {
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

// New builds the server: its ACK tracker, metrics and gRPC server with
// ADS registered and every stream authenticated. ctx bounds the ADS
// streams. It serves once Serve is called on a listener and Run
// publishes.
func New(ctx context.Context, o Options) *Server {
	logger := o.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	tr := NewTracker(nil, nil)
	m := NewMetrics(o.Registerer, tr.Connected)
	tr.metrics = m
	x := &Server{
		store: o.Store, tracker: tr, metrics: m, log: logger, opts: o.Listener,
		cache:  cachev3.NewSnapshotCache(true, oneHash{}, slogAdapter{logger}),
		pushed: make(chan struct{}),
	}
	xa := &xdsAuth{auth: o.Auth, required: !o.Auth.Anonymous() && !o.AllowAnonymous, sec: o.Seclog, onRefuse: func(method string) {
		service := "ads"
		if method == statspb.Stats_Stream_FullMethodName {
			service = "stats"
		}
		m.streamsRefused.WithLabelValues(service).Inc()
	}}
	sopts := append(append([]grpc.ServerOption(nil), o.ServerOptions...), grpc.ChainStreamInterceptor(xa.streamInterceptor), grpc.ChainUnaryInterceptor(xa.unaryInterceptor))
	srv := serverv3.NewServer(ctx, x.cache, tr.Callbacks())
	x.grpc = grpc.NewServer(append([]grpc.ServerOption{
		grpc.MaxConcurrentStreams(1 << 20),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	}, sopts...)...)
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(x.grpc, srv)
	return x
}

// GRPC is the gRPC server (ADS; other services, such as the stats
// stream, register on it before Serve).
func (x *Server) GRPC() *grpc.Server { return x.grpc }

// Tracker reports the proxies' ACK/NACK state.
func (x *Server) Tracker() *Tracker { return x.tracker }

// Run publishes a snapshot for the current state and then after every
// store change until ctx is done. It returns once the watch channel closes.
func (x *Server) Run(ctx context.Context, ready chan<- struct{}) {
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
func (x *Server) publish(ctx context.Context) {
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

func (x *Server) fail(err error) {
	x.metrics.snapshotErrors.Inc()
	x.log.Error("xds snapshot not published", "err", err)
	x.mu.Lock()
	x.lastErr = err
	x.mu.Unlock()
}

// Version is the version of the snapshot being served.
func (x *Server) Version() int64 {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.version
}

// WaitPublished waits until a snapshot of at least version rev is served.
func (x *Server) WaitPublished(ctx context.Context, rev int64) error {
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
