package xdsconv

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/switchyard-dev/switchyard/api"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/ with the current output")

// ExpectEqual fails the test with a protocmp diff when want != got.
func ExpectEqual(t *testing.T, want, got any) {
	t.Helper()
	if d := cmp.Diff(want, got, protocmp.Transform()); d != "" {
		t.Fatalf("unexpected result (-want +got):\n%s", d)
	}
}

func model(t *testing.T, yamlDoc string) api.Model {
	t.Helper()
	m, err := api.DecodeYAML([]byte(yamlDoc))
	if err != nil {
		t.Fatal(err)
	}
	if err := api.Normalize(&m); err != nil {
		t.Fatal(err)
	}
	return m
}

func recommender(t *testing.T) api.Model {
	t.Helper()
	b, err := os.ReadFile("../../api/testdata/recommender.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return model(t, string(b))
}

const simpleYAML = `
metadata: {name: search}
spec:
  versions:
    - {name: v1, endpoints: ["10.0.0.1:9000", "10.0.0.2:9000"]}
`

const grpcDNSYAML = `
metadata: {name: ranker}
spec:
  versions:
    - {name: a, endpoints: ["ranker-a.ml.svc:8001"], protocol: grpc}
    - {name: b, endpoints: ["[::1]:8002"], protocol: grpc, backendModel: ranker-b, backendVersion: "3"}
  traffic: {weights: {a: 0, b: 1}}
  timeout: 2s
  retries: {attempts: 2}
  fallback: {chain: [empty], maxConcurrency: 64, breaker: {failureRatio: 0.5, minRequests: 20}}
`

func TestTranslateSimpleModel(t *testing.T) {
	m := model(t, simpleYAML)
	res, err := Translate([]api.Model{m}, "1")
	if err != nil {
		t.Fatal(err)
	}
	md, err := ModelMetadata(&m)
	if err != nil {
		t.Fatal(err)
	}
	action := &routev3.RouteAction{
		ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{
			Clusters: []*routev3.WeightedCluster_ClusterWeight{{
				Name: "search_v1", Weight: wrapperspb.UInt32(100),
				RequestHeadersToAdd: []*corev3.HeaderValueOption{{
					Header:       &corev3.HeaderValue{Key: "x-switchyard-version", Value: "v1"},
					AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
				}},
			}},
		}},
		Timeout: durationpb.New(time.Second),
	}
	wantRC := &routev3.RouteConfiguration{Name: "switchyard", VirtualHosts: []*routev3.VirtualHost{{
		Name: "switchyard", Domains: []string{"*"},
		Routes: []*routev3.Route{
			{
				Name:     "search/rest",
				Match:    &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: "/v2/models/search"}},
				Action:   &routev3.Route_Route{Route: action},
				Metadata: md,
			},
			{
				Name: "search/grpc",
				Match: &routev3.RouteMatch{
					PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/inference.GRPCInferenceService/"},
					Headers: []*routev3.HeaderMatcher{{Name: "x-switchyard-model", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
						StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "search"}},
					}}},
				},
				Action:   &routev3.Route_Route{Route: action},
				Metadata: md,
			},
		},
	}}}
	ExpectEqual(t, []types.Resource{wantRC}, res[resource.RouteType])

	wantCluster := &clusterv3.Cluster{
		Name:                 "search_v1",
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource(), ServiceName: "search_v1"},
		ConnectTimeout:       durationpb.New(time.Second),
		LbPolicy:             clusterv3.Cluster_LEAST_REQUEST,
		CircuitBreakers:      &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{}}},
		OutlierDetection: &clusterv3.OutlierDetection{
			Consecutive_5Xx: wrapperspb.UInt32(5), Interval: durationpb.New(time.Second),
			BaseEjectionTime: durationpb.New(10 * time.Second), MaxEjectionPercent: wrapperspb.UInt32(100),
		},
		Metadata: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"switchyard": mustStruct(t, map[string]any{
			"model": "search", "version": "v1", "protocol": "http", "backendModel": "search", "backendVersion": "",
		})}},
	}
	ExpectEqual(t, []types.Resource{wantCluster}, res[resource.ClusterType])

	ep := func(ip string) *endpointv3.LbEndpoint {
		return &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address: socketAddress(ip, 9000)}}}
	}
	wantCLA := &endpointv3.ClusterLoadAssignment{ClusterName: "search_v1", Endpoints: []*endpointv3.LocalityLbEndpoints{{
		LbEndpoints: []*endpointv3.LbEndpoint{ep("10.0.0.1"), ep("10.0.0.2")},
	}}}
	ExpectEqual(t, []types.Resource{wantCLA}, res[resource.EndpointType])

	if l := res[resource.ListenerType]; len(l) != 1 || l[0].(*listenerv3.Listener).GetAddress().GetSocketAddress().GetPortValue() != DefaultListenerPort {
		t.Errorf("listener: %v", l)
	}
}

func mustStruct(t *testing.T, m map[string]any) *structpb.Struct {
	t.Helper()
	s, err := structpb.NewStruct(m)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestTranslatePolicies(t *testing.T) {
	rec := recommender(t)
	res, err := Translate([]api.Model{rec, model(t, grpcDNSYAML)}, "7")
	if err != nil {
		t.Fatal(err)
	}
	r, err := ResourcesFromMap(res)
	if err != nil {
		t.Fatal(err)
	}
	routes := r.Routes[0].GetVirtualHosts()[0].GetRoutes()
	var names []string
	for _, rt := range routes {
		names = append(names, rt.GetName())
	}
	ExpectEqual(t, []string{"ranker/rest", "ranker/grpc", "recommender/rest", "recommender/grpc"}, names)

	// ranker: weight-0 version left out; gRPC retry codes; 2s timeout.
	ranker := routes[1].GetRoute()
	ExpectEqual(t, []string{"ranker_b"}, []string{ranker.GetWeightedClusters().GetClusters()[0].GetName()})
	ExpectEqual(t, 1, len(ranker.GetWeightedClusters().GetClusters()))
	ExpectEqual(t, &routev3.RetryPolicy{RetryOn: grpcRetryOn, NumRetries: wrapperspb.UInt32(2)}, ranker.GetRetryPolicy())
	ExpectEqual(t, durationpb.New(2*time.Second), ranker.GetTimeout())

	// recommender: shadow to lite at 10 %, 80/20 split, retry policy.
	recAction := routes[2].GetRoute()
	ExpectEqual(t, []*routev3.RouteAction_RequestMirrorPolicy{{
		Cluster: "recommender_lite",
		RuntimeFraction: &corev3.RuntimeFractionalPercent{
			DefaultValue: &typev3.FractionalPercent{Numerator: 100000, Denominator: typev3.FractionalPercent_MILLION},
			RuntimeKey:   "switchyard.shadow.recommender",
		},
	}}, recAction.GetRequestMirrorPolicies())
	var weights []uint32
	for _, c := range recAction.GetWeightedClusters().GetClusters() {
		weights = append(weights, c.GetWeight().GetValue())
	}
	ExpectEqual(t, []uint32{80, 20}, weights)
	ExpectEqual(t, &routev3.RetryPolicy{RetryOn: retryOn, NumRetries: wrapperspb.UInt32(1)}, recAction.GetRetryPolicy())

	// Clusters sorted; DNS version is STRICT_DNS with inline endpoints; gRPC
	// versions speak HTTP/2; breaker and budget settings.
	var cnames []string
	byName := map[string]*clusterv3.Cluster{}
	for _, c := range r.Clusters {
		cnames = append(cnames, c.GetName())
		byName[c.GetName()] = c
	}
	ExpectEqual(t, []string{"ranker_a", "ranker_b", "recommender_lite", "recommender_v1", "recommender_v2"}, cnames)
	a := byName["ranker_a"]
	ExpectEqual(t, clusterv3.Cluster_STRICT_DNS, a.GetType())
	ExpectEqual(t, "ranker-a.ml.svc", a.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress().GetAddress())
	if a.GetTypedExtensionProtocolOptions()[http2OptionsKey] == nil || byName["recommender_v1"].GetTypedExtensionProtocolOptions() != nil {
		t.Error("HTTP/2 options must be set exactly on grpc versions")
	}
	if byName["recommender_lite"].GetTypedExtensionProtocolOptions()[http2OptionsKey] == nil {
		t.Error("grpc version recommender_lite lacks HTTP/2 options")
	}
	ExpectEqual(t, &clusterv3.CircuitBreakers_Thresholds{
		MaxRequests: wrapperspb.UInt32(64),
		RetryBudget: &clusterv3.CircuitBreakers_Thresholds_RetryBudget{BudgetPercent: &typev3.Percent{Value: 20}, MinRetryConcurrency: wrapperspb.UInt32(3)},
	}, a.GetCircuitBreakers().GetThresholds()[0])
	ExpectEqual(t, wrapperspb.UInt32(50), a.GetOutlierDetection().GetFailurePercentageThreshold())
	ExpectEqual(t, wrapperspb.UInt32(20), a.GetOutlierDetection().GetFailurePercentageRequestVolume())
	var clas []string
	for _, e := range r.Endpoints {
		clas = append(clas, e.GetClusterName())
	}
	ExpectEqual(t, []string{"ranker_b", "recommender_lite", "recommender_v1", "recommender_v2"}, clas)
}

func TestTranslateIsDeterministic(t *testing.T) {
	a, b, c := recommender(t), model(t, simpleYAML), model(t, grpcDNSYAML)
	first, err := Translate([]api.Model{a, b, c}, "1")
	if err != nil {
		t.Fatal(err)
	}
	second, err := Translate([]api.Model{c, a, b}, "1")
	if err != nil {
		t.Fatal(err)
	}
	ExpectEqual(t, first, second)
	for typ := range first {
		for i := range first[typ] {
			x, _ := proto.MarshalOptions{Deterministic: true}.Marshal(first[typ][i])
			y, _ := proto.MarshalOptions{Deterministic: true}.Marshal(second[typ][i])
			if !bytes.Equal(x, y) {
				t.Errorf("%s[%d]: encodings differ", typ, i)
			}
		}
	}
}

func TestTranslateRejects(t *testing.T) {
	good := model(t, simpleYAML)
	bad := good.Clone()
	bad.Spec.Traffic.Weights = map[string]int{"v9": 1}
	tests := map[string]struct {
		models []api.Model
		want   string
	}{
		"invalid model": {[]api.Model{bad}, `model "search": spec.traffic.weights.v9: no such version`},
		"duplicate":     {[]api.Model{good, good}, `model "search" appears twice`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := Translate(tc.models, "1")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want error containing %q, got %v", tc.want, err)
			}
		})
	}
}

func TestSnapshotConsistent(t *testing.T) {
	for name, models := range map[string][]api.Model{
		"empty": nil,
		"all":   {recommender(t), model(t, simpleYAML), model(t, grpcDNSYAML)},
	} {
		t.Run(name, func(t *testing.T) {
			snap, err := Snapshot(models, "v42")
			if err != nil {
				t.Fatal(err)
			}
			if err := snap.Consistent(); err != nil {
				t.Fatal(err)
			}
			if v := snap.GetVersion(resource.ClusterType); v != "v42" {
				t.Errorf("version %q", v)
			}
		})
	}
}

func TestRoundTrip(t *testing.T) {
	withLabels := model(t, simpleYAML)
	withLabels.Metadata.Labels = map[string]string{"team": "search"}
	tests := map[string][]api.Model{
		"none":   {},
		"simple": {model(t, simpleYAML)},
		"all":    {recommender(t), withLabels, model(t, grpcDNSYAML)},
	}
	for name, models := range tests {
		t.Run(name, func(t *testing.T) {
			res, err := Translate(models, "1")
			if err != nil {
				t.Fatal(err)
			}
			r, err := ResourcesFromMap(res)
			if err != nil {
				t.Fatal(err)
			}
			got, err := r.Models()
			if err != nil {
				t.Fatal(err)
			}
			want := append([]api.Model(nil), models...)
			sortModels(want)
			if len(want) == 0 {
				want = []api.Model{}
			}
			if d := cmp.Diff(want, got); d != "" {
				t.Fatalf("round trip (-want +got):\n%s", d)
			}
			// And through the wire form (Any), as a proxy receives it.
			var wire Resources
			for _, typ := range []string{resource.ListenerType, resource.RouteType, resource.ClusterType, resource.EndpointType} {
				for _, x := range res[typ] {
					b, err := proto.Marshal(x)
					if err != nil {
						t.Fatal(err)
					}
					a := anyOf(typ, b)
					if err := wire.Add(a); err != nil {
						t.Fatal(err)
					}
				}
			}
			got2, err := wire.Models()
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(want, got2); d != "" {
				t.Fatalf("wire round trip (-want +got):\n%s", d)
			}
		})
	}
}

func sortModels(ms []api.Model) {
	for i := 1; i < len(ms); i++ {
		for j := i; j > 0 && ms[j].Metadata.Name < ms[j-1].Metadata.Name; j-- {
			ms[j], ms[j-1] = ms[j-1], ms[j]
		}
	}
}

// TestGolden compares whole snapshots with indented protojson files in
// testdata/. Run `go test ./routing/xdsconv -run Golden -update` after an
// intended change and review the diff.
func TestGolden(t *testing.T) {
	tests := map[string][]api.Model{
		"empty":       nil,
		"recommender": {recommender(t)},
		"mixed":       {model(t, simpleYAML), model(t, grpcDNSYAML)},
	}
	for name, models := range tests {
		t.Run(name, func(t *testing.T) {
			res, err := Translate(models, "1")
			if err != nil {
				t.Fatal(err)
			}
			got := goldenJSON(t, res)
			path := filepath.Join("testdata", name+".golden.json")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if d := cmp.Diff(string(want), string(got)); d != "" {
				t.Errorf("%s differs (-want +got); rerun with -update if intended:\n%s", path, d)
			}
		})
	}
}

func goldenJSON(t *testing.T, res map[resource.Type][]types.Resource) []byte {
	t.Helper()
	var out bytes.Buffer
	out.WriteString("{\n")
	order := []string{resource.ListenerType, resource.RouteType, resource.ClusterType, resource.EndpointType}
	for i, typ := range order {
		out.WriteString("  " + jsonString(typ) + ": [")
		for j, r := range res[typ] {
			b, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			// protojson output is deliberately unstable in whitespace;
			// re-indent through encoding/json for stable files.
			var buf bytes.Buffer
			if err := json.Indent(&buf, compact(t, b), "    ", "  "); err != nil {
				t.Fatal(err)
			}
			if j > 0 {
				out.WriteString(",")
			}
			out.WriteString("\n    ")
			out.Write(buf.Bytes())
		}
		if len(res[typ]) > 0 {
			out.WriteString("\n  ")
		}
		out.WriteString("]")
		if i < len(order)-1 {
			out.WriteString(",")
		}
		out.WriteString("\n")
	}
	out.WriteString("}\n")
	return out.Bytes()
}

func compact(t *testing.T, b []byte) []byte {
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
