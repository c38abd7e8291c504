package xdsconv

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/switchyard-dev/switchyard/api"
)

// ErrMismatch marks a conversion error that is a disagreement between
// resource types rather than a fault in one resource: a cluster that no
// model version names, a version whose cluster or load assignment is
// missing, clusters without a route configuration. A client holding some
// types of a newer snapshot than others (between two snapshots) meets it;
// errors.Is(err, ErrMismatch) tells it apart. The message is unchanged.
var ErrMismatch = errors.New("resource types disagree")

type mismatchError struct{ error }

func (e mismatchError) Unwrap() []error { return []error{e.error, ErrMismatch} }

func mismatch(format string, args ...any) error {
	return mismatchError{fmt.Errorf(format, args...)}
}

// Resources holds decoded xDS resources of the four types Switchyard uses.
type Resources struct {
	Listeners []*listenerv3.Listener
	Routes    []*routev3.RouteConfiguration
	Clusters  []*clusterv3.Cluster
	Endpoints []*endpointv3.ClusterLoadAssignment
}

// Add decodes one resource as it arrives in a DiscoveryResponse and appends
// it to the matching list. Unknown types and undecodable payloads are errors.
func (r *Resources) Add(a *anypb.Any) error {
	msg, err := a.UnmarshalNew()
	if err != nil {
		return fmt.Errorf("decode %s: %w", a.GetTypeUrl(), err)
	}
	switch x := msg.(type) {
	case *listenerv3.Listener:
		r.Listeners = append(r.Listeners, x)
	case *routev3.RouteConfiguration:
		r.Routes = append(r.Routes, x)
	case *clusterv3.Cluster:
		r.Clusters = append(r.Clusters, x)
	case *endpointv3.ClusterLoadAssignment:
		r.Endpoints = append(r.Endpoints, x)
	default:
		return fmt.Errorf("unexpected resource type %s", a.GetTypeUrl())
	}
	return nil
}

// ResourcesFromMap splits Translate's output (or a snapshot's resources)
// into typed lists.
func ResourcesFromMap(m map[resource.Type][]types.Resource) (Resources, error) {
	var r Resources
	for typ, rs := range m {
		for _, x := range rs {
			switch v := x.(type) {
			case *listenerv3.Listener:
				r.Listeners = append(r.Listeners, v)
			case *routev3.RouteConfiguration:
				r.Routes = append(r.Routes, v)
			case *clusterv3.Cluster:
				r.Clusters = append(r.Clusters, v)
			case *endpointv3.ClusterLoadAssignment:
				r.Endpoints = append(r.Endpoints, v)
			default:
				return r, fmt.Errorf("unexpected resource %T under %s", x, typ)
			}
		}
	}
	return r, nil
}

// Models is FromResources over r.
func (r Resources) Models() ([]api.Model, error) {
	return FromResources(r.Listeners, r.Routes, r.Clusters, r.Endpoints)
}

// FromResources reads the desired state back out of xDS resources: the
// inverse of Translate. Each model comes from the route metadata
// filter_metadata["switchyard"] of its routes in the RouteConfiguration
// "switchyard"; its versions' endpoints come from the ClusterLoadAssignment
// of each version's EDS cluster (or the inline load assignment of a
// STRICT_DNS cluster), in their order. The returned models are defaulted,
// valid and sorted by name.
//
// Anything malformed is an error that names the resource and the problem
// (a client NACKs the update with it): a missing or duplicate
// RouteConfiguration, a route without Switchyard metadata or with metadata
// that is not a valid Model, REST and gRPC routes of one model that
// disagree, weighted clusters that disagree with the weights, a missing
// cluster or load assignment, a cluster of the wrong discovery type, or an
// endpoint that is not a TCP socket address with a port. If listeners are
// given, each must route through RDS "switchyard" over ADS. Empty inputs
// give no models and no error.
func FromResources(listeners []*listenerv3.Listener, routes []*routev3.RouteConfiguration,
	clusters []*clusterv3.Cluster, endpoints []*endpointv3.ClusterLoadAssignment) ([]api.Model, error) {
	for _, l := range listeners {
		if err := checkListener(l); err != nil {
			return nil, fmt.Errorf("listener %q: %w", l.GetName(), err)
		}
	}
	clusterByName := make(map[string]*clusterv3.Cluster, len(clusters))
	for _, c := range clusters {
		if c == nil || c.GetName() == "" {
			return nil, errors.New("cluster without a name")
		}
		if _, dup := clusterByName[c.GetName()]; dup {
			return nil, fmt.Errorf("cluster %q appears twice", c.GetName())
		}
		clusterByName[c.GetName()] = c
	}
	claByName := make(map[string]*endpointv3.ClusterLoadAssignment, len(endpoints))
	for _, e := range endpoints {
		if e == nil || e.GetClusterName() == "" {
			return nil, errors.New("cluster load assignment without a cluster name")
		}
		if _, dup := claByName[e.GetClusterName()]; dup {
			return nil, fmt.Errorf("cluster load assignment %q appears twice", e.GetClusterName())
		}
		claByName[e.GetClusterName()] = e
	}

	var rc *routev3.RouteConfiguration
	for _, r := range routes {
		if r.GetName() != RouteConfigName {
			return nil, fmt.Errorf("route configuration %q: want only %q", r.GetName(), RouteConfigName)
		}
		if rc != nil {
			return nil, fmt.Errorf("route configuration %q appears twice", RouteConfigName)
		}
		rc = r
	}
	if rc == nil {
		if len(clusters) > 0 {
			return nil, mismatch("no route configuration %q, but %d clusters", RouteConfigName, len(clusters))
		}
		return nil, nil
	}

	type modelRoutes struct {
		model  api.Model
		source string // route name the model was read from
		seen   int
	}
	byName := map[string]*modelRoutes{}
	var names []string
	for _, vh := range rc.GetVirtualHosts() {
		for i, rt := range vh.GetRoutes() {
			where := fmt.Sprintf("route %q (virtual host %q, index %d)", rt.GetName(), vh.GetName(), i)
			m, err := modelFromRoute(rt)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", where, err)
			}
			name := m.Metadata.Name
			if err := checkRoute(rt, &m); err != nil {
				return nil, fmt.Errorf("%s: %w", where, err)
			}
			if prev, ok := byName[name]; ok {
				if err := sameModel(prev.model, m); err != nil {
					return nil, fmt.Errorf("%s: model %q differs from route %q: %w", where, name, prev.source, err)
				}
				prev.seen++
				continue
			}
			byName[name] = &modelRoutes{model: m, source: rt.GetName(), seen: 1}
			names = append(names, name)
		}
	}
	sort.Strings(names)
	used := map[string]bool{}
	out := make([]api.Model, 0, len(names))
	for _, name := range names {
		m := byName[name].model
		for i := range m.Spec.Versions {
			v := &m.Spec.Versions[i]
			cn := ClusterName(name, v.Name)
			c, ok := clusterByName[cn]
			if !ok {
				return nil, mismatch("model %q version %q: no cluster %q", name, v.Name, cn)
			}
			used[cn] = true
			eps, err := clusterEndpoints(c, claByName, name, v)
			if err != nil {
				return nil, fmt.Errorf("model %q version %q: cluster %q: %w", name, v.Name, cn, err)
			}
			v.Endpoints = eps
			// The cluster's transport_socket is the version's TLS (an
			// Envoy reads the same); without one, the document's own
			// (absent, or tls.disabled) stands.
			t, err := upstreamTLSFromCluster(c)
			if err != nil {
				return nil, fmt.Errorf("model %q version %q: cluster %q: %w", name, v.Name, cn, err)
			}
			if t != nil {
				v.TLS = t
			}
		}
		if err := m.Validate(); err != nil {
			return nil, fmt.Errorf("model %q: %w", name, err)
		}
		out = append(out, m)
	}
	for _, c := range clusters {
		if !used[c.GetName()] {
			return nil, mismatch("cluster %q belongs to no model version", c.GetName())
		}
	}
	return out, nil
}

func checkListener(l *listenerv3.Listener) error {
	if l == nil {
		return errors.New("nil listener")
	}
	for _, fc := range l.GetFilterChains() {
		for _, f := range fc.GetFilters() {
			tc := f.GetTypedConfig()
			if tc == nil {
				return fmt.Errorf("filter %q has no typed_config", f.GetName())
			}
			var hcm hcmv3.HttpConnectionManager
			if err := tc.UnmarshalTo(&hcm); err != nil {
				return fmt.Errorf("filter %q: want an HttpConnectionManager: %v", f.GetName(), err)
			}
			rds := hcm.GetRds()
			if rds == nil || rds.GetRouteConfigName() != RouteConfigName || rds.GetConfigSource().GetAds() == nil {
				return fmt.Errorf("filter %q: want RDS %q over ADS", f.GetName(), RouteConfigName)
			}
			return nil
		}
	}
	return errors.New("no HTTP connection manager filter")
}

// modelFromRoute decodes, defaults and validates the Model document in the
// route's metadata (endpoints are filled from EDS later, so the endpoint
// check is left to the caller).
func modelFromRoute(rt *routev3.Route) (api.Model, error) {
	st := rt.GetMetadata().GetFilterMetadata()[MetadataKey]
	if st == nil {
		return api.Model{}, fmt.Errorf("no filter_metadata %q", MetadataKey)
	}
	b, err := json.Marshal(st.AsMap())
	if err != nil {
		return api.Model{}, fmt.Errorf("metadata %q: %v", MetadataKey, err)
	}
	m, err := api.DecodeJSON(b)
	if err != nil {
		return api.Model{}, fmt.Errorf("metadata %q: %w", MetadataKey, err)
	}
	m.Defaults()
	if err := m.Validate(); err != nil {
		// Endpoints travel in EDS: ignore only the "endpoints required"
		// errors here; the full document is validated once they are in.
		var ve api.ValidationError
		if !errors.As(err, &ve) {
			return api.Model{}, fmt.Errorf("metadata %q: %w", MetadataKey, err)
		}
		var rest api.ValidationError
		for _, fe := range ve {
			if strings.HasSuffix(fe.Field, ".endpoints") && len(versionEndpoints(&m, fe.Field)) == 0 {
				continue
			}
			rest = append(rest, fe)
		}
		if len(rest) > 0 {
			return api.Model{}, fmt.Errorf("metadata %q: %w", MetadataKey, rest)
		}
	}
	return m, nil
}

func versionEndpoints(m *api.Model, field string) []string {
	for i := range m.Spec.Versions {
		if field == fmt.Sprintf("spec.versions[%d].endpoints", i) {
			return m.Spec.Versions[i].Endpoints
		}
	}
	return []string{"?"}
}

// checkRoute verifies the route's match and weighted clusters agree with the
// model in its metadata.
func checkRoute(rt *routev3.Route, m *api.Model) error {
	name := m.Metadata.Name
	match := rt.GetMatch()
	switch {
	case match.GetPathSeparatedPrefix() != "":
		if want := RESTPathPrefix + name; match.GetPathSeparatedPrefix() != want {
			return fmt.Errorf("path_separated_prefix %q does not match model %q (want %q)", match.GetPathSeparatedPrefix(), name, want)
		}
	case match.GetPrefix() == GRPCPathPrefix:
		ok := false
		for _, h := range match.GetHeaders() {
			if h.GetName() == ModelHeader && h.GetStringMatch().GetExact() == name {
				ok = true
			}
		}
		if !ok {
			return fmt.Errorf("gRPC route lacks header match %s: %q", ModelHeader, name)
		}
	default:
		return fmt.Errorf("route match is neither the REST prefix %q nor the gRPC prefix %q", RESTPathPrefix+name, GRPCPathPrefix)
	}
	wc := rt.GetRoute().GetWeightedClusters()
	if wc == nil {
		return errors.New("route action has no weighted_clusters")
	}
	got := map[string]int{}
	for _, cw := range wc.GetClusters() {
		if _, dup := got[cw.GetName()]; dup {
			return fmt.Errorf("weighted cluster %q appears twice", cw.GetName())
		}
		got[cw.GetName()] = int(cw.GetWeight().GetValue())
	}
	for _, v := range m.Spec.Versions {
		cn := ClusterName(name, v.Name)
		want := m.Spec.Traffic.Weights[v.Name]
		w, ok := got[cn]
		if want > 0 && (!ok || w != want) {
			return fmt.Errorf("weighted cluster %q has weight %d, but spec.traffic.weights.%s is %d", cn, w, v.Name, want)
		}
		if want == 0 && ok && w != 0 {
			return fmt.Errorf("weighted cluster %q has weight %d, but version %q has no weight", cn, w, v.Name)
		}
		delete(got, cn)
	}
	for cn := range got {
		return fmt.Errorf("weighted cluster %q is not a version of model %q", cn, name)
	}
	if want := m.Spec.Timeout.D(); rt.GetRoute().GetTimeout().AsDuration() != want {
		return fmt.Errorf("route timeout %s, but spec.timeout is %s", rt.GetRoute().GetTimeout().AsDuration(), want)
	}
	return nil
}

func sameModel(a, b api.Model) error {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	if string(ja) != string(jb) {
		return errors.New("the routes of one model carry different metadata")
	}
	return nil
}

func clusterEndpoints(c *clusterv3.Cluster, clas map[string]*endpointv3.ClusterLoadAssignment, model string, v *api.Version) ([]string, error) {
	md := c.GetMetadata().GetFilterMetadata()[MetadataKey].GetFields()
	if md["model"].GetStringValue() != model || md["version"].GetStringValue() != v.Name {
		return nil, fmt.Errorf("filter_metadata %q names model %q version %q", MetadataKey, md["model"].GetStringValue(), md["version"].GetStringValue())
	}
	var cla *endpointv3.ClusterLoadAssignment
	switch c.GetType() {
	case clusterv3.Cluster_EDS:
		svc := c.GetEdsClusterConfig().GetServiceName()
		if svc == "" {
			svc = c.GetName()
		}
		cla = clas[svc]
		if cla == nil {
			return nil, mismatch("no cluster load assignment %q", svc)
		}
	case clusterv3.Cluster_STRICT_DNS, clusterv3.Cluster_STATIC, clusterv3.Cluster_LOGICAL_DNS:
		cla = c.GetLoadAssignment()
		if cla == nil {
			return nil, fmt.Errorf("%s cluster without load_assignment", c.GetType())
		}
	default:
		return nil, fmt.Errorf("unsupported discovery type %s", c.GetType())
	}
	var eps []string
	for _, loc := range cla.GetEndpoints() {
		for i, lb := range loc.GetLbEndpoints() {
			sa := lb.GetEndpoint().GetAddress().GetSocketAddress()
			if sa == nil || sa.GetAddress() == "" {
				return nil, fmt.Errorf("endpoint %d: want a socket address", i)
			}
			port := sa.GetPortValue()
			if port == 0 || port > 65535 {
				return nil, fmt.Errorf("endpoint %d (%s): want a port_value 1..65535", i, sa.GetAddress())
			}
			eps = append(eps, net.JoinHostPort(sa.GetAddress(), strconv.FormatUint(uint64(port), 10)))
		}
	}
	if len(eps) == 0 {
		return nil, errors.New("no endpoints")
	}
	return eps, nil
}
