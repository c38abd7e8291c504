package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/switchyard-dev/switchyard/inference-backend/backend"
	"github.com/switchyard-dev/switchyard/inference-backend/demomodels"
	"github.com/switchyard-dev/switchyard/oip"
)

func init() {
	register("backend", "ONNX Runtime inference backend (OIP v2 REST + gRPC)", runBackend)
	register("demo-models", "write the demo model repository to --out DIR", runDemoModels)
}

func runBackend(args []string) error {
	fs := flag.NewFlagSet("switchyard backend", flag.ContinueOnError)
	repo := fs.String("model-repository", "", "model repository folder: DIR/<model>/<version>/model.onnx [+ DIR/<model>/config.yaml] (required)")
	httpAddr := fs.String("http", "127.0.0.1:8001", "OIP v2 REST (and /metrics) listen address; port 0 picks one; empty disables")
	grpcAddr := fs.String("grpc", "127.0.0.1:9001", "OIP v2 gRPC listen address; port 0 picks one; empty disables")
	ortLib := fs.String("ort-lib", "", "ONNX Runtime shared library (default: $"+backend.EnvORTLibrary+", else third_party/onnxruntime/libonnxruntime.so.1 above the working directory or the executable)")
	provider := fs.String("execution-provider", "", "override every model's execution provider: cpu or cuda (cuda falls back to cpu with a warning when unavailable)")
	maxBody := fs.Int64("max-body-bytes", oip.DefaultMaxBodyBytes, "largest REST body / gRPC message accepted (413 / RESOURCE_EXHAUSTED beyond)")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	drain := fs.Duration("drain-timeout", 10*time.Second, "on SIGTERM or SIGINT: stop accepting, close idle connections and wait this long for requests in flight before cutting them (exit 0 when all finished)")
	tlsFlags := addServerTLSFlags(fs, "REST and gRPC")
	tokenFile := fs.String("repository-token-file", "", "file holding a bearer token (at least 16 characters) accepted by the repository API's load/unload and "+backend.SecurityEventsPath+"; also $"+backend.EnvRepositoryToken)
	allow := fs.String("repository-allow", "", "mTLS identities (spiffe://... URI SAN or CN) accepted by the repository API, comma-separated; needs --tls-client-ca")
	open := fs.Bool("repository-api-open", false, "accept repository load/unload from anyone (development only); without it and without a credential the API is off")
	if err := fs.Parse(args); err != nil {
		return err
	}
	tlsFiles, err := tlsFlags.files()
	if err != nil {
		return err
	}
	access, err := repositoryAccess(*tokenFile, *allow, *open)
	if err != nil {
		return err
	}
	if len(access.Identities) > 0 && (tlsFiles == nil || tlsFiles.CA == "") {
		return fmt.Errorf("--repository-allow needs --tls-client-ca (identities come from verified client certificates)")
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if *repo == "" {
		return fmt.Errorf("--model-repository is required (try `switchyard demo-models --out DIR` for a demo repository)")
	}
	if *drain <= 0 {
		return fmt.Errorf("--drain-timeout: want > 0, got %v", *drain)
	}
	switch *provider {
	case "", "cpu", "cuda":
	default:
		return fmt.Errorf("--execution-provider: %q is not cpu or cuda", *provider)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level})).With("component", "backend")

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, stop) // draining: a second signal ends the process at once
	return backend.Run(ctx, backend.ServerConfig{
		Backend: backend.Options{
			ModelRepository:   *repo,
			ORTLibrary:        *ortLib,
			ExecutionProvider: *provider,
			Logger:            log,
		},
		HTTPAddr:        *httpAddr,
		GRPCAddr:        *grpcAddr,
		MaxBodyBytes:    *maxBody,
		ShutdownTimeout: *drain,
		TLS:             tlsFiles,
		Repository:      access,
	})
}

// repositoryAccess reads the repository API's credentials: the token of
// the file (readTokenFile) and $SWITCHYARD_REPOSITORY_TOKEN (two tokens
// at once let a rotation overlap), the allowed identities.
func repositoryAccess(tokenFile, allow string, open bool) (backend.RepositoryAccess, error) {
	a := backend.RepositoryAccess{Open: open, Identities: splitList(allow)}
	tok, err := readTokenFile("--repository-token-file", tokenFile)
	if err != nil {
		return a, err
	}
	if tok != "" {
		a.Tokens = append(a.Tokens, tok)
	}
	if t := strings.TrimSpace(os.Getenv(backend.EnvRepositoryToken)); t != "" {
		if len(t) < 16 {
			return a, fmt.Errorf("$%s: the token must be at least 16 characters, got %d", backend.EnvRepositoryToken, len(t))
		}
		a.Tokens = append(a.Tokens, t)
	}
	return a, nil
}

func runDemoModels(args []string) error {
	fs := flag.NewFlagSet("switchyard demo-models", flag.ContinueOnError)
	out := fs.String("out", "", "folder to write the demo model repository into (required)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" {
		return fmt.Errorf("--out is required")
	}
	if err := demomodels.WriteRepository(*out); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "wrote %s to %s\n", strings.Join(demomodels.Names, ", "), *out)
	return nil
}
