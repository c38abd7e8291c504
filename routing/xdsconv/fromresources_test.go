package xdsconv

import (
	"errors"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/switchyard-dev/switchyard/api"
)

func anyOf(typeURL string, b []byte) *anypb.Any { return &anypb.Any{TypeUrl: typeURL, Value: b} }

// fresh returns newly translated (unshared) resources for the recommender
// and search models.
func fresh(t *testing.T) Resources {
	t.Helper()
	res, err := Translate([]api.Model{recommender(t), model(t, simpleYAML)}, "1")
	if err != nil {
		t.Fatal(err)
	}
	r, err := ResourcesFromMap(res)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func route(r Resources, name string) *routev3.Route {
	for _, rt := range r.Routes[0].GetVirtualHosts()[0].GetRoutes() {
		if rt.GetName() == name {
			return rt
		}
	}
	return nil
}

func cluster(r Resources, name string) *clusterv3.Cluster {
	for _, c := range r.Clusters {
		if c.GetName() == name {
			return c
		}
	}
	return nil
}

func setMetadataField(t *testing.T, rt *routev3.Route, path []string, v any) {
	t.Helper()
	st := rt.GetMetadata().GetFilterMetadata()[MetadataKey]
	for _, p := range path[:len(path)-1] {
		st = st.GetFields()[p].GetStructValue()
	}
	val, err := structpb.NewValue(v)
	if err != nil {
		t.Fatal(err)
	}
	st.Fields[path[len(path)-1]] = val
}

func TestFromResourcesRejects(t *testing.T) {
	tests := map[string]struct {
		edit func(t *testing.T, r *Resources)
		want string
		// mismatch: the types disagree with each other (ErrMismatch), as
		// they may between two snapshots, rather than one being faulty.
		mismatch bool
	}{
		"missing route configuration": {
			edit:     func(t *testing.T, r *Resources) { r.Routes = nil },
			want:     `no route configuration "switchyard", but 4 clusters`,
			mismatch: true,
		},
		"other route configuration": {
			edit: func(t *testing.T, r *Resources) { r.Routes[0].Name = "other" },
			want: `route configuration "other": want only "switchyard"`,
		},
		"duplicate route configuration": {
			edit: func(t *testing.T, r *Resources) { r.Routes = append(r.Routes, r.Routes[0]) },
			want: `route configuration "switchyard" appears twice`,
		},
		"route without metadata": {
			edit: func(t *testing.T, r *Resources) { route(*r, "search/rest").Metadata = nil },
			want: `route "search/rest" (virtual host "switchyard", index 2): no filter_metadata "switchyard"`,
		},
		"metadata unknown field": {
			edit: func(t *testing.T, r *Resources) {
				setMetadataField(t, route(*r, "search/rest"), []string{"spec", "trafic"}, map[string]any{})
			},
			want: `route "search/rest" (virtual host "switchyard", index 2): metadata "switchyard": spec.trafic: unknown field`,
		},
		"metadata invalid value": {
			edit: func(t *testing.T, r *Resources) {
				setMetadataField(t, route(*r, "recommender/rest"), []string{"spec", "timeout"}, "-1s")
			},
			want: `metadata "switchyard": spec.timeout: must be a positive duration`,
		},
		"routes of one model disagree": {
			edit: func(t *testing.T, r *Resources) {
				setMetadataField(t, route(*r, "search/grpc"), []string{"metadata", "labels"}, map[string]any{"a": "b"})
			},
			want: `route "search/grpc" (virtual host "switchyard", index 3): model "search" differs from route "search/rest"`,
		},
		"weight disagrees": {
			edit: func(t *testing.T, r *Resources) {
				route(*r, "recommender/rest").GetRoute().GetWeightedClusters().GetClusters()[0].Weight = wrapperspb.UInt32(1)
			},
			want: `weighted cluster "recommender_v1" has weight 1, but spec.traffic.weights.v1 is 80`,
		},
		"foreign weighted cluster": {
			edit: func(t *testing.T, r *Resources) {
				wc := route(*r, "search/rest").GetRoute().GetWeightedClusters()
				wc.Clusters = append(wc.Clusters, &routev3.WeightedCluster_ClusterWeight{Name: "recommender_v1", Weight: wrapperspb.UInt32(1)})
			},
			want: `weighted cluster "recommender_v1" is not a version of model "search"`,
		},
		"no weighted clusters": {
			edit: func(t *testing.T, r *Resources) {
				route(*r, "search/rest").GetRoute().ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: "search_v1"}
			},
			want: `route action has no weighted_clusters`,
		},
		"timeout disagrees": {
			edit: func(t *testing.T, r *Resources) { route(*r, "search/grpc").GetRoute().Timeout = durationpb.New(0) },
			want: `route timeout 0s, but spec.timeout is 1s`,
		},
		"rest prefix of another model": {
			edit: func(t *testing.T, r *Resources) {
				route(*r, "search/rest").Match.PathSpecifier = &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: "/v2/models/other"}
			},
			want: `path_separated_prefix "/v2/models/other" does not match model "search"`,
		},
		"grpc route without header": {
			edit: func(t *testing.T, r *Resources) { route(*r, "search/grpc").Match.Headers = nil },
			want: `gRPC route lacks header match x-switchyard-model: "search"`,
		},
		"missing cluster": {
			edit: func(t *testing.T, r *Resources) {
				var keep []*clusterv3.Cluster
				for _, c := range r.Clusters {
					if c.GetName() != "recommender_v2" {
						keep = append(keep, c)
					}
				}
				r.Clusters = keep
			},
			want:     `model "recommender" version "v2": no cluster "recommender_v2"`,
			mismatch: true,
		},
		"duplicate cluster": {
			edit: func(t *testing.T, r *Resources) { r.Clusters = append(r.Clusters, r.Clusters[0]) },
			want: `cluster "recommender_lite" appears twice`,
		},
		"stray cluster": {
			edit: func(t *testing.T, r *Resources) {
				c := proto.Clone(r.Clusters[0]).(*clusterv3.Cluster)
				c.Name = "stray_v1"
				r.Clusters = append(r.Clusters, c)
			},
			want:     `cluster "stray_v1" belongs to no model version`,
			mismatch: true,
		},
		"missing load assignment": {
			edit:     func(t *testing.T, r *Resources) { r.Endpoints = r.Endpoints[1:] },
			want:     `model "recommender" version "lite": cluster "recommender_lite": no cluster load assignment "recommender_lite"`,
			mismatch: true,
		},
		"cluster metadata of another version": {
			edit: func(t *testing.T, r *Resources) {
				cluster(*r, "search_v1").GetMetadata().GetFilterMetadata()[MetadataKey].Fields["version"] = structpb.NewStringValue("v2")
			},
			want: `cluster "search_v1": filter_metadata "switchyard" names model "search" version "v2"`,
		},
		"unsupported cluster type": {
			edit: func(t *testing.T, r *Resources) {
				cluster(*r, "search_v1").ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST}
			},
			want: `unsupported discovery type ORIGINAL_DST`,
		},
		"endpoint without port": {
			edit: func(t *testing.T, r *Resources) {
				r.Endpoints[3].GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress().PortSpecifier = nil
			},
			want: `cluster "search_v1": endpoint 0 (10.0.0.1): want a port_value 1..65535`,
		},
		"endpoint pipe": {
			edit: func(t *testing.T, r *Resources) {
				r.Endpoints[3].GetEndpoints()[0].GetLbEndpoints()[1].GetEndpoint().Address = &corev3.Address{
					Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: "/tmp/x"}}}
			},
			want: `endpoint 1: want a socket address`,
		},
		"no endpoints": {
			edit: func(t *testing.T, r *Resources) { r.Endpoints[3].Endpoints = nil },
			want: `cluster "search_v1": no endpoints`,
		},
		"listener without rds": {
			edit: func(t *testing.T, r *Resources) {
				r.Listeners[0].FilterChains = []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{Name: "x"}}}}
			},
			want: `listener "switchyard": filter "x" has no typed_config`,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r := fresh(t)
			if _, err := r.Models(); err != nil {
				t.Fatalf("untouched resources: %v", err)
			}
			tc.edit(t, &r)
			_, err := r.Models()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want error containing\n  %s\ngot\n  %v", tc.want, err)
			}
			if got := errors.Is(err, ErrMismatch); got != tc.mismatch {
				t.Fatalf("errors.Is(%v, ErrMismatch) = %v, want %v", err, got, tc.mismatch)
			}
		})
	}
}

func TestResourcesAddRejects(t *testing.T) {
	var r Resources
	if err := r.Add(&anypb.Any{TypeUrl: "type.googleapis.com/envoy.config.cluster.v3.Cluster", Value: []byte{0xff}}); err == nil {
		t.Error("garbage payload accepted")
	}
	a, err := anypb.New(wrapperspb.String("x"))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Add(a); err == nil || !strings.Contains(err.Error(), "unexpected resource type") {
		t.Errorf("want unexpected resource type, got %v", err)
	}
}
