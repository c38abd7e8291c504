package cptest

import (
	"context"
	"fmt"
	"sync"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/routing/xdsconv"
)

var allTypes = []string{resource.ListenerType, resource.RouteType, resource.ClusterType, resource.EndpointType}

// ADSClient is a real state-of-the-world ADS client over a socket: it
// subscribes to all four types (wildcard), keeps the newest resources of
// each, and ACKs — or NACKs when reject says so.
type ADSClient struct {
	node   string
	conn   *grpc.ClientConn
	stream discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	cancel context.CancelFunc
	reject func(typeURL string, resp *discoveryv3.DiscoveryResponse) error
	done   chan struct{}

	mu        sync.Mutex
	versions  map[string]string // acked version per type
	resources map[string]*discoveryv3.DiscoveryResponse
	received  map[string]int // responses per type
	changed   chan struct{}
	err       error
}

// DialADS connects an ADS client with node id node to addr (plaintext,
// anonymous); reject, when set, NACKs the responses it returns an error
// for. It is closed when the test ends.
func DialADS(t testing.TB, addr, node string, reject func(string, *discoveryv3.DiscoveryResponse) error) *ADSClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		cancel()
		conn.Close()
		t.Fatal(err)
	}
	c := &ADSClient{node: node, conn: conn, stream: stream, cancel: cancel, reject: reject, done: make(chan struct{}),
		versions: map[string]string{}, resources: map[string]*discoveryv3.DiscoveryResponse{}, received: map[string]int{},
		changed: make(chan struct{})}
	for i, typ := range allTypes {
		req := &discoveryv3.DiscoveryRequest{TypeUrl: typ}
		if i == 0 {
			req.Node = &corev3.Node{Id: node, Cluster: "test"}
		}
		if err := stream.Send(req); err != nil {
			c.Close()
			t.Fatal(err)
		}
	}
	go c.loop()
	t.Cleanup(c.Close)
	return c
}

func (c *ADSClient) loop() {
	defer close(c.done)
	for {
		resp, err := c.stream.Recv()
		if err != nil {
			c.mu.Lock()
			c.err = err
			close(c.changed)
			c.changed = make(chan struct{})
			c.mu.Unlock()
			return
		}
		typ := resp.GetTypeUrl()
		var rejectErr error
		if c.reject != nil {
			rejectErr = c.reject(typ, resp)
		}
		c.mu.Lock()
		c.received[typ]++
		req := &discoveryv3.DiscoveryRequest{TypeUrl: typ, ResponseNonce: resp.GetNonce(), VersionInfo: resp.GetVersionInfo()}
		if rejectErr != nil {
			req.VersionInfo = c.versions[typ]
			req.ErrorDetail = &status.Status{Code: 3, Message: rejectErr.Error()}
		} else {
			c.versions[typ] = resp.GetVersionInfo()
			c.resources[typ] = resp
		}
		close(c.changed)
		c.changed = make(chan struct{})
		c.mu.Unlock()
		if err := c.stream.Send(req); err != nil {
			return
		}
	}
}

// Close ends the stream and waits for the receive loop.
func (c *ADSClient) Close() {
	c.cancel()
	c.conn.Close()
	<-c.done
}

// models decodes the newest accepted resources, if every type has arrived
// at one version.
func (c *ADSClient) modelsLocked() (string, []api.Model, error) {
	v := c.versions[resource.ListenerType]
	var r xdsconv.Resources
	for _, typ := range allTypes {
		resp := c.resources[typ]
		if resp == nil || c.versions[typ] != v {
			return "", nil, fmt.Errorf("not all types at one version yet")
		}
		for _, a := range resp.GetResources() {
			if err := r.Add(a); err != nil {
				return "", nil, err
			}
		}
	}
	ms, err := r.Models()
	return v, ms, err
}

// WaitFor blocks until cond holds for the client's accepted config
// (version, models) or ctx ends.
func (c *ADSClient) WaitFor(ctx context.Context, cond func(version string, models []api.Model) bool) (string, []api.Model, error) {
	for {
		c.mu.Lock()
		v, ms, err := c.modelsLocked()
		ch, streamErr := c.changed, c.err
		c.mu.Unlock()
		if err == nil && cond(v, ms) {
			return v, ms, nil
		}
		if streamErr != nil {
			return "", nil, streamErr
		}
		select {
		case <-ctx.Done():
			return v, ms, fmt.Errorf("waiting for config: %w (last: version %q, %v)", ctx.Err(), v, err)
		case <-ch:
		}
	}
}

// Count is the number of responses of type typ received.
func (c *ADSClient) Count(typ string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.received[typ]
}
