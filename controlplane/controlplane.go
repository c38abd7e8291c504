// Package controlplane is Switchyard's control plane: the desired state in a
// store (package controlplane/store), a REST API with roles and an audit
// log, and an xDS (ADS, state of the world) server that republishes a
// snapshot — translated by the pure routing/xdsconv — on every store change.
//
// This package wires the steps, one package each, and runs them:
//
//	controlplane/store      the desired state, its history, the audit log
//	controlplane/auth       tokens and roles (REST and xDS callers)
//	controlplane/xds        snapshot on every store change → ADS, ACK/NACK tracking, stream auth
//	controlplane/stats      the proxies' stats stream; the shadow report across proxies
//	controlplane/canaryctl  the canary controller: judges, writes weights to the store
//	controlplane/rest       the REST API over all of them
//
// Dependencies go one way: rest → canaryctl → stats, rest → xds (through
// small interfaces), each → store and auth; nothing imports rest.
//
// Embedding (tests, `switchyard up`):
//
//	cp, err := controlplane.New(controlplane.Config{
//		StatePath: filepath.Join(dir, "state.db"),
//		APIAddr:   "127.0.0.1:0",
//		XDSAddr:   "127.0.0.1:0",
//		InsecureLoopbackNoAuth: true, // or Tokens: auth
//	})
//	err = cp.Start(ctx)         // serves; the first snapshot is published
//	cp.APIURL()                 // "http://127.0.0.1:PORT"
//	cp.XDSAddr()                // "127.0.0.1:PORT"
//	cp.Store().Put(...)         // or the REST API
//	cp.Tracker().WaitForAck(ctx, version)
//	err = cp.Wait(ctx)          // until ctx ends, it stops, or a listener fails
//	defer cp.Close()            // or Shutdown(ctx); cancelling Start's ctx does it too
//
// Lifecycle, as the proxy's and the backend's: New binds; Start(ctx)
// serves (cancelling ctx shuts the control plane down gracefully); Wait
// reports how serving ended; Shutdown(ctx) drains; Close is Shutdown with
// DefaultShutdownTimeout.
package controlplane

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/switchyard-dev/switchyard/api"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/switchyard-dev/switchyard/controlplane/auth"
	"github.com/switchyard-dev/switchyard/controlplane/rest"
	"github.com/switchyard-dev/switchyard/controlplane/stats"
	"github.com/switchyard-dev/switchyard/controlplane/store"
	"github.com/switchyard-dev/switchyard/controlplane/xds"
	"github.com/switchyard-dev/switchyard/internal/lifecycle"
	"github.com/switchyard-dev/switchyard/internal/seclog"
	"github.com/switchyard-dev/switchyard/internal/tlsutil"
	"github.com/switchyard-dev/switchyard/routing/xdsconv"
)

// Config of a control plane.
type Config struct {
	// StatePath is the bbolt state file (used when Store is nil).
	StatePath string
	// ProxyAdminToken is the proxies' admin token (their
	// --admin-token-file), presented when the shadow report gathers their
	// records ("": none; proxies then serve loopback callers only).
	ProxyAdminToken string
	// Store, when set, is used instead of opening StatePath (e.g. etcd).
	// The control plane closes it on Close.
	Store store.Store
	// APIAddr and XDSAddr are listen addresses ("127.0.0.1:0" picks a port).
	APIAddr string
	XDSAddr string
	// Auth authenticates API callers (see auth.LoadTokens). Required unless
	// InsecureLoopbackNoAuth.
	Auth *auth.Authenticator
	// InsecureLoopbackNoAuth lets every API caller in as operator
	// "anonymous". New refuses it unless APIAddr is a loopback address.
	InsecureLoopbackNoAuth bool
	// TLS, if set, serves the REST API and the xDS (ADS and stats)
	// listeners over TLS from these files, reloaded when they change
	// (internal/tlsutil). With TLS.CA set, clients of both must present a
	// certificate that chains to it (mTLS); proxies' certificates then
	// identify them on xDS (controlplane/xds), and the control plane presents
	// its own certificate to the proxies' admin pages (shadow report).
	TLS *tlsutil.Files
	// AllowAnonymousXDS accepts xDS and stats streams without a
	// credential although the API takes tokens (a migration aid while
	// proxies get their certificates or tokens; presented credentials are
	// still checked and bind the stream). Without tokens
	// (InsecureLoopbackNoAuth) anonymous streams are accepted anyway.
	AllowAnonymousXDS bool
	// Listener configures the Listener in the served xDS (edge Envoy).
	Listener xdsconv.Options
	// MaxBodyBytes caps API request bodies (0: 1 MiB).
	MaxBodyBytes int64
	// Logger (nil: discard).
	Logger *slog.Logger
	// Registerer and Gatherer for metrics; nil: a private registry, served
	// on /metrics.
	Registerer prometheus.Registerer
	Gatherer   prometheus.Gatherer
}

// ControlPlane is a running (or ready to run) control plane.
type ControlPlane struct {
	cfg   Config
	store store.Store // as opened (closed on Shutdown)
	timed store.Store // instrumented: what every step uses
	xds   *xds.Server
	api   *rest.API
	log   *slog.Logger
	// proxyTLS presents this control plane's certificate to the proxies'
	// admin pages (nil: none).
	proxyTLS *tls.Config
	// canary is set by EnableCanary.
	canary bool

	apiLn, xdsLn net.Listener
	httpSrv      *http.Server
	tlsSrv       *tlsutil.Server // nil: plaintext
	seclog       *seclog.Log     // refused API calls and xDS/stats streams

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
	// stopped is closed when Shutdown has finished (shutErr is its result).
	stopped chan struct{}
	shutErr error
	// failure is the first listener failure, for Wait.
	failure lifecycle.Failure
}

// DefaultShutdownTimeout bounds Close, and the shutdown that cancelling
// Start's ctx begins: API requests in flight get this long to finish.
const DefaultShutdownTimeout = 5 * time.Second

// New opens the store and binds both listeners (so the addresses are known
// before Start). It does not serve yet.
func New(cfg Config) (*ControlPlane, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	switch {
	case cfg.InsecureLoopbackNoAuth && !auth.IsLoopback(cfg.APIAddr):
		return nil, fmt.Errorf("--insecure-loopback-no-auth needs a loopback --api address (127.0.0.1, ::1, localhost), got %q", cfg.APIAddr)
	case cfg.InsecureLoopbackNoAuth && cfg.Auth != nil:
		return nil, errors.New("give either tokens or --insecure-loopback-no-auth, not both")
	case cfg.InsecureLoopbackNoAuth:
		cfg.Auth = auth.InsecureLoopback()
	case cfg.Auth == nil:
		return nil, errors.New("no API authentication: give --tokens FILE (or --insecure-loopback-no-auth on a loopback --api address)")
	}
	if cfg.APIAddr == "" || cfg.XDSAddr == "" {
		return nil, errors.New("both the API and the xDS listen addresses are required")
	}
	if cfg.Registerer == nil && cfg.Gatherer == nil {
		reg := prometheus.NewRegistry()
		cfg.Registerer, cfg.Gatherer = reg, reg
	}
	var tlsSrv *tlsutil.Server // the files load before the store opens
	if cfg.TLS != nil {
		srv, err := tlsutil.NewServer(*cfg.TLS, tlsutil.ServerOptions{Name: "controlplane", Logger: cfg.Logger, Metrics: tlsutil.NewMetrics(cfg.Registerer)})
		if err != nil {
			return nil, err
		}
		tlsSrv = srv
	}
	st := cfg.Store
	if st == nil {
		if cfg.StatePath == "" {
			return nil, errors.New("no state: give --state FILE")
		}
		b, err := store.OpenBolt(cfg.StatePath, store.BoltOptions{})
		if err != nil {
			return nil, err
		}
		st = b
	}
	cp := &ControlPlane{cfg: cfg, store: st, log: cfg.Logger, stopped: make(chan struct{})}
	var sopts []grpc.ServerOption
	if tlsSrv != nil {
		cp.tlsSrv = tlsSrv
		sopts = append(sopts, grpc.Creds(credentials.NewTLS(tlsSrv.Config("h2"))))
	}
	cp.ctx, cp.cancel = context.WithCancel(context.Background())
	cp.seclog = seclog.New(seclog.Options{Component: "controlplane", Logger: cfg.Logger, Registerer: cfg.Registerer})
	cp.timed = store.Instrument(st, cfg.Registerer)
	cp.xds = xds.New(cp.ctx, xds.Options{Store: cp.timed, Auth: cfg.Auth, AllowAnonymous: cfg.AllowAnonymousXDS, Seclog: cp.seclog,
		Listener: cfg.Listener, Logger: cfg.Logger.With("component", "xds"), Registerer: cfg.Registerer, ServerOptions: sopts})
	if cfg.TLS != nil && cfg.TLS.CA != "" {
		// The proxies' admin pages (https when they serve TLS) are asked
		// with this control plane's own certificate, checked against
		// the same CA.
		cc, err := tlsutil.NewClientConfig(*cfg.TLS, tlsutil.ClientOptions{Logger: cfg.Logger})
		if err != nil {
			cp.abort()
			return nil, err
		}
		cp.proxyTLS = cc
	}
	cp.api = rest.New(rest.Options{Store: cp.timed, Auth: cfg.Auth, Snapshots: cp.xds, Proxies: cp.xds.Tracker(),
		Gatherer: cfg.Gatherer, Registerer: cfg.Registerer, Logger: cfg.Logger.With("component", "api"), MaxBodyBytes: cfg.MaxBodyBytes,
		Shadow: stats.ShadowGatherer{Token: cfg.ProxyAdminToken, TLS: cp.proxyTLS}, Seclog: cp.seclog})

	var err error
	if cp.apiLn, err = net.Listen("tcp", cfg.APIAddr); err != nil {
		cp.abort()
		return nil, fmt.Errorf("listen on API address: %w", err)
	}
	if cp.tlsSrv != nil {
		cp.apiLn = tls.NewListener(cp.apiLn, cp.tlsSrv.Config("http/1.1"))
	}
	if cp.xdsLn, err = net.Listen("tcp", cfg.XDSAddr); err != nil {
		cp.abort()
		return nil, fmt.Errorf("listen on xDS address: %w", err)
	}
	cp.httpSrv = &http.Server{
		Handler:           cp.api,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
	}
	return cp, nil
}

func (cp *ControlPlane) abort() {
	cp.cancel()
	if cp.apiLn != nil {
		cp.apiLn.Close()
	}
	cp.store.Close()
}

// Start serves the API and xDS in the background and returns once the first
// snapshot (of the stored state) is published. Cancelling ctx shuts the
// control plane down gracefully, as Shutdown does (bounded by
// DefaultShutdownTimeout); Wait returns then. A ctx done before the first
// snapshot fails Start (the control plane is shut down).
func (cp *ControlPlane) Start(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		cp.Close()
		return fmt.Errorf("start control plane: %w", err)
	}
	ready := make(chan struct{})
	cp.wg.Add(3)
	go func() {
		defer cp.wg.Done()
		cp.xds.Run(cp.ctx, ready)
	}()
	go func() {
		defer cp.wg.Done()
		if err := cp.xds.GRPC().Serve(cp.xdsLn); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			cp.fail(fmt.Errorf("serve xds on %s: %w", cp.xdsLn.Addr(), err))
		}
	}()
	go func() {
		defer cp.wg.Done()
		if err := cp.httpSrv.Serve(cp.apiLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			cp.fail(fmt.Errorf("serve api on %s: %w", cp.apiLn.Addr(), err))
		}
	}()
	// Not in wg: it calls Shutdown, which waits for wg.
	go func() {
		select {
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.Background(), DefaultShutdownTimeout)
			defer cancel()
			if err := cp.Shutdown(sctx); err != nil {
				cp.log.Error("control plane shutdown", "err", err)
			}
		case <-cp.stopped:
		}
	}()
	select {
	case <-ready:
	case <-ctx.Done():
		return fmt.Errorf("start control plane: %w", ctx.Err())
	case <-cp.failure.Done():
		cp.Close()
		return cp.failure.Err()
	case <-time.After(30 * time.Second):
		cp.Close()
		return errors.New("first xDS snapshot not published within 30s")
	}
	cp.log.Info("control plane started", "api", cp.APIAddr(), "xds", cp.XDSAddr(), "snapshotVersion", cp.xds.Version())
	return nil
}

// fail records a listener's failure for Wait (the first one counts).
func (cp *ControlPlane) fail(err error) {
	if cp.failure.Fail(err) {
		cp.log.Error("control plane listener failed", "err", err)
	}
}

// Wait blocks until ctx is done, the control plane has stopped (Start's ctx
// cancelled, Shutdown, Close) or a listener failed, and returns the
// listener's error (nil otherwise). After a listener failure the caller
// shuts the control plane down.
func (cp *ControlPlane) Wait(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case <-cp.stopped:
	case <-cp.failure.Done():
	}
	return cp.failure.Err()
}

// Shutdown stops serving: the canary controller and snapshot publishing
// stop, the API stops accepting and its requests in flight finish (bounded
// by ctx; then the rest are cut and the error says so), open xDS streams
// end (proxies keep their last configuration), the goroutines are waited
// for and the store is closed. Later calls return the first call's result.
func (cp *ControlPlane) Shutdown(ctx context.Context) error {
	cp.once.Do(func() {
		defer close(cp.stopped)
		cp.cancel()
		var errs []error
		if err := cp.httpSrv.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("api drain: %w", err))
			cp.httpSrv.Close()
		}
		cp.xds.GRPC().Stop()
		cp.xdsLn.Close()
		cp.apiLn.Close()
		if err := cp.store.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close store: %w", err))
		}
		cp.wg.Wait()
		cp.shutErr = errors.Join(errs...)
	})
	<-cp.stopped
	return cp.shutErr
}

// Close is Shutdown bounded by DefaultShutdownTimeout.
func (cp *ControlPlane) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), DefaultShutdownTimeout)
	defer cancel()
	return cp.Shutdown(ctx)
}

// APIAddr is the bound API address (host:port).
func (cp *ControlPlane) APIAddr() string { return cp.apiLn.Addr().String() }

// APIURL is "http://" + APIAddr ("https://" with TLS).
func (cp *ControlPlane) APIURL() string {
	if cp.tlsSrv != nil {
		return "https://" + cp.APIAddr()
	}
	return "http://" + cp.APIAddr()
}

// XDSAddr is the bound xDS (ADS gRPC) address.
func (cp *ControlPlane) XDSAddr() string { return cp.xdsLn.Addr().String() }

// Store is the (instrumented) store, for in-process changes.
func (cp *ControlPlane) Store() store.Store { return cp.timed }

// Tracker reports proxies' ACK/NACK state (WaitForAck, Status, Proxies).
func (cp *ControlPlane) Tracker() *xds.Tracker { return cp.xds.Tracker() }

// API is the REST API handler; later features register endpoints with
// API().Handle before Start.
func (cp *ControlPlane) API() *rest.API { return cp.api }

// SnapshotVersion is the store revision of the snapshot being served.
func (cp *ControlPlane) SnapshotVersion() int64 { return cp.xds.Version() }

// WaitApplied waits until the snapshot of store revision rev (or newer) is
// served and every connected proxy has ACKed or NACKed it, or ctx is done.
func (cp *ControlPlane) WaitApplied(ctx context.Context, rev int64) api.AckResult {
	return cp.api.WaitApplied(ctx, rev)
}
