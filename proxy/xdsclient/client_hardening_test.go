package xdsclient

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/routing/xdsconv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// scriptedADS is an ADS server over real gRPC whose responses the test
// writes by hand: the real control plane cannot be made to send the odd
// resources this test needs (unknown types, undecodable bytes, duplicates).
type scriptedADS struct {
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer
	out  chan *discoveryv3.DiscoveryResponse
	reqs chan *discoveryv3.DiscoveryRequest
}

func (s *scriptedADS) StreamAggregatedResources(st discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	ctx := st.Context()
	go func() {
		for {
			r, err := st.Recv()
			if err != nil {
				return
			}
			select {
			case s.reqs <- r:
			case <-ctx.Done():
				return
			}
		}
	}()
	for {
		select {
		case resp := <-s.out:
			if err := st.Send(resp); err != nil {
				return err
			}
		case <-ctx.Done():
			return nil
		}
	}
}

func anys(t *testing.T, rs []types.Resource) []*anypb.Any {
	t.Helper()
	out := make([]*anypb.Any, len(rs))
	for i, r := range rs {
		a, err := anypb.New(r)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = a
	}
	return out
}

// scriptedClient runs a Client against a scriptedADS on a real socket and
// returns the helpers that drive it: send a response and get the client's
// answer to it; applied lists the versions the client applied.
type scriptedClient struct {
	t       *testing.T
	ads     *scriptedADS
	c       *Client
	mu      sync.Mutex
	applied []string
	models  [][]api.Model
}

func startScripted(t *testing.T) *scriptedClient {
	t.Helper()
	sc := &scriptedClient{t: t, ads: &scriptedADS{out: make(chan *discoveryv3.DiscoveryResponse), reqs: make(chan *discoveryv3.DiscoveryRequest, 64)}}
	gs := grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(gs, sc.ads)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); gs.Serve(l) }()
	sc.c = New(Config{Addr: l.Addr().String(), NodeID: "n", BackoffMin: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond,
		Apply: func(models []api.Model, version string) error {
			sc.mu.Lock()
			defer sc.mu.Unlock()
			sc.applied = append(sc.applied, version)
			sc.models = append(sc.models, models)
			return nil
		}})
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { defer close(ran); sc.c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-ran
		gs.Stop()
		<-served
	})
	return sc
}

// next returns the client's answer to the response with this nonce.
func (sc *scriptedClient) next(nonce string) *discoveryv3.DiscoveryRequest {
	sc.t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case r := <-sc.ads.reqs:
			if r.GetResponseNonce() == nonce {
				return r
			}
		case <-timeout:
			sc.t.Fatalf("no answer to response %s within 10 s", nonce)
		}
	}
}

func (sc *scriptedClient) send(typ, version, nonce string, res []*anypb.Any) *discoveryv3.DiscoveryRequest {
	sc.t.Helper()
	select {
	case sc.ads.out <- &discoveryv3.DiscoveryResponse{TypeUrl: typ, VersionInfo: version, Nonce: nonce, Resources: res}:
	case <-time.After(10 * time.Second):
		sc.t.Fatal("client never opened a stream")
	}
	return sc.next(nonce)
}

// acked sends a response and fails unless the client ACKs it.
func (sc *scriptedClient) acked(typ, version, nonce string, res []*anypb.Any) {
	sc.t.Helper()
	if r := sc.send(typ, version, nonce, res); r.GetErrorDetail() != nil {
		sc.t.Fatalf("%s version %s NACKed: %s", typ, version, r.GetErrorDetail().GetMessage())
	}
}

func (sc *scriptedClient) appliedVersions() string {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return strings.Join(sc.applied, ",")
}

// TestOddResourcesAreNACKed: responses of an unknown type, with bytes
// that do not decode, with a resource of another type, or with duplicate
// names are NACKed with a reason and never applied; the stream stays up
// and a good set is applied after them.
func TestOddResourcesAreNACKed(t *testing.T) {
	sc := startScripted(t)
	send := sc.send
	nacked := func(r *discoveryv3.DiscoveryRequest, want string) {
		t.Helper()
		if r.GetErrorDetail() == nil || !strings.Contains(r.GetErrorDetail().GetMessage(), want) {
			t.Fatalf("want a NACK naming %q, got %v", want, r)
		}
	}

	m := api.Model{Metadata: api.Metadata{Name: "m"}, Spec: api.Spec{
		Versions: []api.Version{{Name: "v1", Endpoints: []string{"127.0.0.1:1"}}},
		Traffic:  api.Traffic{Weights: map[string]int{"v1": 1}}}}
	m.Defaults()
	good, err := xdsconv.Translate([]api.Model{m}, "1")
	if err != nil {
		t.Fatal(err)
	}
	clusters := anys(t, good[resourcev3.ClusterType])
	listeners := anys(t, good[resourcev3.ListenerType])

	nacked(send("type.googleapis.com/envoy.config.core.v3.Nonsense", "x", "n1", nil), "unexpected resource type")
	nacked(send(resourcev3.ClusterType, "x", "n2", []*anypb.Any{{TypeUrl: resourcev3.ClusterType, Value: []byte{0xff, 0xff, 0xff, 0x07}}}), "")
	nacked(send(resourcev3.ClusterType, "x", "n3", listeners), "type")
	nacked(send(resourcev3.ClusterType, "x", "n4", []*anypb.Any{{TypeUrl: resourcev3.ClusterType}, nil}), "")

	// A good set, type by type.
	for i, typ := range []string{resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.ListenerType, resourcev3.RouteType} {
		sc.acked(typ, "1", "g"+string(rune('0'+i)), anys(t, good[typ]))
	}
	if got := sc.appliedVersions(); got != "1" {
		t.Fatalf("applied %q, want only version 1", got)
	}

	// Duplicate cluster names after the good set: NACKed, not applied.
	nacked(send(resourcev3.ClusterType, "2", "d1", append(clusters, clusters...)), "")
	if got := sc.appliedVersions(); got != "1" {
		t.Fatalf("applied %q after odd updates, want only version 1", got)
	}
	if st := sc.c.Status(); st.Nacks != 5 || st.LastNack == "" || !st.Connected {
		t.Fatalf("status %+v, want 5 NACKs on a live stream", st)
	}
}

// TestSnapshotTransitionIsWaitedOn: the control plane's responses for one
// snapshot come type by type, and the endpoints a new cluster subscription
// asks for can come before the new snapshot's routes. Clusters and
// endpoints of version 1 beside version 0's routes (no model yet) is a set
// that does not convert ("cluster belongs to no model version"); it is a
// transition, so the client ACKs it and waits for the routes, then
// applies version 1. It used to NACK the endpoints, and since the control
// plane answers a NACK only with a newer snapshot, the proxy never applied
// version 1 (the canary end-to-end tests' first wait timed out on busy
// CPUs). The same holds for a version removed: the routes still naming it
// beside clusters without it.
func TestSnapshotTransitionIsWaitedOn(t *testing.T) {
	sc := startScripted(t)
	model := func(versions ...string) api.Model {
		m := api.Model{Metadata: api.Metadata{Name: "m"}, Spec: api.Spec{Traffic: api.Traffic{Weights: map[string]int{"v1": 1}}}}
		for i, v := range versions {
			m.Spec.Versions = append(m.Spec.Versions, api.Version{Name: v, Endpoints: []string{fmt.Sprintf("127.0.0.1:%d", i+1)}})
		}
		m.Defaults()
		return m
	}
	translate := func(version string, models ...api.Model) map[resourcev3.Type][]*anypb.Any {
		res, err := xdsconv.Translate(models, version)
		if err != nil {
			t.Fatal(err)
		}
		out := map[resourcev3.Type][]*anypb.Any{}
		for typ, rs := range res {
			out[typ] = anys(t, rs)
		}
		return out
	}
	v0, v1, v2 := translate("0"), translate("1", model("v1", "v2")), translate("2", model("v1"))
	const cds, eds, lds, rds = resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.ListenerType, resourcev3.RouteType

	// Version 0: no models.
	sc.acked(cds, "0", "a", v0[cds])
	sc.acked(lds, "0", "b", v0[lds])
	sc.acked(rds, "0", "c", v0[rds])
	if got := sc.appliedVersions(); got != "0" {
		t.Fatalf("applied %q, want 0", got)
	}
	// Version 1 adds model m: clusters, their endpoints, then the routes.
	sc.acked(cds, "1", "d", v1[cds])
	sc.acked(eds, "1", "e", v1[eds])
	if got := sc.appliedVersions(); got != "0" {
		t.Fatalf("applied %q before version 1's routes, want 0", got)
	}
	sc.acked(lds, "1", "f", v1[lds])
	sc.acked(rds, "1", "g", v1[rds])
	if got := sc.appliedVersions(); got != "0,1" {
		t.Fatalf("applied %q, want 0,1", got)
	}
	// Version 2 removes v2: its clusters come before the routes that stop
	// naming it.
	sc.acked(cds, "2", "h", v2[cds])
	sc.acked(eds, "2", "i", v2[eds])
	sc.acked(lds, "2", "j", v2[lds])
	sc.acked(rds, "2", "k", v2[rds])
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if got := strings.Join(sc.applied, ","); got != "0,1,2" {
		t.Fatalf("applied %q, want 0,1,2", got)
	}
	if last := sc.models[len(sc.models)-1]; len(last) != 1 || len(last[0].Spec.Versions) != 1 {
		t.Fatalf("version 2 applied %+v, want m with v1 only", last)
	}
	// Types at one version that disagree are still NACKed: routes naming
	// v2 beside clusters without it, all of version 2.
	if r := sc.send(rds, "2", "l", v1[rds]); r.GetErrorDetail() == nil || !strings.Contains(r.GetErrorDetail().GetMessage(), `no cluster "m_v2"`) {
		t.Fatalf("routes naming a version without a cluster at the clusters' version: want a NACK, got %v", r)
	}
}
