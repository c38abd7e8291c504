// Package backendtest starts a real inference backend in-process for tests
// of other packages: real ONNX Runtime, real OIP v2 REST and gRPC listeners
// on 127.0.0.1 with free ports, serving the demo models (or a repository of
// your own).
//
//	be := backendtest.Start(t, backendtest.Options{})
//	// POST http://be.HTTPAddr/v2/models/recommender-v1/infer
//	// gRPC  be.GRPCAddr, inference.GRPCInferenceService/ModelInfer
//
// The ONNX Runtime library is found as the backend finds it: the
// SWITCHYARD_ORT_LIB environment variable, or third_party/onnxruntime/ above
// the working directory (`make setup` puts it there).
package backendtest

import (
	"context"
	"log/slog"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchyard-dev/switchyard/inference-backend/backend"
	"github.com/switchyard-dev/switchyard/inference-backend/demomodels"
	"github.com/switchyard-dev/switchyard/internal/tlsutil"
)

// Options configure Start. The zero value serves the demo models.
type Options struct {
	// Repository is the model repository to serve; "" writes the demo
	// models (demomodels.WriteRepository) into a fresh t.TempDir().
	Repository string
	// ConfigOverride, if set, adjusts each model's config after its
	// config.yaml is read (e.g. turn batching off, set warmup 0).
	ConfigOverride func(model string, cfg *backend.ModelConfig)
	// ExecutionProvider, if set ("cpu" or "cuda"), overrides every model's
	// execution_provider.
	ExecutionProvider string
	// MaxBodyBytes bounds request bodies (0: the oip default, 64 MiB).
	MaxBodyBytes int64
	// Logger receives the backend's logs; nil discards them.
	Logger *slog.Logger
	// Repository guards the repository API (load, unload); nil leaves it
	// open to any caller, as tests of other packages expect (a production
	// backend has it off unless a credential is configured).
	RepositoryAccess *backend.RepositoryAccess
	// TLS, if set, serves both listeners over TLS (mTLS with TLS.CA).
	TLS *tlsutil.Files
}

// Running is a started backend.
type Running struct {
	HTTPAddr   string // 127.0.0.1:port of OIP v2 REST (and /metrics)
	GRPCAddr   string // 127.0.0.1:port of OIP v2 gRPC
	Repository string // the repository folder served
	Server     *backend.Server
	Backend    *backend.Backend
	Registry   *prometheus.Registry // the metrics served at /metrics

	closeOnce sync.Once
}

// Close shuts the backend down gracefully (requests in flight finish). It
// is idempotent and also registered with t.Cleanup.
func (r *Running) Close() {
	r.closeOnce.Do(func() { _ = r.Server.Shutdown(context.Background()) })
}

// Start starts a backend on 127.0.0.1:0 (REST and gRPC), loads every model
// of the repository and returns once they are ready. It fails the test on
// any error.
func Start(t testing.TB, opts Options) *Running {
	t.Helper()
	repo := opts.Repository
	if repo == "" {
		repo = t.TempDir()
		if err := demomodels.WriteRepository(repo); err != nil {
			t.Fatalf("backendtest: write demo models: %v", err)
		}
	}
	reg := prometheus.NewRegistry()
	access := backend.RepositoryAccess{Open: true}
	if opts.RepositoryAccess != nil {
		access = *opts.RepositoryAccess
	}
	s, err := backend.NewServer(backend.ServerConfig{
		Backend: backend.Options{
			ModelRepository:   repo,
			ConfigOverride:    opts.ConfigOverride,
			ExecutionProvider: opts.ExecutionProvider,
			Logger:            opts.Logger,
			Version:           "test",
		},
		HTTPAddr:     "127.0.0.1:0",
		GRPCAddr:     "127.0.0.1:0",
		MaxBodyBytes: opts.MaxBodyBytes,
		Registry:     reg,
		TLS:          opts.TLS,
		Repository:   access,
	})
	if err != nil {
		t.Fatalf("backendtest: %v", err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	r := &Running{
		HTTPAddr:   s.HTTPAddr(),
		GRPCAddr:   s.GRPCAddr(),
		Repository: repo,
		Server:     s,
		Backend:    s.Backend,
		Registry:   reg,
	}
	t.Cleanup(r.Close)
	return r
}
