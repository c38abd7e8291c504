package proxy

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/controlplane"
	"github.com/switchyard-dev/switchyard/controlplane/cptest"
	"github.com/switchyard-dev/switchyard/controlplane/store"
	"github.com/switchyard-dev/switchyard/inference-backend/backendtest"
	"github.com/switchyard-dev/switchyard/routing/xdsconv"
)

// waitFor polls cond for up to 15 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	cptest.WaitUntil(t, what, 15*time.Second, cond)
}

func putModel(t *testing.T, cp *controlplane.ControlPlane, m api.Model) int64 {
	t.Helper()
	m.Defaults()
	rec, err := cp.Store().Put(context.Background(), m, store.Precondition{}, store.Change{Subject: "test", Action: "put"})
	if err != nil {
		t.Fatal(err)
	}
	return rec.Revision
}

// TestControlPlaneStoppedAndProxyRestarted: the real control plane feeds the
// proxy; a weight change arrives; the control plane stops under traffic with
// zero failed requests; a proxy restarted while it is still down serves the
// persisted configuration and says so.
func TestControlPlaneStoppedAndProxyRestarted(t *testing.T) {
	be := backendtest.Start(t, backendtest.Options{})
	dir := t.TempDir()
	cp, err := controlplane.New(controlplane.Config{StatePath: filepath.Join(dir, "state.db"), APIAddr: "127.0.0.1:0",
		XDSAddr: "127.0.0.1:0", InsecureLoopbackNoAuth: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	cpClosed := false
	t.Cleanup(func() {
		if !cpClosed {
			cp.Close()
		}
	})
	putModel(t, cp, demoModel(be, map[string]int{"v1": 80, "v2": 20}))
	stateDir := filepath.Join(dir, "proxy")
	cfg := Config{XDSAddr: cp.XDSAddr(), NodeID: "proxy-a", StateDir: stateDir,
		XDSBackoffMin: 20 * time.Millisecond, XDSBackoffMax: 200 * time.Millisecond}
	p := startProxy(t, cfg)
	waitFor(t, "the first xDS configuration", func() bool { return p.Route("recommender") != nil })
	if d := p.ConfigDump(); d.Source != SourceXDS || d.XDS == nil || !d.XDS.Connected {
		t.Fatalf("config_dump after xDS: %+v", d)
	}
	rev := putModel(t, cp, demoModel(be, map[string]int{"v1": 50, "v2": 50}))
	waitFor(t, "the weight change", func() bool {
		r := p.Route("recommender")
		return r != nil && r.Picker.Weight(1) == 50
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if ack := cp.WaitApplied(ctx, rev); len(ack.Acked) < 1 {
		t.Fatalf("control plane did not see the proxy ACK revision %d: %+v", rev, ack)
	}

	// Control plane stopped under traffic: zero failed requests.
	done := make(chan []answer)
	go func() { done <- load(t, inferURL(p, "recommender"), 2000, 8, userHeader) }()
	time.Sleep(50 * time.Millisecond)
	cp.Close()
	cpClosed = true
	for _, a := range <-done {
		if a.status != 200 {
			t.Fatalf("request failed after the control plane stopped: %d %s", a.status, a.body)
		}
	}
	waitFor(t, "the xDS client to notice", func() bool { return !p.XDSStatus().Connected })

	// Restart the proxy; the control plane is still down.
	p.Close()
	p2 := startProxy(t, cfg)
	d := p2.ConfigDump()
	if d.Source != SourcePersisted || d.PersistedFrom == "" || d.Note == "" || len(d.Models) != 1 {
		t.Fatalf("restarted proxy config_dump: %+v", d)
	}
	if r := p2.Route("recommender"); r == nil || r.Picker.Weight(1) != 50 {
		t.Fatal("restarted proxy does not serve the last good (50/50) configuration")
	}
	for i, a := range load(t, inferURL(p2, "recommender"), 200, 4, userHeader) {
		if a.status != 200 {
			t.Fatalf("request %d on the restarted proxy: %d %s", i, a.status, a.body)
		}
	}
}

// TestInvalidXDSConfigIsNACKed runs a real go-control-plane ADS server over
// a snapshot cache fed by xdsconv.Translate, then publishes a route without
// Switchyard metadata: the proxy NACKs it with the reason and keeps serving
// the last good configuration.
func TestInvalidXDSConfigIsNACKed(t *testing.T) {
	be := backendtest.Start(t, backendtest.Options{})
	m := demoModel(be, map[string]int{"v1": 100})
	m.Defaults()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	snapCache := cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil)
	var mu sync.Mutex
	var nacks []string
	srv := serverv3.NewServer(ctx, snapCache, serverv3.CallbackFuncs{
		StreamRequestFunc: func(_ int64, req *discoveryv3.DiscoveryRequest) error {
			if req.GetErrorDetail() != nil {
				mu.Lock()
				nacks = append(nacks, req.GetErrorDetail().GetMessage())
				mu.Unlock()
			}
			return nil
		},
	})
	gs := grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(gs, srv)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(l)
	defer gs.Stop()

	good, err := xdsconv.Snapshot([]api.Model{m}, "1")
	if err != nil {
		t.Fatal(err)
	}
	if err := snapCache.SetSnapshot(ctx, "node-n", good); err != nil {
		t.Fatal(err)
	}
	p := startProxy(t, Config{XDSAddr: l.Addr().String(), NodeID: "node-n", XDSBackoffMin: 20 * time.Millisecond})
	waitFor(t, "version 1", func() bool { _, v, _ := p.Models(); return v == "1" })

	res, err := xdsconv.Translate([]api.Model{m}, "2")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res[resourcev3.RouteType] {
		for _, vh := range r.(*routev3.RouteConfiguration).GetVirtualHosts() {
			for _, rt := range vh.GetRoutes() {
				rt.Metadata = nil
			}
		}
	}
	bad, err := cachev3.NewSnapshot("2", res)
	if err != nil {
		t.Fatal(err)
	}
	if err := snapCache.SetSnapshot(ctx, "node-n", bad); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a NACK", func() bool { mu.Lock(); defer mu.Unlock(); return len(nacks) > 0 })
	mu.Lock()
	reason := nacks[0]
	mu.Unlock()
	if reason == "" {
		t.Fatal("NACK without a reason")
	}
	st := p.XDSStatus()
	if st.Nacks < 1 || st.LastNack == "" {
		t.Fatalf("xDS status after NACK: %+v", st)
	}
	// The valid parts of version 2 (clusters, endpoints, listener) may be
	// applied with the last good routes; the bad routes never are.
	if _, v, _ := p.Models(); v == "2" || (v != "1" && !strings.Contains(v, "rds=1")) {
		t.Fatalf("active version %q after a bad route update, want routes of version 1", v)
	}
	if a := post(t, newHTTPClient(), inferURL(p, "recommender"), inferBody(1), nil); a.status != 200 {
		t.Fatalf("after NACK: %d %s", a.status, a.body)
	}
	// A good update after the bad one is applied.
	m.Spec.Traffic.Weights = map[string]int{"v1": 50, "v2": 50}
	good3, err := xdsconv.Snapshot([]api.Model{m}, "3")
	if err != nil {
		t.Fatal(err)
	}
	if err := snapCache.SetSnapshot(ctx, "node-n", good3); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "version 3", func() bool { _, v, _ := p.Models(); return v == "3" })
	t.Logf("NACK reason: %s", reason)
}
