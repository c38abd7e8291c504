package xdsclient

import (
	"context"
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

	"github.com/switchyard-dev/switchyard/routing"
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

// TestOddResourcesAreNACKed: responses of an unknown type, with bytes
// that do not decode, with a resource of another type, or with duplicate
// names are NACKed with a reason and never applied; the stream stays up
// and a good set is applied after them.
func TestOddResourcesAreNACKed(t *testing.T) {
	ads := &scriptedADS{out: make(chan *discoveryv3.DiscoveryResponse), reqs: make(chan *discoveryv3.DiscoveryRequest, 64)}
	gs := grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(gs, ads)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); gs.Serve(l) }()

	var mu sync.Mutex
	var applied []string
	c := New(Config{Addr: l.Addr().String(), NodeID: "n", BackoffMin: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond,
		Apply: func(models []routing.Model, version string) error {
			mu.Lock()
			defer mu.Unlock()
			applied = append(applied, version)
			return nil
		}})
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { defer close(ran); c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-ran
		gs.Stop()
		<-served
	})

	// next returns the client's answer to the response with this nonce.
	next := func(nonce string) *discoveryv3.DiscoveryRequest {
		t.Helper()
		timeout := time.After(10 * time.Second)
		for {
			select {
			case r := <-ads.reqs:
				if r.GetResponseNonce() == nonce {
					return r
				}
			case <-timeout:
				t.Fatalf("no answer to response %s within 10 s", nonce)
			}
		}
	}
	send := func(typ, version, nonce string, res []*anypb.Any) *discoveryv3.DiscoveryRequest {
		t.Helper()
		select {
		case ads.out <- &discoveryv3.DiscoveryResponse{TypeUrl: typ, VersionInfo: version, Nonce: nonce, Resources: res}:
		case <-time.After(10 * time.Second):
			t.Fatal("client never opened a stream")
		}
		return next(nonce)
	}
	nacked := func(r *discoveryv3.DiscoveryRequest, want string) {
		t.Helper()
		if r.GetErrorDetail() == nil || !strings.Contains(r.GetErrorDetail().GetMessage(), want) {
			t.Fatalf("want a NACK naming %q, got %v", want, r)
		}
	}

	m := routing.Model{Metadata: routing.Metadata{Name: "m"}, Spec: routing.Spec{
		Versions: []routing.Version{{Name: "v1", Endpoints: []string{"127.0.0.1:1"}}},
		Traffic:  routing.Traffic{Weights: map[string]int{"v1": 1}}}}
	m.Defaults()
	good, err := xdsconv.Translate([]routing.Model{m}, "1")
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
		r := send(typ, "1", "g"+string(rune('0'+i)), anys(t, good[typ]))
		if r.GetErrorDetail() != nil {
			t.Fatalf("good %s NACKed: %s", typ, r.GetErrorDetail().GetMessage())
		}
	}
	mu.Lock()
	got := strings.Join(applied, ",")
	mu.Unlock()
	if got != "1" {
		t.Fatalf("applied %q, want only version 1", got)
	}

	// Duplicate cluster names after the good set: NACKed, not applied.
	nacked(send(resourcev3.ClusterType, "2", "d1", append(clusters, clusters...)), "")
	mu.Lock()
	got = strings.Join(applied, ",")
	mu.Unlock()
	if got != "1" {
		t.Fatalf("applied %q after odd updates, want only version 1", got)
	}
	if st := c.Status(); st.Nacks != 5 || st.LastNack == "" || !st.Connected {
		t.Fatalf("status %+v, want 5 NACKs on a live stream", st)
	}
}
