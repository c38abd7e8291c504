package backend_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/inference-backend/backend"
	"github.com/switchyard-dev/switchyard/inference-backend/demomodels"
)

func newTestServer(t *testing.T) *backend.Server {
	t.Helper()
	repo := t.TempDir()
	if err := demomodels.WriteRepository(repo); err != nil {
		t.Fatal(err)
	}
	s, err := backend.NewServer(backend.ServerConfig{
		Backend:  backend.Options{ModelRepository: repo, Version: "test"},
		HTTPAddr: "127.0.0.1:0", GRPCAddr: "127.0.0.1:0",
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestCancellingStartShutsDown: cancelling Start's ctx drains the server
// as Shutdown does: both listeners refuse, and a later Shutdown reports
// the same (finished) drain instead of starting another.
func TestCancellingStartShutsDown(t *testing.T) {
	s := newTestServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	httpAddr, grpcAddr := s.HTTPAddr(), s.GRPCAddr()
	for _, a := range []string{httpAddr, grpcAddr} {
		c, err := net.Dial("tcp", a)
		if err != nil {
			t.Fatalf("%s before the cancel: %v", a, err)
		}
		c.Close()
	}
	cancel()
	if err := s.Shutdown(context.Background()); err != nil { // waits for the drain the cancel began
		t.Fatalf("Shutdown after the cancel: %v", err)
	}
	for _, a := range []string{httpAddr, grpcAddr} {
		if c, err := net.DialTimeout("tcp", a, time.Second); err == nil {
			c.Close()
			t.Fatalf("%s still accepts after the cancel", a)
		}
	}
	wctx, wcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer wcancel()
	if err := s.Wait(wctx); err != nil || wctx.Err() != nil {
		t.Fatalf("Wait after the drain: %v (ctx %v), want it to return nil at once", err, wctx.Err())
	}
}

// TestStartWithDoneContextFails: a ctx already done is an error, not a
// server that serves until someone notices.
func TestStartWithDoneContextFails(t *testing.T) {
	s := newTestServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Start(ctx); err == nil || !errors.Is(err, context.Canceled) {
		t.Fatalf("Start with a done ctx: %v, want context.Canceled", err)
	}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if c, err := net.DialTimeout("tcp", s.HTTPAddr(), time.Second); err == nil {
		c.Close()
		t.Fatal("the listener of a server that never started still accepts")
	}
}
