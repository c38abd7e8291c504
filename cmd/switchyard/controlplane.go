package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/switchyard-dev/switchyard/controlplane"
	cpauth "github.com/switchyard-dev/switchyard/controlplane/auth"
	"github.com/switchyard-dev/switchyard/controlplane/canaryctl"
	"github.com/switchyard-dev/switchyard/routing/xdsconv"
)

func init() {
	register("controlplane", "desired state, REST API, xDS (ADS) server", runControlPlane)
}

func runControlPlane(args []string) error {
	fs := flag.NewFlagSet("controlplane", flag.ContinueOnError)
	state := fs.String("state", "switchyard-state.db", "bbolt `FILE` holding the desired state, its history and the audit log")
	api := fs.String("api", "127.0.0.1:7070", "REST API and /metrics listen `ADDR`")
	xds := fs.String("xds", "127.0.0.1:18000", "xDS (ADS gRPC) listen `ADDR`")
	tokens := fs.String("tokens", "", "bearer tokens `FILE` (YAML: tokens: [{subject, role: viewer|editor|operator, token}])")
	insecure := fs.Bool("insecure-loopback-no-auth", false, "no API authentication, every caller is operator \"anonymous\"; refused unless --api is a loopback address (local demo only)")
	listenerPort := fs.Uint("envoy-listener-port", xdsconv.DefaultListenerPort, "port of the Listener served to edge Envoys")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	canaryTick := fs.Duration("canary-interval", time.Second, "how often the canary controller judges running canaries")
	proxyAdminTokenFile := fs.String("proxy-admin-token-file", "", "`FILE` holding the proxies' admin token (their --admin-token-file), presented when the shadow report gathers their records")
	tlsFlags := addServerTLSFlags(fs, "the REST API and xDS (ADS and stats)")
	anonXDS := fs.Bool("xds-allow-anonymous", false, "with --tokens, still accept xDS and stats streams without a credential (a migration aid while proxies get certificates or tokens; presented credentials are still checked)")
	promURL := fs.String("prometheus", "", "read the canary's stats by PromQL from this Prometheus `URL` instead of the proxies' stats stream")
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
	if *listenerPort == 0 || *listenerPort > 65535 {
		return fmt.Errorf("--envoy-listener-port: want 1..65535, got %d", *listenerPort)
	}
	logger := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	proxyAdminToken, err := readTokenFile("--proxy-admin-token-file", *proxyAdminTokenFile)
	if err != nil {
		return err
	}

	tlsFiles, err := tlsFlags.files()
	if err != nil {
		return err
	}
	cfg := controlplane.Config{
		TLS:                    tlsFiles,
		AllowAnonymousXDS:      *anonXDS,
		StatePath:              *state,
		APIAddr:                *api,
		XDSAddr:                *xds,
		InsecureLoopbackNoAuth: *insecure,
		Listener:               xdsconv.Options{ListenerPort: uint32(*listenerPort)},
		Logger:                 logger,
		ProxyAdminToken:        proxyAdminToken,
	}
	if *tokens != "" {
		auth, err := cpauth.LoadTokens(*tokens)
		if err != nil {
			return err
		}
		cfg.Auth = auth
	}
	cp, err := controlplane.New(cfg)
	if err != nil {
		return err
	}
	copts := controlplane.CanaryOptions{Interval: *canaryTick}
	if *promURL != "" {
		copts.Source = canaryctl.NewPromSource(*promURL)
	}
	if _, err := cp.EnableCanary(copts); err != nil {
		cp.Close()
		return err
	}
	if *insecure {
		logger.Warn("API authentication is OFF (--insecure-loopback-no-auth): every caller is operator", "api", cp.APIAddr())
	}
	// SIGINT/SIGTERM cancel ctx: the control plane shuts itself down.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := cp.Start(ctx); err != nil {
		cp.Close()
		return err
	}
	err = cp.Wait(context.Background()) // a signal's shutdown, or a listener that failed
	logger.Info("shutting down")
	if cerr := cp.Close(); err == nil {
		err = cerr
	}
	return err
}
