package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/switchyard-dev/switchyard/internal/tlsutil"
	"github.com/switchyard-dev/switchyard/oip"
	"github.com/switchyard-dev/switchyard/proxy"
	"github.com/switchyard-dev/switchyard/shadow/agent"
	"github.com/switchyard-dev/switchyard/telemetry"
)

func init() {
	register("proxy", "the sidecar: OIP v2 virtual endpoints driven by xDS", runProxy)
}

func runProxy(args []string) error {
	fs := flag.NewFlagSet("proxy", flag.ContinueOnError)
	xds := fs.String("xds", "127.0.0.1:18000", "control plane xDS (ADS) `ADDR`")
	httpAddr := fs.String("http", "127.0.0.1:8080", "OIP v2 REST listen `ADDR` (empty: off)")
	grpcAddr := fs.String("grpc", "127.0.0.1:8081", "OIP v2 gRPC listen `ADDR` (empty: off)")
	admin := fs.String("admin", "127.0.0.1:9901", "admin listen `ADDR`: /metrics, /config_dump, /ready, /stats, /debug/pprof/ (empty: off)")
	nodeID := fs.String("node-id", "", "`NAME` of this proxy at the control plane (default: the host name)")
	stateDir := fs.String("state-dir", "", "`DIR` keeping the last good configuration, served at start while the control plane is unreachable")
	shadowProcess := fs.String("shadow-process", proxy.ShadowAgent, "where mirrored requests are called and compared: agent (a child process of this binary at SCHED_IDLE priority, started with the first model that shadows and restarted if it dies; inline if it cannot start) or inline (in the proxy's process)")
	shadowPriority := fs.String("shadow-agent-priority", agent.PriorityIdle, "CPU priority of the shadow agent once started: idle (SCHED_IDLE: mirrors use only CPU nothing else wants, and stop on a saturated machine), low (nice 19) or normal (the proxy's)")
	shadowDir := fs.String("shadow-dir", "", "`DIR` for shadow diff records (<model>.jsonl, rotated; default: <state-dir>/shadow; none without either)")
	otlp := fs.String("otlp-endpoint", "", "OTLP/gRPC collector `ADDR` for traces (empty: tracing off; trace context is still passed on)")
	otlpInsecure := fs.Bool("otlp-insecure", true, "plaintext to the OTLP collector")
	sampleRatio := fs.Float64("trace-sample-ratio", 1, "share of root traces recorded when tracing is on")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	logEvery := fs.Int("log-success-every", 100, "log one successful request in `N` (errors are always logged)")
	adminTokenFile := fs.String("admin-token-file", "", "`FILE` holding the bearer token the admin pages that expose data or internals require (/config_dump, /shadow/*, /fallback, /debug/pprof/); without it they are served to loopback clients only")
	maxBody := fs.Int64("max-body-bytes", oip.DefaultMaxBodyBytes, "largest request body in `BYTES`, after decompression (413 above)")
	maxBuffered := fs.Int64("max-buffered-bytes", proxy.DefaultMaxBufferedBytes, "`BYTES` of request bodies held at once, REST and gRPC together, decompressed (503 with Retry-After above)")
	maxConns := fs.Int("max-connections", proxy.DefaultMaxConnections, "connections per listener (REST, gRPC) served at once; more wait to be accepted (`N`; -1: no cap)")
	grpcTransport := fs.String("grpc-transport", proxy.GRPCLean, "gRPC data path: lean (unary ModelInfer on Switchyard's own HTTP/2 server and, to gRPC versions, client; everything else on grpc-go) or grpc-go (grpc-go for all)")
	tlsFlags := addServerTLSFlags(fs, "REST, gRPC and admin")
	cpCA := fs.String("control-plane-ca", "", "dial the control plane's xDS and stats over TLS, its certificate checked against this CA `FILE` (PEM)")
	cpCert := fs.String("control-plane-cert", "", "client certificate `FILE` presented to the control plane (mTLS; its identity spiffe://DOMAIN/proxy/NAME must name --node-id); needs --control-plane-key and --control-plane-ca")
	cpKey := fs.String("control-plane-key", "", "the key `FILE` of --control-plane-cert")
	cpTokenFile := fs.String("control-plane-token-file", "", "`FILE` holding a bearer token of the control plane's --tokens file (its subject must be --node-id), sent on the xDS and stats streams")
	upCA := fs.String("upstream-ca", "", "default TLS to backends: their certificates must chain to this CA `FILE` (a version's own spec.versions[].tls takes precedence)")
	upCert := fs.String("upstream-cert", "", "client certificate `FILE` presented to backends (mTLS); needs --upstream-key and --upstream-ca")
	upKey := fs.String("upstream-key", "", "the key `FILE` of --upstream-cert")
	drain := fs.Duration("drain-timeout", 10*time.Second, "on SIGTERM or SIGINT: stop accepting, close idle connections and wait this long for requests in flight before cutting them (exit 0 when all finished)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level: %v", err)
	}
	if *shadowProcess != proxy.ShadowAgent && *shadowProcess != proxy.ShadowInline {
		return fmt.Errorf("--shadow-process: want agent or inline, got %q", *shadowProcess)
	}
	if _, err := agent.ParsePriority(*shadowPriority); err != nil {
		return fmt.Errorf("--shadow-agent-priority: %v", err)
	}
	if *maxBody <= 0 || *maxBuffered <= 0 {
		return fmt.Errorf("--max-body-bytes and --max-buffered-bytes: want > 0, got %d and %d", *maxBody, *maxBuffered)
	}
	if *maxBuffered < *maxBody {
		return fmt.Errorf("--max-buffered-bytes (%d) is below --max-body-bytes (%d): the largest allowed request could never be served", *maxBuffered, *maxBody)
	}
	if *maxConns == 0 || *maxConns < -1 {
		return fmt.Errorf("--max-connections: want > 0 or -1 (no cap), got %d", *maxConns)
	}
	adminToken, err := readTokenFile("--admin-token-file", *adminTokenFile)
	if err != nil {
		return err
	}
	tlsFiles, err := tlsFlags.files()
	if err != nil {
		return err
	}
	var cpTLS *tlsutil.Files
	switch {
	case (*cpCert != "") != (*cpKey != ""):
		return fmt.Errorf("--control-plane-cert and --control-plane-key go together")
	case *cpCert != "" && *cpCA == "":
		return fmt.Errorf("--control-plane-cert needs --control-plane-ca (the CA the control plane's certificate chains to)")
	case *cpCA != "":
		cpTLS = &tlsutil.Files{Cert: *cpCert, Key: *cpKey, CA: *cpCA}
	}
	var upTLS *tlsutil.Files
	switch {
	case (*upCert != "") != (*upKey != ""):
		return fmt.Errorf("--upstream-cert and --upstream-key go together")
	case *upCert != "" && *upCA == "":
		return fmt.Errorf("--upstream-cert needs --upstream-ca (the CA the backends' certificates chain to)")
	case *upCA != "":
		upTLS = &tlsutil.Files{Cert: *upCert, Key: *upKey, CA: *upCA}
	}
	cpToken, err := readTokenFile("--control-plane-token-file", *cpTokenFile)
	if err != nil {
		return err
	}
	if *drain <= 0 {
		return fmt.Errorf("--drain-timeout: want > 0, got %v", *drain)
	}
	if *logEvery < 1 {
		return fmt.Errorf("--log-success-every: want >= 1, got %d", *logEvery)
	}
	if *nodeID == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("--node-id not given and no host name: %v", err)
		}
		*nodeID = h
	}
	logger := telemetry.NewLogger(os.Stderr, telemetry.LogConfig{Level: level}).With("component", "proxy", "node", *nodeID)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	tp, shutdownTracing, err := telemetry.NewTracerProvider(ctx, telemetry.TracingConfig{
		ServiceName: "switchyard-proxy", OTLPEndpoint: *otlp, Insecure: *otlpInsecure, SampleRatio: *sampleRatio,
	})
	if err != nil {
		return err
	}
	p, err := proxy.New(proxy.Config{
		HTTPAddr: *httpAddr, GRPCAddr: *grpcAddr, AdminAddr: *admin,
		XDSAddr: *xds, NodeID: *nodeID, StateDir: *stateDir,
		Logger: logger, LogSampleEvery: *logEvery, TracerProvider: tp,
		MaxBodyBytes: *maxBody, MaxBufferedBytes: *maxBuffered, MaxConnections: *maxConns, AdminToken: adminToken,
		GRPCTransport: *grpcTransport,
		TLS:           tlsFiles, ControlPlaneTLS: cpTLS, ControlPlaneToken: cpToken, UpstreamTLS: upTLS,
		// Prediction cache, fallbacks and shadow mirroring: per model from
		// its desired state; a model without those sections pays nothing.
		Features: proxy.FeaturesConfig{ShadowDir: *shadowDir, ShadowProcess: *shadowProcess, ShadowAgentPriority: *shadowPriority},
		// The drain a signal begins (Start's ctx) and the one below are one.
		ShutdownTimeout: *drain,
	})
	if err != nil {
		return err
	}
	if err := p.Start(ctx); err != nil {
		return err
	}
	logger.Info("proxy serving", "http", p.HTTPAddr(), "grpc", p.GRPCAddr(), "admin", p.AdminAddr(), "xds", *xds)
	werr := p.Wait(ctx) // a signal (nil), or a listener or the xDS client that failed
	stop()              // a second signal ends the process at once; the drain has begun (Start's ctx)
	logger.Info("draining", "timeout", drain.String())
	start := time.Now()
	sctx, cancel := context.WithTimeout(context.Background(), *drain)
	defer cancel()
	err = p.Shutdown(sctx)
	if err != nil {
		err = fmt.Errorf("drain: %w", err)
	} else {
		logger.Info("drained", "seconds", time.Since(start).Seconds())
	}
	// The spans of the drained requests still go out (their own bound).
	tctx, tcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer tcancel()
	if terr := shutdownTracing(tctx); err == nil {
		err = terr
	}
	return errors.Join(werr, err)
}
