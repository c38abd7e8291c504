package xdsconv

import (
	"encoding/json"
	"fmt"
	"math"
	"net"
	"sort"
	"strconv"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/switchyard-dev/switchyard/api"
)

// Names used in the generated resources.
const (
	// ListenerName is the one Listener.
	ListenerName = "switchyard"
	// RouteConfigName is the one RouteConfiguration.
	RouteConfigName = "switchyard"
	// VirtualHostName is the one virtual host (domains "*").
	VirtualHostName = "switchyard"
	// MetadataKey is the filter_metadata key holding Switchyard's policy on
	// routes (the Model document) and clusters (model and version).
	MetadataKey = "switchyard"
	// ModelHeader carries the virtual model name on gRPC requests (whose
	// model name is in the body): the gRPC route of a model matches
	// GRPCPathPrefix and this header.
	ModelHeader = "x-switchyard-model"
	// VersionHeader is added to upstream requests and names the chosen
	// version (request_headers_to_add of each weighted cluster).
	VersionHeader = "x-switchyard-version"
	// GRPCPathPrefix is the OIP v2 gRPC service path.
	GRPCPathPrefix = "/inference.GRPCInferenceService/"
	// RESTPathPrefix + name is the path-separated prefix of a model's REST
	// route (/v2/models/{name} and /v2/models/{name}/...).
	RESTPathPrefix = "/v2/models/"

	// DefaultListenerPort is the Listener's port when Options leaves it 0.
	DefaultListenerPort = 10000

	connectTimeout    = time.Second
	outlierInterval   = time.Second
	retryOn           = "5xx,reset,connect-failure,refused-stream"
	grpcRetryOn       = "5xx,reset,connect-failure,refused-stream,unavailable,resource-exhausted"
	minRetryConcurr   = 3
	http2OptionsKey   = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
	routeSuffixREST   = "/rest"
	routeSuffixGRPC   = "/grpc"
	routerFilterName  = "envoy.filters.http.router"
	hcmFilterName     = "envoy.filters.network.http_connection_manager"
	defaultListenAddr = "0.0.0.0"
)

// Options tune the Listener. The zero value listens on 0.0.0.0:10000.
type Options struct {
	ListenerAddress string
	ListenerPort    uint32
}

// ClusterName is the Cluster (and ClusterLoadAssignment) name of a model
// version: "{model}_{version}". Model names are DNS labels and cannot hold
// '_', so the name is unambiguous ("a-b"+"c" and "a"+"b-c" differ) and does
// not depend on replica counts or map order.
func ClusterName(model, version string) string { return model + "_" + version }

// Translate turns the desired state into xDS resources with the default
// Options. See Options.Translate.
func Translate(models []api.Model, version string) (map[resource.Type][]types.Resource, error) {
	return Options{}.Translate(models, version)
}

// Snapshot translates the models and wraps the resources in a consistent
// snapshot with this version.
func Snapshot(models []api.Model, version string) (*cachev3.Snapshot, error) {
	return Options{}.Snapshot(models, version)
}

// Snapshot is Translate wrapped in a consistent cache snapshot.
func (o Options) Snapshot(models []api.Model, version string) (*cachev3.Snapshot, error) {
	res, err := o.Translate(models, version)
	if err != nil {
		return nil, err
	}
	snap, err := cachev3.NewSnapshot(version, res)
	if err != nil {
		return nil, fmt.Errorf("new snapshot %s: %w", version, err)
	}
	if err := snap.Consistent(); err != nil {
		return nil, fmt.Errorf("snapshot %s is not consistent: %w", version, err)
	}
	return snap, nil
}

// Translate is a pure function of the models: one Listener, the
// RouteConfiguration "switchyard", a Cluster per model version and a
// ClusterLoadAssignment per EDS cluster. Every model must already be
// defaulted and valid; Translate re-validates and fails on the first
// invalid one. The output is sorted by name and every resource passes its
// generated Validate(). The version only labels the output (it is not
// written into resources), so equal models give equal resources.
func (o Options) Translate(models []api.Model, version string) (map[resource.Type][]types.Resource, error) {
	sorted := make([]*api.Model, len(models))
	seen := map[string]bool{}
	for i := range models {
		m := &models[i]
		if err := m.Validate(); err != nil {
			return nil, fmt.Errorf("model %q: %w", m.Metadata.Name, err)
		}
		if seen[m.Metadata.Name] {
			return nil, fmt.Errorf("model %q appears twice", m.Metadata.Name)
		}
		seen[m.Metadata.Name] = true
		sorted[i] = m
	}
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Metadata.Name < sorted[j].Metadata.Name })

	vh := &routev3.VirtualHost{Name: VirtualHostName, Domains: []string{"*"}}
	var clusters, endpoints []types.Resource
	for _, m := range sorted {
		routes, err := modelRoutes(m)
		if err != nil {
			return nil, fmt.Errorf("model %q: %w", m.Metadata.Name, err)
		}
		vh.Routes = append(vh.Routes, routes...)
		for i := range m.Spec.Versions {
			c, cla := versionCluster(m, &m.Spec.Versions[i])
			clusters = append(clusters, c)
			if cla != nil {
				endpoints = append(endpoints, cla)
			}
		}
	}
	sort.Slice(clusters, func(i, j int) bool {
		return clusters[i].(*clusterv3.Cluster).GetName() < clusters[j].(*clusterv3.Cluster).GetName()
	})
	sort.Slice(endpoints, func(i, j int) bool {
		return endpoints[i].(*endpointv3.ClusterLoadAssignment).GetClusterName() < endpoints[j].(*endpointv3.ClusterLoadAssignment).GetClusterName()
	})
	rc := &routev3.RouteConfiguration{Name: RouteConfigName, VirtualHosts: []*routev3.VirtualHost{vh}}
	l, err := o.listener()
	if err != nil {
		return nil, err
	}
	out := map[resource.Type][]types.Resource{
		resource.ListenerType: {l},
		resource.RouteType:    {rc},
		resource.ClusterType:  clusters,
		resource.EndpointType: endpoints,
	}
	for typ, rs := range out {
		for _, r := range rs {
			if err := r.(interface{ ValidateAll() error }).ValidateAll(); err != nil {
				return nil, fmt.Errorf("generated %s %q is invalid: %w", typ, cachev3.GetResourceName(r), err)
			}
		}
	}
	return out, nil
}

func (o Options) listener() (*listenerv3.Listener, error) {
	addr, port := o.ListenerAddress, o.ListenerPort
	if addr == "" {
		addr = defaultListenAddr
	}
	if port == 0 {
		port = DefaultListenerPort
	}
	router, err := anypb.New(&routerv3.Router{})
	if err != nil {
		return nil, err
	}
	hcm, err := anypb.New(&hcmv3.HttpConnectionManager{
		CodecType:  hcmv3.HttpConnectionManager_AUTO,
		StatPrefix: "switchyard",
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			RouteConfigName: RouteConfigName,
			ConfigSource:    adsSource(),
		}},
		HttpFilters: []*hcmv3.HttpFilter{{
			Name:       routerFilterName,
			ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router},
		}},
	})
	if err != nil {
		return nil, err
	}
	return &listenerv3.Listener{
		Name:    ListenerName,
		Address: socketAddress(addr, port),
		FilterChains: []*listenerv3.FilterChain{{
			Filters: []*listenerv3.Filter{{
				Name:       hcmFilterName,
				ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm},
			}},
		}},
	}, nil
}

func adsSource() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ResourceApiVersion:    corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
	}
}

func socketAddress(host string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Protocol:      corev3.SocketAddress_TCP,
		Address:       host,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

// modelRoutes builds the REST and gRPC routes of a model; both carry the
// same action and the same metadata.
func modelRoutes(m *api.Model) ([]*routev3.Route, error) {
	md, err := ModelMetadata(m)
	if err != nil {
		return nil, err
	}
	name := m.Metadata.Name
	rest := &routev3.Route{
		Name: name + routeSuffixREST,
		Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_PathSeparatedPrefix{
			PathSeparatedPrefix: RESTPathPrefix + name,
		}},
		Action:   &routev3.Route_Route{Route: routeAction(m, false)},
		Metadata: md,
	}
	grpc := &routev3.Route{
		Name: name + routeSuffixGRPC,
		Match: &routev3.RouteMatch{
			PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: GRPCPathPrefix},
			Headers: []*routev3.HeaderMatcher{{
				Name: ModelHeader,
				HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
					MatchPattern: &matcherv3.StringMatcher_Exact{Exact: name},
				}},
			}},
		},
		Action:   &routev3.Route_Route{Route: routeAction(m, true)},
		Metadata: proto.Clone(md).(*corev3.Metadata),
	}
	return []*routev3.Route{rest, grpc}, nil
}

func routeAction(m *api.Model, grpc bool) *routev3.RouteAction {
	s := &m.Spec
	wc := &routev3.WeightedCluster{}
	for _, v := range s.Versions {
		w := s.Traffic.Weights[v.Name]
		if w <= 0 {
			continue
		}
		wc.Clusters = append(wc.Clusters, &routev3.WeightedCluster_ClusterWeight{
			Name:   ClusterName(m.Metadata.Name, v.Name),
			Weight: wrapperspb.UInt32(uint32(w)),
			RequestHeadersToAdd: []*corev3.HeaderValueOption{{
				Header:       &corev3.HeaderValue{Key: VersionHeader, Value: v.Name},
				AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
			}},
		})
	}
	a := &routev3.RouteAction{
		ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: wc},
		Timeout:          durationpb.New(s.Timeout.D()),
	}
	if r := s.Retries; r != nil && r.Attempts > 0 {
		on := retryOn
		if grpc {
			on = grpcRetryOn
		}
		a.RetryPolicy = &routev3.RetryPolicy{RetryOn: on, NumRetries: wrapperspb.UInt32(uint32(r.Attempts))}
	}
	if sh := s.Shadow; sh != nil {
		a.RequestMirrorPolicies = []*routev3.RouteAction_RequestMirrorPolicy{{
			Cluster: ClusterName(m.Metadata.Name, sh.Version),
			RuntimeFraction: &corev3.RuntimeFractionalPercent{
				DefaultValue: &typev3.FractionalPercent{
					Numerator:   uint32(math.Round(sh.Percent * 10000)),
					Denominator: typev3.FractionalPercent_MILLION,
				},
				RuntimeKey: "switchyard.shadow." + m.Metadata.Name,
			},
		}}
	}
	return a
}

// ModelMetadata is the route metadata carrying the Model document (without
// endpoints, which travel in EDS) under filter_metadata["switchyard"].
func ModelMetadata(m *api.Model) (*corev3.Metadata, error) {
	doc := m.Clone()
	for i := range doc.Spec.Versions {
		doc.Spec.Versions[i].Endpoints = nil
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return nil, err
	}
	var raw map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, err
	}
	st, err := structpb.NewStruct(raw)
	if err != nil {
		return nil, fmt.Errorf("model metadata: %w", err)
	}
	return &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{MetadataKey: st}}, nil
}

// versionCluster builds a version's Cluster and, for IP endpoints, its
// ClusterLoadAssignment (EDS over ADS). A version with a DNS-name endpoint
// becomes a STRICT_DNS cluster with its load assignment inline (EDS carries
// IP addresses only), and no ClusterLoadAssignment.
func versionCluster(m *api.Model, v *api.Version) (*clusterv3.Cluster, *endpointv3.ClusterLoadAssignment) {
	name := ClusterName(m.Metadata.Name, v.Name)
	s := &m.Spec
	c := &clusterv3.Cluster{
		Name:           name,
		ConnectTimeout: durationpb.New(connectTimeout),
		LbPolicy:       clusterv3.Cluster_LEAST_REQUEST,
		Metadata: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{MetadataKey: {Fields: map[string]*structpb.Value{
			"model":          structpb.NewStringValue(m.Metadata.Name),
			"version":        structpb.NewStringValue(v.Name),
			"protocol":       structpb.NewStringValue(v.Protocol),
			"backendModel":   structpb.NewStringValue(v.BackendModel),
			"backendVersion": structpb.NewStringValue(v.BackendVersion),
		}}}},
	}
	th := &clusterv3.CircuitBreakers_Thresholds{Priority: corev3.RoutingPriority_DEFAULT}
	od := &clusterv3.OutlierDetection{
		Consecutive_5Xx:    wrapperspb.UInt32(uint32(api.DefaultBreakerFailures)),
		Interval:           durationpb.New(outlierInterval),
		BaseEjectionTime:   durationpb.New(api.DefaultBreakerOpenFor.D()),
		MaxEjectionPercent: wrapperspb.UInt32(100),
	}
	if f := s.Fallback; f != nil {
		od.Consecutive_5Xx = wrapperspb.UInt32(uint32(f.Breaker.ConsecutiveFailures))
		// Envoy ejects for base × the number of ejections, up to max: the
		// breaker's first open growing to openFor.
		first := f.Breaker.FirstOpenFor.D()
		if first <= 0 {
			first = min(time.Second, f.Breaker.OpenFor.D())
		}
		od.BaseEjectionTime = durationpb.New(first)
		od.MaxEjectionTime = durationpb.New(f.Breaker.OpenFor.D())
		if f.Breaker.FailureRatio > 0 {
			od.FailurePercentageThreshold = wrapperspb.UInt32(uint32(math.Round(f.Breaker.FailureRatio * 100)))
			od.EnforcingFailurePercentage = wrapperspb.UInt32(100)
			od.FailurePercentageRequestVolume = wrapperspb.UInt32(uint32(f.Breaker.MinRequests))
		}
	}
	if c := s.ConcurrencyOf(); c != nil {
		// Envoy's max_requests is a fixed cap: the adaptive limit's ceiling.
		limit := c.Limit
		if c.Adaptive {
			limit = c.MaxLimit
			if limit <= 0 {
				limit = api.DefaultConcurrencyMaxLimit
			}
		}
		th.MaxRequests = wrapperspb.UInt32(uint32(limit))
	}
	if r := s.Retries; r != nil && r.Attempts > 0 {
		th.RetryBudget = &clusterv3.CircuitBreakers_Thresholds_RetryBudget{
			BudgetPercent:       &typev3.Percent{Value: r.BudgetPercent},
			MinRetryConcurrency: wrapperspb.UInt32(minRetryConcurr),
		}
	}
	c.TransportSocket = upstreamTransportSocket(v)
	c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{th}}
	c.OutlierDetection = od
	if v.Protocol == api.ProtocolGRPC {
		opts, err := anypb.New(&upstreamhttpv3.HttpProtocolOptions{
			UpstreamProtocolOptions: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{
				ExplicitHttpConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
					ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{
						Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
					},
				},
			},
		})
		if err != nil {
			panic(fmt.Sprintf("xdsconv: marshal HttpProtocolOptions: %v", err)) // static message: cannot fail
		}
		c.TypedExtensionProtocolOptions = map[string]*anypb.Any{http2OptionsKey: opts}
	}
	cla := loadAssignment(name, v.Endpoints)
	allIP := true
	for _, ep := range v.Endpoints {
		allIP = allIP && api.IsIPEndpoint(ep)
	}
	if !allIP {
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS}
		c.LoadAssignment = cla
		return c, nil
	}
	c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}
	c.EdsClusterConfig = &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource(), ServiceName: name}
	return c, cla
}

func loadAssignment(name string, eps []string) *endpointv3.ClusterLoadAssignment {
	lbs := make([]*endpointv3.LbEndpoint, 0, len(eps))
	for _, ep := range eps {
		host, portStr, _ := net.SplitHostPort(ep) // validated
		port, _ := strconv.ParseUint(portStr, 10, 16)
		lbs = append(lbs, &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{
			Endpoint: &endpointv3.Endpoint{Address: socketAddress(host, uint32(port))},
		}})
	}
	return &endpointv3.ClusterLoadAssignment{
		ClusterName: name,
		Endpoints:   []*endpointv3.LocalityLbEndpoints{{LbEndpoints: lbs}},
	}
}
