package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/api"
)

// TestWaitReportsXDSClientFailure: an xDS client that cannot start (an
// address gRPC cannot parse) is not silently dropped: Wait returns its
// error.
func TestWaitReportsXDSClientFailure(t *testing.T) {
	p := startProxy(t, Config{XDSAddr: "%", NodeID: "proxy-a", StatsInterval: -1})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := p.Wait(ctx)
	if err == nil || !strings.Contains(err.Error(), "xds") {
		t.Fatalf("Wait: %v, want the xDS client's error", err)
	}
}

// TestWaitReportsListenerFailure: a listener that stops accepting ends
// Wait with the error; a clean Shutdown does not count as a failure.
func TestWaitReportsListenerFailure(t *testing.T) {
	p := startProxy(t, Config{})
	p.listeners[2].Close() // the admin server's Serve fails
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Wait(ctx); err == nil || !strings.Contains(err.Error(), "listener stopped") {
		t.Fatalf("Wait: %v, want the admin listener's error", err)
	}

	q := startProxy(t, Config{})
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-q.failure.Done():
		t.Errorf("a clean shutdown counted as a failure: %v", q.failure.Err())
	default:
	}
}

// slowProxy serves model "slow" whose only version never answers (a
// blackhole endpoint): a request to it stays in flight until its timeout.
func slowProxy(t *testing.T, timeout, drain time.Duration) *Proxy {
	t.Helper()
	p, err := New(Config{HTTPAddr: "127.0.0.1:0", ShutdownTimeout: drain, Models: []api.Model{{Metadata: api.Metadata{Name: "slow"}, Spec: api.Spec{
		Versions:    []api.Version{{Name: "v1", Endpoints: []string{blackhole(t)}}},
		Traffic:     api.Traffic{Weights: map[string]int{"v1": 100}},
		Timeout:     api.Duration(timeout),
		Concurrency: &api.Concurrency{Limit: 10},
	}}}})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// sendSlow sends one request to "slow" on a connection of its own and
// returns the answer's status (0: no answer) once it comes.
func sendSlow(t *testing.T, p *Proxy) <-chan int {
	t.Helper()
	c, err := net.Dial("tcp", p.HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	b := inferBody(1)
	fmt.Fprintf(c, "POST /v2/models/slow/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", len(b), b)
	waitFor(t, "the request in flight", func() bool { return p.Route("slow").Variants[0].Limiter().InFlight() == 1 })
	status := make(chan int, 1)
	go func() {
		r, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			status <- 0
			return
		}
		r.Body.Close()
		status <- r.StatusCode
	}()
	return status
}

// TestCancellingStartShutsDown: cancelling Start's ctx drains the proxy
// as Shutdown does: the listener stops accepting, the request in flight
// still gets its answer, and a later Shutdown gets that drain's result.
func TestCancellingStartShutsDown(t *testing.T) {
	p := slowProxy(t, time.Second, 10*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	addr := p.HTTPAddr()
	answer := sendSlow(t, p)
	cancel()
	waitFor(t, "the listener to stop accepting", func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	if st := <-answer; st != 504 {
		t.Fatalf("the request in flight during the drain got %d, want its own timeout's 504", st)
	}
	sctx, scancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer scancel()
	if err := p.Shutdown(sctx); err != nil {
		t.Fatalf("Shutdown after the cancel-driven drain: %v, want its result (nil)", err)
	}
}

// TestStartWithDoneContextFails: a ctx already done is an error; nothing
// is bound.
func TestStartWithDoneContextFails(t *testing.T) {
	p, err := New(Config{HTTPAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.Start(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Start with a cancelled ctx: %v", err)
	}
	if p.HTTPAddr() != "" {
		t.Fatalf("bound %s", p.HTTPAddr())
	}
}

// TestShutdownCallersShareTheFirstDrain: the drain is bounded by
// Config.ShutdownTimeout, and every Shutdown caller, concurrent or later,
// gets the first drain's outcome (here: the request in flight outlived the
// bound and its connection was cut).
func TestShutdownCallersShareTheFirstDrain(t *testing.T) {
	p := slowProxy(t, 2*time.Second, 200*time.Millisecond)
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	answer := sendSlow(t, p)
	errs := make(chan error, 2)
	for range 2 {
		go func() { errs <- p.Shutdown(context.Background()) }()
	}
	first, second := <-errs, <-errs
	if !errors.Is(first, context.DeadlineExceeded) || !errors.Is(second, context.DeadlineExceeded) {
		t.Fatalf("concurrent Shutdowns: %v / %v, want the drain's deadline", first, second)
	}
	if err := p.Shutdown(context.Background()); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a later Shutdown: %v, want the first drain's result", err)
	}
	// The client's connection and the call upstream are cut at the same
	// moment: the client sees its connection closed, or the cut call's
	// 503 (shutting down) if that was written first.
	if st := <-answer; st != 0 && st != 503 {
		t.Fatalf("the request cut by the drain got %d", st)
	}
}

// TestDrainPastItsBoundCutsUpstreamCalls: a request whose version never
// answers (its timeout ten minutes away) does not hold the drain past its
// bound: the call upstream is cut with the client's connection, and
// Shutdown returns with the bound's error.
func TestDrainPastItsBoundCutsUpstreamCalls(t *testing.T) {
	p := slowProxy(t, 10*time.Minute, 200*time.Millisecond)
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	answer := sendSlow(t, p)
	done := make(chan error, 1)
	go func() { done <- p.Shutdown(context.Background()) }()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Shutdown: %v, want the drain's deadline", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the drain waited for the version's ten-minute timeout")
	}
	// The client's connection and the call upstream are cut at the same
	// moment: the client sees its connection closed, or the cut call's
	// 503 (shutting down) if that was written first.
	if st := <-answer; st != 0 && st != 503 {
		t.Fatalf("the request cut by the drain got %d", st)
	}
	waitFor(t, "the cut call to return", func() bool { return p.Route("slow").Variants[0].Limiter().InFlight() == 0 })
	// The cut is the proxy's doing (fallback.ShuttingDown), not the
	// version's timeout: no upstream error counted against it.
	if n := metricSum(t, p.cfg.Registry, "switchyard_proxy_upstream_errors_total", map[string]string{"model": "slow"}); n != 0 {
		t.Fatalf("the cut call counted %v upstream errors against the version", n)
	}
}
