package backend

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/switchyard-dev/switchyard/internal/h1"
	"github.com/switchyard-dev/switchyard/internal/lifecycle"
	"github.com/switchyard-dev/switchyard/internal/tlsutil"
	"github.com/switchyard-dev/switchyard/oip"
)

// ServerConfig configures a Server: the backend and its two listeners.
type ServerConfig struct {
	Backend Options
	// HTTPAddr and GRPCAddr are listen addresses (port 0 picks a free
	// port); "" disables that transport.
	HTTPAddr string
	GRPCAddr string
	// MaxBodyBytes bounds REST bodies (413 beyond) and gRPC messages; 0
	// means oip.DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// Registry receives the metrics served at /metrics on the HTTP port;
	// nil creates one with the Go and process collectors.
	Registry *prometheus.Registry
	// ShutdownTimeout bounds the drain at shutdown: the wait for requests
	// in flight (default 10s).
	ShutdownTimeout time.Duration
	// ReadTimeout bounds reading a REST request's body (default 1m) and
	// its head (at most 10 s), so a client that stops sending mid-request
	// cannot hold a connection and its buffer forever. An idle kept-alive
	// connection is closed after 2 minutes.
	ReadTimeout time.Duration
	// TLS, if set, serves both listeners over TLS from these files,
	// reloaded when they change; with TLS.CA set, clients must present a
	// certificate that chains to it (mTLS). Nil: plain TCP.
	TLS *tlsutil.Files
	// Repository guards the model repository API (load, unload) and the
	// security log; the zero value turns them off (repoauth.go).
	Repository RepositoryAccess
}

// Server is a Backend on OIP v2 REST (with /metrics) and gRPC listeners.
type Server struct {
	Backend *Backend

	log      *slog.Logger
	cfg      ServerConfig
	httpLn   net.Listener
	grpcLn   net.Listener
	httpSrv  *h1.Server
	grpcSrv  *grpc.Server
	failure  lifecycle.Failure // the first listener failure, for Wait
	wg       sync.WaitGroup
	shutOnce sync.Once
	shutErr  error
	stopped  chan struct{} // closed when Shutdown is done
	started  bool
	stopCtx  func() bool // stops the shutdown on ctx's cancellation (Start)
}

// NewServer creates the backend (initialising ONNX Runtime) and binds the
// listeners; nothing is served until Start.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = oip.DefaultMaxBodyBytes
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 10 * time.Second
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = time.Minute
	}
	reg := cfg.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	if cfg.Backend.Metrics == nil {
		cfg.Backend.Metrics = NewMetrics(reg)
	}
	log := cfg.Backend.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
		cfg.Backend.Logger = log
	}
	var tlsSrv *tlsutil.Server
	if cfg.TLS != nil {
		var err error
		if tlsSrv, err = tlsutil.NewServer(*cfg.TLS, tlsutil.ServerOptions{Name: "backend", Logger: log, Metrics: tlsutil.NewMetrics(reg)}); err != nil {
			return nil, err
		}
	}
	guard, err := newRepoGuard(cfg.Repository, log, reg)
	if err != nil {
		return nil, err
	}
	b, err := New(cfg.Backend)
	if err != nil {
		return nil, err
	}
	s := &Server{Backend: b, log: log, cfg: cfg, stopped: make(chan struct{})}
	if cfg.HTTPAddr != "" {
		if s.httpLn, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
			return nil, fmt.Errorf("listen http %s: %w", cfg.HTTPAddr, err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
		opts := oip.HTTPOptions{MaxBodyBytes: cfg.MaxBodyBytes, Logger: log}
		mux.Handle("/", guard.http(oip.NewHTTPHandler(b, opts)))
		mux.Handle(SecurityEventsPath, guard.eventsHandler())
		// The lean HTTP/1.1 server (internal/h1): infer requests are
		// answered on its own buffers (oip.FastInfer), the rest of the
		// protocol and /metrics through the mux.
		s.httpSrv = &h1.Server{Fast: oip.FastInfer(b, opts), Handler: mux, MaxBodyBytes: cfg.MaxBodyBytes,
			HeadTimeout: min(10*time.Second, cfg.ReadTimeout), BodyTimeout: cfg.ReadTimeout, IdleTimeout: 2 * time.Minute}
		if tlsSrv != nil {
			s.httpSrv.TLSConfig = tlsSrv.Config("http/1.1")
		}
	}
	if cfg.GRPCAddr != "" {
		if s.grpcLn, err = net.Listen("tcp", cfg.GRPCAddr); err != nil {
			if s.httpLn != nil {
				s.httpLn.Close()
			}
			return nil, fmt.Errorf("listen grpc %s: %w", cfg.GRPCAddr, err)
		}
		gopts := []grpc.ServerOption{grpc.MaxRecvMsgSize(int(cfg.MaxBodyBytes)), grpc.MaxSendMsgSize(int(cfg.MaxBodyBytes)),
			grpc.UnaryInterceptor(guard.unary)}
		if tlsSrv != nil {
			gopts = append(gopts, grpc.Creds(credentials.NewTLS(tlsSrv.Config("h2"))))
		}
		s.grpcSrv = grpc.NewServer(gopts...)
		oip.RegisterGRPC(s.grpcSrv, b)
	}
	return s, nil
}

// HTTPAddr is the bound REST address ("" if disabled).
func (s *Server) HTTPAddr() string {
	if s.httpLn == nil {
		return ""
	}
	return s.httpLn.Addr().String()
}

// GRPCAddr is the bound gRPC address ("" if disabled).
func (s *Server) GRPCAddr() string {
	if s.grpcLn == nil {
		return ""
	}
	return s.grpcLn.Addr().String()
}

// Start serves both transports (live at once, ready once loading is done)
// and then loads every model in the repository; it returns when loading is
// done. Serving errors are reported by Wait. Cancelling ctx later shuts the
// server down gracefully (Shutdown); a ctx already done is an error.
func (s *Server) Start(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("backend: start: %w", err)
	}
	s.started = true
	s.log.Info("backend listening", "http", s.HTTPAddr(), "grpc", s.GRPCAddr(), "model_repository", s.cfg.Backend.ModelRepository)
	if s.httpSrv != nil {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := s.httpSrv.Serve(s.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.failure.Fail(fmt.Errorf("serve http: %w", err))
			}
		}()
	}
	if s.grpcSrv != nil {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := s.grpcSrv.Serve(s.grpcLn); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				s.failure.Fail(fmt.Errorf("serve grpc: %w", err))
			}
		}()
	}
	// Cancelling ctx drains the server as Shutdown does (bounded by
	// ShutdownTimeout).
	s.stopCtx = context.AfterFunc(ctx, func() { _ = s.Shutdown(context.Background()) })
	failed := s.Backend.LoadAll(ctx)
	s.log.Info("backend ready", "http", s.HTTPAddr(), "grpc", s.GRPCAddr(), "failed_models", failed)
	return nil
}

// Wait blocks until ctx is done, the server has shut down (Shutdown, or
// Start's ctx cancelled), or a listener fails; it returns the failure, if
// any.
func (s *Server) Wait(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case <-s.stopped:
	case <-s.failure.Done():
	}
	return s.failure.Err()
}

// Shutdown drains the server: both listeners stop accepting at once, idle
// connections close (REST keep-alive connections at once, gRPC ones after
// a GOAWAY), requests in flight finish (bounded by ctx and
// ShutdownTimeout; then the rest are cut and an error says so); then every
// model is unloaded. Every caller (and the cancellation of Start's ctx)
// gets the first drain's outcome once it is over.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutOnce.Do(func() {
		defer close(s.stopped)
		if s.stopCtx != nil {
			s.stopCtx()
		}
		ctx, cancel := context.WithTimeout(ctx, s.cfg.ShutdownTimeout)
		defer cancel()
		s.log.Info("backend draining", "timeout", s.cfg.ShutdownTimeout.String())
		s.Backend.ready.Store(false)
		s.Backend.closing.Store(true)
		if !s.started {
			for _, ln := range []net.Listener{s.httpLn, s.grpcLn} {
				if ln != nil {
					ln.Close()
				}
			}
		}
		var herr, gerr error
		var wg sync.WaitGroup
		if s.httpSrv != nil {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// Idle connections (spare ones that never sent a request
				// too) close at once; requests in flight finish, bounded
				// by ctx.
				if e := s.httpSrv.Shutdown(ctx); e != nil {
					herr = fmt.Errorf("http drain: %w", e)
				}
			}()
		}
		if s.grpcSrv != nil {
			wg.Add(1)
			go func() {
				defer wg.Done()
				done := make(chan struct{})
				go func() { s.grpcSrv.GracefulStop(); close(done) }()
				select {
				case <-done:
				case <-ctx.Done():
					s.grpcSrv.Stop()
					<-done
					gerr = fmt.Errorf("grpc drain: %w", ctx.Err())
				}
			}()
		}
		wg.Wait()
		s.shutErr = errors.Join(herr, gerr)
		s.wg.Wait()
		s.Backend.Close()
		s.log.Info("backend stopped")
	})
	return s.shutErr
}

// Run serves until ctx is cancelled (e.g. by SIGINT/SIGTERM in the
// command), then shuts down gracefully.
func Run(ctx context.Context, cfg ServerConfig) error {
	s, err := NewServer(cfg)
	if err != nil {
		return err
	}
	if err := s.Start(ctx); err != nil {
		return errors.Join(err, s.Shutdown(context.Background()))
	}
	werr := s.Wait(ctx)
	serr := s.Shutdown(context.WithoutCancel(ctx))
	return errors.Join(werr, serr)
}
