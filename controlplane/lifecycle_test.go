package controlplane_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/switchyard-dev/switchyard/controlplane"
	"github.com/switchyard-dev/switchyard/controlplane/cptest"
	"github.com/switchyard-dev/switchyard/controlplane/store"
)

func newCP(t *testing.T) *cptest.CP {
	t.Helper()
	return cptest.New(t, controlplane.Config{}, nil)
}

func refused(t *testing.T, what, addr string) {
	t.Helper()
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Errorf("%s listener %s still accepts connections", what, addr)
	}
}

// TestCancellingStartShutsDown: cancelling the ctx given to Start shuts the
// control plane down; Wait returns, both listeners are closed, the store
// is closed, and Close afterwards is a no-op.
func TestCancellingStartShutsDown(t *testing.T) {
	cp := newCP(t)
	if _, err := cp.EnableCanary(controlplane.CanaryOptions{}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := cp.Start(ctx); err != nil {
		t.Fatal(err)
	}
	apiAddr, xdsAddr := cp.APIAddr(), cp.XDSAddr()
	if r := cptest.Call(t, cp, "GET", "/healthz", "", nil); r.Code != http.StatusOK {
		t.Fatalf("healthz: %d %s", r.Code, r.Body)
	}
	cancel()
	if err := cp.Wait(context.Background()); err != nil {
		t.Fatalf("Wait after a clean shutdown: %v", err)
	}
	refused(t, "API", apiAddr)
	refused(t, "xDS", xdsAddr)
	if _, _, err := cp.RawStore().List(context.Background()); !errors.Is(err, store.ErrClosed) {
		t.Errorf("store after shutdown: %v, want ErrClosed", err)
	}
	if err := cp.Close(); err != nil {
		t.Errorf("Close after shutdown: %v", err)
	}
}

// TestStartWithDoneContextFails: a ctx already done fails Start and leaves
// nothing listening.
func TestStartWithDoneContextFails(t *testing.T) {
	cp := newCP(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	apiAddr, xdsAddr := cp.APIAddr(), cp.XDSAddr()
	if err := cp.Start(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Start with a cancelled ctx: %v, want context.Canceled", err)
	}
	if err := cp.Wait(context.Background()); err != nil {
		t.Fatalf("Wait: %v", err)
	}
	refused(t, "API", apiAddr)
	refused(t, "xDS", xdsAddr)
}

// TestListenerFailureReachesWait: a listener that stops accepting is not
// only logged: Wait returns its error, naming the listener.
func TestListenerFailureReachesWait(t *testing.T) {
	cp := newCP(t)
	if err := cp.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	cp.APIListener().Close() // the API server's Serve fails: "use of closed network connection"
	err := cp.Wait(context.Background())
	if err == nil || !strings.Contains(err.Error(), "serve api") {
		t.Fatalf("Wait after the API listener failed: %v, want a serve api error", err)
	}
	if err := cp.Shutdown(context.Background()); err != nil {
		t.Errorf("Shutdown after a listener failure: %v", err)
	}
}

// TestShutdownWithoutStart closes what New opened.
func TestShutdownWithoutStart(t *testing.T) {
	cp := newCP(t)
	apiAddr, xdsAddr := cp.APIAddr(), cp.XDSAddr()
	if err := cp.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	refused(t, "API", apiAddr)
	refused(t, "xDS", xdsAddr)
	if err := cp.Wait(context.Background()); err != nil {
		t.Errorf("Wait: %v", err)
	}
}
