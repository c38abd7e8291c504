package proxy

import (
	"context"
	"strings"
	"testing"
	"time"
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
