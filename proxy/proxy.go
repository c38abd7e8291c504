// Package proxy is Switchyard's data plane: the sidecar that serves the Open
// Inference Protocol v2 (REST and gRPC) for virtual models, picks a version
// per request (routing.Picker), and calls the version's backends through
// pooled connections with a latency budget, retries within a budget, outlier
// ejection and a circuit breaker. Its configuration comes from the control
// plane over xDS (proxy/xdsclient), from a persisted last good configuration,
// or from Config.Models.
//
// Embedding it (e.g. in end-to-end tests):
//
//	p, err := proxy.New(proxy.Config{HTTPAddr: "127.0.0.1:0", GRPCAddr: "127.0.0.1:0",
//		AdminAddr: "127.0.0.1:0", XDSAddr: cpAddr, NodeID: "test", StateDir: dir})
//	err = p.Start(ctx)         // binds; p.HTTPAddr(), p.GRPCAddr(), p.AdminAddr()
//	err = p.Wait(ctx)          // a failed listener or xDS client (or ctx done)
//	defer p.Close()            // or Shutdown(ctx); cancelling Start's ctx drains too
//
// or without a control plane: Config.Models, or p.Apply(models, version, source).
package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/reflection"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/internal/h2"
	"github.com/switchyard-dev/switchyard/internal/lifecycle"
	"github.com/switchyard-dev/switchyard/internal/seclog"
	"github.com/switchyard-dev/switchyard/internal/tlsutil"
	"github.com/switchyard-dev/switchyard/oip"
	"github.com/switchyard-dev/switchyard/proxy/front"
	"github.com/switchyard-dev/switchyard/proxy/pipeline"
	"github.com/switchyard-dev/switchyard/proxy/report"
	"github.com/switchyard-dev/switchyard/proxy/upstream"
	"github.com/switchyard-dev/switchyard/proxy/xdsclient"
)

// Config configures a Proxy. Zero values get defaults; an empty address
// turns that listener off.
type Config struct {
	// HTTPAddr, GRPCAddr and AdminAddr are the listen addresses of the OIP
	// v2 REST front-end, the gRPC front-end and the admin server
	// (/metrics, /config_dump, /ready, /stats). Use 127.0.0.1:0 in tests.
	HTTPAddr, GRPCAddr, AdminAddr string

	// AdminToken, when set, is the bearer token the admin pages that
	// expose data or internals (/config_dump, /shadow/*, /fallback,
	// /debug/pprof/) require; without one they are served to loopback
	// clients only. /ready, /metrics and /stats stay open.
	AdminToken string

	// TLS, if set, serves the REST, gRPC and admin listeners over TLS
	// from these files, reloaded when they change (internal/tlsutil); with
	// TLS.CA set, clients must present a certificate that chains to it
	// (mTLS). Nil: plain TCP (the REST front-end on raw system calls).
	TLS *tlsutil.Files

	// ControlPlaneTLS, if set, dials the control plane's xDS and stats
	// streams over TLS: the control plane's certificate must chain to
	// ControlPlaneTLS.CA (the system roots when empty), and Cert/Key, when
	// set, are presented as the proxy's client certificate (mTLS; its
	// identity, spiffe://DOMAIN/proxy/NAME, must name NodeID). Nil:
	// plaintext.
	ControlPlaneTLS *tlsutil.Files
	// ControlPlaneToken, if set, is sent on the xDS and stats streams as
	// "authorization: Bearer <token>" (the control plane's --tokens file:
	// its subject must be NodeID).
	ControlPlaneToken string

	// UpstreamTLS, if set, is the default TLS to backends: their
	// certificates must chain to UpstreamTLS.CA, and Cert/Key, when set,
	// are presented (mTLS). A version's own spec.versions[].tls (from its
	// xDS cluster's transport_socket) takes precedence; tls.disabled
	// connects in plaintext. Nil: plaintext unless a version says
	// otherwise.
	UpstreamTLS *tlsutil.Files

	// XDSAddr is the control plane's ADS address (host:port); empty means
	// no xDS client (configure through Models or Apply).
	XDSAddr string
	// NodeID identifies this proxy to the control plane.
	NodeID string
	// StateDir, if set, holds the last good configuration; it is loaded at
	// Start so a proxy whose control plane is down still serves.
	StateDir string

	// Models is an initial static configuration (source "static").
	Models []api.Model

	// Features configures the prediction cache, fallback and shadow
	// policies (zero: defaults); each model's desired state says which it
	// uses.
	Features FeaturesConfig

	// Logger for structured logs (nil: discard). Successful requests are
	// logged one in LogSampleEvery (default 100); errors always.
	Logger         *slog.Logger
	LogSampleEvery int

	// Registry receives the metrics and is served at /metrics (nil: a new
	// registry).
	Registry *prometheus.Registry

	// TracerProvider records spans per request and per upstream attempt
	// (nil or no-op: incoming W3C trace context is passed to backends
	// unchanged, and nothing is recorded).
	TracerProvider trace.TracerProvider

	// Outlier ejection policy (zero: upstream.DefaultOutlier).
	Outlier upstream.Outlier
	// MaxBodyBytes bounds request bodies (default oip.DefaultMaxBodyBytes).
	MaxBodyBytes int64
	// MaxBufferedBytes bounds the bytes of request bodies held at once,
	// REST and gRPC, inflated bytes counted (default
	// DefaultMaxBufferedBytes; see proxy/pipeline/overload.go). MaxConnections caps the
	// connections of each listener (default DefaultMaxConnections;
	// negative: no cap).
	MaxBufferedBytes int64
	MaxConnections   int
	// GRPCTransport is the gRPC data path's HTTP/2: "" or GRPCLean
	// (internal/h2: the gRPC listener serves unary ModelInfer on its own
	// server, every other stream on grpc-go's; ModelInfer passed through
	// to a gRPC version goes on its lean client, TLS too), or GRPCGo
	// (grpc-go's transport for everything).
	GRPCTransport string
	// MaxIdleConnsPerEndpoint bounds each HTTP upstream pool (default 256).
	MaxIdleConnsPerEndpoint int
	// XDSBackoff bounds the reconnect backoff (default 100ms..5s).
	XDSBackoffMin, XDSBackoffMax time.Duration
	// StatsInterval is how often per-variant stats are reported to the
	// control plane's Stats service at StatsAddr (default XDSAddr) for the
	// canary (0: 1s; negative: off). See package report.
	StatsInterval time.Duration
	StatsAddr     string
	// ShutdownTimeout bounds every drain (Shutdown, Close, and the one
	// cancelling Start's ctx begins): the wait for requests in flight
	// (default DefaultShutdownTimeout).
	ShutdownTimeout time.Duration
}

// DefaultShutdownTimeout is Config.ShutdownTimeout's default.
const DefaultShutdownTimeout = 5 * time.Second

// Proxy is a running (or ready to start) sidecar.
type Proxy struct {
	cfg Config
	log *slog.Logger
	pl  *pipeline.Pipeline // the request pipeline the front-ends serve

	httpSrv   *front.FastServer
	grpcSrv   *grpc.Server
	h2Srv     *h2.Server // the lean gRPC server in front of grpcSrv (nil: grpcSrv serves)
	adminSrv  *http.Server
	listeners [3]net.Listener
	xds       *xdsclient.Client
	persisted string // path of the persisted config loaded at start ("" if none)
	reporter  *report.Reporter
	tlsSrv    *tlsutil.Server   // nil: plain listeners
	cpDial    []grpc.DialOption // the xDS and stats dials' TLS and token
	seclog    *seclog.Log       // the admin guard's refusals

	cancel  context.CancelFunc
	stopCtx func() bool // stops Start's ctx from shutting the proxy down
	wg      sync.WaitGroup
	closed  atomic.Bool
	// The first Shutdown's outcome, for every caller: stopped is closed
	// when it has finished.
	shutOnce sync.Once
	stopped  chan struct{}
	shutErr  error
	// failure is the first failure of a listener or the xDS client, for
	// Wait.
	failure lifecycle.Failure
}

// New checks cfg and builds a Proxy; Start binds and serves.
func New(cfg Config) (*Proxy, error) {
	switch cfg.GRPCTransport {
	case "", GRPCLean, GRPCGo:
	default:
		return nil, fmt.Errorf("proxy: unknown gRPC transport %q (%s or %s)", cfg.GRPCTransport, GRPCLean, GRPCGo)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = oip.DefaultMaxBodyBytes
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = DefaultShutdownTimeout
	}
	if cfg.MaxConnections == 0 {
		cfg.MaxConnections = DefaultMaxConnections
	}
	if cfg.XDSAddr != "" && cfg.NodeID == "" {
		return nil, errors.New("proxy: an xDS address needs a node id")
	}
	if cfg.XDSBackoffMin <= 0 {
		cfg.XDSBackoffMin = 100 * time.Millisecond
	}
	if cfg.XDSBackoffMax <= 0 {
		cfg.XDSBackoffMax = 5 * time.Second
	}
	p := &Proxy{
		stopped: make(chan struct{}),
		cfg:     cfg,
		log:     cfg.Logger,
	}
	p.seclog = seclog.New(seclog.Options{Component: "proxy-admin", Logger: cfg.Logger, Registerer: cfg.Registry})
	if cfg.TLS != nil {
		srv, err := tlsutil.NewServer(*cfg.TLS, tlsutil.ServerOptions{Name: "proxy", Logger: cfg.Logger, Metrics: tlsutil.NewMetrics(cfg.Registry)})
		if err != nil {
			return nil, fmt.Errorf("proxy: %w", err)
		}
		p.tlsSrv = srv
	}
	dial, err := controlPlaneDialOptions(cfg.ControlPlaneTLS, cfg.ControlPlaneToken, cfg.Logger)
	if err != nil {
		return nil, fmt.Errorf("proxy: control plane: %w", err)
	}
	p.cpDial = dial
	pl, err := pipeline.New(pipeline.Config{StateDir: cfg.StateDir, Features: cfg.Features, Logger: cfg.Logger,
		LogSampleEvery: cfg.LogSampleEvery, Registry: cfg.Registry, TracerProvider: cfg.TracerProvider, Outlier: cfg.Outlier,
		MaxBodyBytes: cfg.MaxBodyBytes, MaxBufferedBytes: cfg.MaxBufferedBytes, LeanGRPC: cfg.GRPCTransport != GRPCGo,
		MaxIdleConnsPerEndpoint: cfg.MaxIdleConnsPerEndpoint, UpstreamTLS: cfg.UpstreamTLS})
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	p.pl = pl
	if len(cfg.Models) > 0 {
		if err := p.Apply(cfg.Models, "static", SourceStatic); err != nil {
			return nil, fmt.Errorf("proxy: static models: %w", err)
		}
	}
	return p, nil
}

// Configuration sources.
const (
	SourceXDS       = "xds"
	SourcePersisted = "persisted"
	SourceStatic    = "static"
)

// Apply validates models and makes them the active configuration atomically.
// On error the active configuration is unchanged. Models are defaulted
// first; the slice is not modified.
func (p *Proxy) Apply(models []api.Model, version, source string) error {
	return p.pl.Apply(models, version, source)
}

// live reports whether the proxy has a configuration.
func (p *Proxy) live() bool {
	_, ok := p.pl.Live()
	return ok
}

// Models returns the active configuration (nil before the first one), its
// version and source.
func (p *Proxy) Models() ([]api.Model, string, string) {
	l, _ := p.pl.Live()
	return l.Models, l.Version, l.Source
}

// Route returns the compiled route of a model in the active configuration.
func (p *Proxy) Route(name string) *Route { return p.pl.Route(name) }

// Metrics returns the proxy's metrics.
func (p *Proxy) Metrics() *Metrics { return p.pl.Metrics() }

// Start binds the listeners, starts serving, loads the persisted
// configuration (if any and if nothing newer is active) and starts the xDS
// client. It returns once the listeners are bound. Cancelling ctx later
// drains the proxy as Shutdown does (bounded by Config.ShutdownTimeout);
// a ctx already done is an error.
func (p *Proxy) Start(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("proxy: start: %w", err)
	}
	if p.cfg.StateDir != "" && !p.live() {
		if err := p.loadPersisted(); err != nil {
			p.log.Warn("no usable persisted configuration", "dir", p.cfg.StateDir, "error", err)
		}
	}
	addrs := []string{p.cfg.HTTPAddr, p.cfg.GRPCAddr, p.cfg.AdminAddr}
	for i, a := range addrs {
		if a == "" {
			continue
		}
		l, err := net.Listen("tcp", a)
		if err != nil {
			for _, l := range p.listeners {
				if l != nil {
					l.Close()
				}
			}
			return fmt.Errorf("proxy: listen %s: %w", a, err)
		}
		if i < 2 {
			l = limitListener(l, p.cfg.MaxConnections)
		}
		if i == 2 && p.tlsSrv != nil {
			// REST serves TLS in its own server (h1), gRPC through its
			// credentials; the admin server is net/http on a TLS listener.
			l = tls.NewListener(l, p.tlsSrv.Config("http/1.1"))
		}
		p.listeners[i] = l
	}
	// The components run until Shutdown (the stats reporter's last report
	// goes out after ctx is done); ctx's cancellation starts Shutdown.
	startCtx := ctx
	ctx, p.cancel = context.WithCancel(context.WithoutCancel(ctx))
	if l := p.listeners[0]; l != nil {
		p.httpSrv = front.NewFastServer(p.pl, 0, 0, 0)
		if p.tlsSrv != nil {
			p.httpSrv.TLSConfig = p.tlsSrv.Config("http/1.1")
		}
		p.goServe(func() error { return p.httpSrv.Serve(l) })
	}
	if l := p.listeners[1]; l != nil {
		lean := p.cfg.GRPCTransport != GRPCGo
		gopts := append(front.GRPCServerOptions(), grpc.MaxRecvMsgSize(int(p.cfg.MaxBodyBytes)))
		if p.tlsSrv != nil && !lean {
			gopts = append(gopts, grpc.Creds(credentials.NewTLS(p.tlsSrv.Config("h2"))))
		}
		p.grpcSrv = grpc.NewServer(gopts...)
		front.RegisterGRPCFront(p.grpcSrv, p.pl)
		reflection.Register(p.grpcSrv) // grpcurl and friends work without the proto files
		if lean {
			var tc *tls.Config
			if p.tlsSrv != nil {
				tc = p.tlsSrv.Config("h2")
			}
			p.h2Srv = front.NewLeanGRPC(p.pl, p.grpcSrv, tc)
			p.goServe(func() error { return p.h2Srv.Serve(l) })
		} else {
			p.goServe(func() error { return p.grpcSrv.Serve(l) })
		}
	}
	if l := p.listeners[2]; l != nil {
		p.adminSrv = &http.Server{Handler: p.adminHandler(), ReadHeaderTimeout: 10 * time.Second}
		p.goServe(func() error { return p.adminSrv.Serve(l) })
	}
	if p.cfg.XDSAddr != "" {
		p.xds = xdsclient.New(xdsclient.Config{
			Addr:        p.cfg.XDSAddr,
			NodeID:      p.cfg.NodeID,
			Metadata:    p.xdsMetadata(),
			DialOptions: p.cpDial,
			Logger:      p.log,
			BackoffMin:  p.cfg.XDSBackoffMin,
			BackoffMax:  p.cfg.XDSBackoffMax,
			Apply: func(models []api.Model, version string) error {
				if err := p.Apply(models, version, SourceXDS); err != nil {
					return err
				}
				p.persist(models, version)
				return nil
			},
		})
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			if err := p.xds.Run(ctx); err != nil {
				p.fail(err)
			}
		}()
	}
	if (p.cfg.XDSAddr != "" || p.cfg.StatsAddr != "") && p.cfg.StatsInterval >= 0 {
		p.startReporter(ctx)
	}
	p.stopCtx = context.AfterFunc(startCtx, func() { _ = p.Shutdown(context.Background()) })
	return nil
}

func (p *Proxy) goServe(f func() error) {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		if err := f(); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, grpc.ErrServerStopped) && !p.closed.Load() {
			p.fail(fmt.Errorf("listener stopped: %w", err))
		}
	}()
}

// fail records a listener's or the xDS client's failure for Wait (the
// first one counts).
func (p *Proxy) fail(err error) {
	if p.failure.Fail(err) {
		p.log.Error("proxy component failed", "error", err)
	}
}

// Wait blocks until ctx is done (nil) or a listener or the xDS client has
// failed (its error); the caller then shuts the proxy down, as after a
// signal. Before, such a failure was only logged (the xDS client's not
// even that).
func (p *Proxy) Wait(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case <-p.failure.Done():
		return p.failure.Err()
	}
}

func addrOf(l net.Listener) string {
	if l == nil {
		return ""
	}
	return l.Addr().String()
}

// HTTPAddr is the bound REST address ("" if off or not started).
func (p *Proxy) HTTPAddr() string { return addrOf(p.listeners[0]) }

// GRPCAddr is the bound gRPC address.
func (p *Proxy) GRPCAddr() string { return addrOf(p.listeners[1]) }

// AdminAddr is the bound admin address.
func (p *Proxy) AdminAddr() string { return addrOf(p.listeners[2]) }

// XDSStatus reports the xDS client's state (zero value without xDS).
func (p *Proxy) XDSStatus() xdsclient.Status {
	if p.xds == nil {
		return xdsclient.Status{}
	}
	return p.xds.Status()
}

// Shutdown drains the proxy: the xDS client stops (the configuration stays
// as it is), every listener stops accepting at once, idle connections
// close (REST keep-alive connections at once, gRPC ones after a GOAWAY),
// requests in flight finish until ctx ends or Config.ShutdownTimeout has
// passed (then the rest are cut and the context's error is returned); then
// upstream connections and the policies close (the shadow mirrors drain
// their queues). The first call drains; a later or concurrent call waits
// for it (until its own ctx ends) and gets its result.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.shutOnce.Do(func() {
		defer close(p.stopped)
		if p.stopCtx != nil {
			p.stopCtx()
		}
		dctx, cancel := context.WithTimeout(ctx, p.cfg.ShutdownTimeout)
		defer cancel()
		p.shutErr = p.drain(dctx)
	})
	select {
	case <-p.stopped:
		return p.shutErr
	case <-ctx.Done():
		return ctx.Err()
	}
}

// drain is the first Shutdown's work.
func (p *Proxy) drain(ctx context.Context) error {
	p.closed.Store(true)
	if p.cancel != nil {
		p.cancel()
	}
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	stop := func(name string, f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
				mu.Unlock()
			}
		}()
	}
	if p.httpSrv != nil {
		stop("http drain", func() error { return p.httpSrv.Shutdown(ctx) })
	}
	if p.grpcSrv != nil {
		stop("grpc drain", func() error {
			if p.h2Srv != nil {
				// Its streams (grpcSrv's through ServeHTTP too) finish first.
				if err := p.h2Srv.Shutdown(ctx); err != nil {
					p.grpcSrv.Stop()
					return err
				}
			}
			stopped := make(chan struct{})
			go func() { p.grpcSrv.GracefulStop(); close(stopped) }()
			select {
			case <-stopped:
				return nil
			case <-ctx.Done():
				p.grpcSrv.Stop()
				<-stopped
				return ctx.Err()
			}
		})
	}
	if p.adminSrv != nil {
		stop("admin drain", func() error {
			if err := p.adminSrv.Shutdown(ctx); err != nil {
				p.adminSrv.Close() // e.g. a CPU profile still running
				return err
			}
			return nil
		})
	}
	// Past the bound, the calls still in flight upstream are cut with the
	// client connections (the servers' drains above wait for their
	// handlers): the drain never waits for a version's own timeout.
	drained := make(chan struct{})
	cutDone := make(chan struct{})
	go func() {
		defer close(cutDone)
		select {
		case <-ctx.Done():
			p.pl.CutUpstreams()
		case <-drained:
		}
	}()
	wg.Wait()
	p.wg.Wait()
	close(drained)
	<-cutDone
	errs = append(errs, p.pl.Close()) // upstream connections; the shadow mirrors drain
	return errors.Join(errs...)
}

// Close shuts down, the drain bounded by Config.ShutdownTimeout.
func (p *Proxy) Close() error {
	return p.Shutdown(context.Background())
}
