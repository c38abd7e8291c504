// Package xdsclient is the proxy's xDS client: one ADS stream (state of the
// world) to the control plane subscribing to Listeners, RouteConfigurations,
// Clusters and ClusterLoadAssignments. Each complete, consistent set of
// resources is converted with xdsconv.FromResources and handed to Apply;
// a set that fails conversion or Apply is NACKed with the reason and the
// last good configuration stays. A set whose types are at different
// versions is a transition between two snapshots (the new clusters have
// come, the new routes not yet): if its types disagree
// (xdsconv.ErrMismatch), it is ACKed and waited on like an incomplete one,
// since a NACK would reject the new snapshot for good. The stream reconnects with backoff.
package xdsclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/internal/backoff"
	"github.com/switchyard-dev/switchyard/routing/xdsconv"
)

// Config configures a Client.
type Config struct {
	Addr   string // control plane ADS address, host:port
	NodeID string
	// Cluster is the node's cluster (default "switchyard-proxy").
	Cluster string
	// Metadata is sent as the node's metadata (string values), e.g.
	// MetadataAdminAddr so the control plane can reach the proxy's admin
	// server (shadow reports).
	Metadata map[string]string
	// Apply makes models the active configuration; an error NACKs.
	Apply  func(models []api.Model, version string) error
	Logger *slog.Logger
	// BackoffMin and BackoffMax bound the reconnect backoff (defaults 100ms
	// and 5s); each failed attempt doubles it, with jitter.
	BackoffMin, BackoffMax time.Duration
	DialOptions            []grpc.DialOption
}

// Status is the client's view of its control plane connection.
type Status struct {
	Connected      bool      `json:"connected"`
	Addr           string    `json:"addr"`
	AppliedVersion string    `json:"appliedVersion,omitempty"`
	AppliedAt      time.Time `json:"appliedAt,omitzero"`
	Acks           int       `json:"acks"`
	Nacks          int       `json:"nacks"`
	LastNack       string    `json:"lastNack,omitempty"`
	LastNackAt     time.Time `json:"lastNackAt,omitzero"`
	LastError      string    `json:"lastError,omitempty"`
	Reconnects     int       `json:"reconnects"`
}

// Client is an ADS client. Run it in a goroutine.
type Client struct {
	cfg Config
	log *slog.Logger

	mu     sync.Mutex
	status Status
}

// New returns a client; nothing connects until Run.
func New(cfg Config) *Client {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.Cluster == "" {
		cfg.Cluster = "switchyard-proxy"
	}
	if cfg.BackoffMin <= 0 {
		cfg.BackoffMin = 100 * time.Millisecond
	}
	if cfg.BackoffMax < cfg.BackoffMin {
		cfg.BackoffMax = max(5*time.Second, cfg.BackoffMin)
	}
	return &Client{cfg: cfg, log: cfg.Logger, status: Status{Addr: cfg.Addr}}
}

// Status returns a copy of the current status.
func (c *Client) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status
}

func (c *Client) update(f func(*Status)) {
	c.mu.Lock()
	f(&c.status)
	c.mu.Unlock()
}

// Run keeps an ADS stream open until ctx ends, reconnecting with backoff.
func (c *Client) Run(ctx context.Context) error {
	opts := append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, c.cfg.DialOptions...)
	cc, err := grpc.NewClient(c.cfg.Addr, opts...)
	if err != nil {
		return fmt.Errorf("xds: %s: %w", c.cfg.Addr, err)
	}
	defer cc.Close()
	ads := discoveryv3.NewAggregatedDiscoveryServiceClient(cc)
	retry := backoff.Backoff{Initial: c.cfg.BackoffMin, Max: c.cfg.BackoffMax, Jitter: true}
	for {
		gotResponse, err := c.stream(ctx, ads)
		c.update(func(s *Status) {
			s.Connected = false
			if err != nil && ctx.Err() == nil {
				s.LastError = err.Error()
			}
		})
		if ctx.Err() != nil {
			return nil
		}
		if gotResponse {
			retry.Reset()
		}
		wait := retry.Next()
		c.log.Warn("xds stream ended; reconnecting", "addr", c.cfg.Addr, "error", errString(err), "retry_in", wait.String())
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		c.update(func(s *Status) { s.Reconnects++ })
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// typeOrder is the order of subscription (make before break: clusters and
// endpoints before routes use them).
var typeOrder = [...]string{resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.ListenerType, resourcev3.RouteType}

// streamState is the per-stream view: accepted resources per type, their
// version and nonce, and the resource names subscribed per type.
type streamState struct {
	node     *corev3.Node
	version  map[string]string
	received map[string]bool
	names    map[string][]string
	res      map[string][]*anypb.Any
}

func (c *Client) stream(ctx context.Context, ads discoveryv3.AggregatedDiscoveryServiceClient) (gotResponse bool, err error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := ads.StreamAggregatedResources(sctx)
	if err != nil {
		return false, err
	}
	s := &streamState{
		node:     &corev3.Node{Id: c.cfg.NodeID, Cluster: c.cfg.Cluster, Metadata: nodeMetadata(c.cfg.Metadata)},
		version:  map[string]string{},
		received: map[string]bool{},
		names:    map[string][]string{},
		res:      map[string][]*anypb.Any{},
	}
	// Wildcard subscriptions for listeners and clusters; routes and
	// endpoints follow from them.
	for _, t := range []string{resourcev3.ClusterType, resourcev3.ListenerType} {
		if err := st.Send(&discoveryv3.DiscoveryRequest{Node: s.node, TypeUrl: t}); err != nil {
			return false, err
		}
	}
	for {
		resp, err := st.Recv()
		if err != nil {
			return gotResponse, err
		}
		if !gotResponse {
			gotResponse = true
			c.update(func(st *Status) { st.Connected = true })
			c.log.Info("connected to control plane", "addr", c.cfg.Addr, "node", c.cfg.NodeID)
		}
		if err := c.handle(st, s, resp); err != nil {
			return gotResponse, err
		}
	}
}

func (c *Client) handle(st discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient, s *streamState, resp *discoveryv3.DiscoveryResponse) error {
	typ := resp.GetTypeUrl()
	nack := func(reason error) error {
		c.log.Error("xds update rejected (NACK)", "type", typ, "version", resp.GetVersionInfo(), "error", reason)
		c.update(func(st *Status) {
			st.Nacks++
			st.LastNack = fmt.Sprintf("%s version %s: %v", typ, resp.GetVersionInfo(), reason)
			st.LastNackAt = time.Now()
		})
		return st.Send(&discoveryv3.DiscoveryRequest{
			Node: s.node, TypeUrl: typ, VersionInfo: s.version[typ], ResponseNonce: resp.GetNonce(),
			ResourceNames: s.names[typ],
			ErrorDetail:   &statuspb.Status{Code: int32(codes.InvalidArgument), Message: reason.Error()},
		})
	}
	if !slices.Contains(typeOrder[:], typ) {
		return nack(fmt.Errorf("unexpected resource type %q", typ))
	}
	// Candidate state: the accepted resources with this type replaced.
	cand := map[string][]*anypb.Any{}
	for k, v := range s.res {
		cand[k] = v
	}
	cand[typ] = resp.GetResources()
	r, err := decode(cand)
	if err != nil {
		return nack(err)
	}
	rdsNames, edsNames, refs := subscriptions(r)
	complete, waitFor := isComplete(s, typ, r, rdsNames, edsNames, refs)
	var models []api.Model
	version, oneVersion := combinedVersion(s, typ, resp.GetVersionInfo())
	if complete {
		if models, err = r.Models(); err != nil {
			if oneVersion || !errors.Is(err, xdsconv.ErrMismatch) {
				return nack(err)
			}
			// Types of different snapshots that disagree (the new
			// snapshot's clusters beside the old one's routes): a
			// transition the rest of the new snapshot completes. A NACK
			// would reject the new snapshot for good (the control plane
			// answers a NACK only with a newer snapshot), so wait.
			complete, waitFor = false, fmt.Sprintf("the other types of version %s (%v)", resp.GetVersionInfo(), err)
		}
	}
	if complete {
		if err := c.cfg.Apply(models, version); err != nil {
			return nack(err)
		}
		c.update(func(st *Status) {
			st.AppliedVersion, st.AppliedAt = version, time.Now()
		})
	} else {
		c.log.Debug("xds update incomplete; waiting", "type", typ, "version", version, "waiting_for", waitFor)
	}
	// ACK.
	s.res[typ] = resp.GetResources()
	s.version[typ] = resp.GetVersionInfo()
	s.received[typ] = true
	c.update(func(st *Status) { st.Acks++ })
	if err := st.Send(&discoveryv3.DiscoveryRequest{
		Node: s.node, TypeUrl: typ, VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce(), ResourceNames: s.names[typ],
	}); err != nil {
		return err
	}
	// Follow-up subscriptions.
	for t, names := range map[string][]string{resourcev3.RouteType: rdsNames, resourcev3.EndpointType: edsNames} {
		if (typ == resourcev3.ListenerType && t == resourcev3.RouteType) || (typ == resourcev3.ClusterType && t == resourcev3.EndpointType) {
			if !slices.Equal(names, s.names[t]) {
				s.names[t] = names
				if err := st.Send(&discoveryv3.DiscoveryRequest{Node: s.node, TypeUrl: t, VersionInfo: s.version[t], ResourceNames: names}); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// combinedVersion names the candidate set: the common version when every
// type is at the same version (one snapshot; same is true), else each
// type's version, e.g. "cds=2 eds=2 lds=2 rds=1".
func combinedVersion(s *streamState, typ, v string) (name string, same bool) {
	short := map[string]string{resourcev3.ClusterType: "cds", resourcev3.EndpointType: "eds",
		resourcev3.ListenerType: "lds", resourcev3.RouteType: "rds"}
	same = true
	parts := make([]string, 0, 4)
	for _, t := range []string{resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.ListenerType, resourcev3.RouteType} {
		tv, ok := s.version[t], s.received[t]
		if t == typ {
			tv, ok = v, true
		}
		if !ok {
			continue
		}
		if tv != v {
			same = false
		}
		parts = append(parts, short[t]+"="+tv)
	}
	if same {
		return v, true
	}
	return strings.Join(parts, " "), false
}

func decode(m map[string][]*anypb.Any) (xdsconv.Resources, error) {
	var r xdsconv.Resources
	for _, t := range typeOrder {
		for _, a := range m[t] {
			if a.GetTypeUrl() != t {
				return r, fmt.Errorf("resource of type %q in a %q response", a.GetTypeUrl(), t)
			}
			if err := r.Add(a); err != nil {
				return r, err
			}
		}
	}
	return r, nil
}

// subscriptions derives the RDS and EDS names from listeners and clusters,
// and the cluster names routes refer to.
func subscriptions(r xdsconv.Resources) (rds, eds []string, refs []string) {
	if len(r.Listeners) > 0 {
		rds = []string{xdsconv.RouteConfigName}
	}
	for _, c := range r.Clusters {
		if c.GetType() == clusterv3.Cluster_EDS {
			name := c.GetEdsClusterConfig().GetServiceName()
			if name == "" {
				name = c.GetName()
			}
			eds = append(eds, name)
		}
	}
	for _, rc := range r.Routes {
		for _, vh := range rc.GetVirtualHosts() {
			for _, rt := range vh.GetRoutes() {
				for _, wc := range rt.GetRoute().GetWeightedClusters().GetClusters() {
					refs = append(refs, wc.GetName())
				}
				if n := rt.GetRoute().GetCluster(); n != "" {
					refs = append(refs, n)
				}
			}
		}
	}
	sort.Strings(eds)
	eds = slices.Compact(eds)
	return rds, eds, refs
}

// isComplete reports whether the candidate set can be converted: every
// subscribed type answered, every EDS cluster has its assignment and every
// cluster a route names exists. An incomplete set is ACKed and waited on
// (the control plane sends the rest), never NACKed.
func isComplete(s *streamState, typ string, r xdsconv.Resources, rds, eds, refs []string) (bool, string) {
	got := func(t string) bool { return t == typ || s.received[t] }
	if !got(resourcev3.ListenerType) || !got(resourcev3.ClusterType) {
		return false, "listeners and clusters"
	}
	if len(rds) > 0 && (!got(resourcev3.RouteType) || !hasRoute(r.Routes, xdsconv.RouteConfigName)) {
		return false, "route configuration " + xdsconv.RouteConfigName
	}
	have := map[string]bool{}
	for _, e := range r.Endpoints {
		have[e.GetClusterName()] = true
	}
	for _, n := range eds {
		if !have[n] {
			return false, "endpoints of " + n
		}
	}
	clusters := map[string]bool{}
	for _, c := range r.Clusters {
		clusters[c.GetName()] = true
	}
	for _, n := range refs {
		if !clusters[n] {
			return false, "cluster " + n
		}
	}
	return true, ""
}

func hasRoute(rs []*routev3.RouteConfiguration, name string) bool {
	for _, r := range rs {
		if r.GetName() == name {
			return true
		}
	}
	return false
}

// MetadataAdminAddr is the node metadata key holding the proxy's admin
// address (host:port).
const MetadataAdminAddr = "switchyard.admin"

func nodeMetadata(m map[string]string) *structpb.Struct {
	if len(m) == 0 {
		return nil
	}
	st := &structpb.Struct{Fields: make(map[string]*structpb.Value, len(m))}
	for k, v := range m {
		st.Fields[k] = structpb.NewStringValue(v)
	}
	return st
}
