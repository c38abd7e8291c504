// Package xdsconv translates Switchyard's desired state (api.Model) to
// Envoy xDS resources and back. It is pure: values in, values out; no I/O,
// clocks or goroutines.
//
// Control plane side:
//
//	res, err := xdsconv.Translate(models, version)  // map[resource.Type][]types.Resource
//	snap, err := xdsconv.Snapshot(models, version)  // *cachev3.Snapshot, Consistent() checked
//	xdsconv.Options{ListenerAddress: "0.0.0.0", ListenerPort: 10000}.Translate(...)
//
// The output, sorted by name, every resource passing its generated
// ValidateAll():
//   - Listener "switchyard": HTTP connection manager, RDS "switchyard" over ADS,
//     router filter.
//   - RouteConfiguration "switchyard", one virtual host "switchyard" (domains
//     "*"); per model (sorted by name) two routes with the same action:
//     "{model}/rest" matching path_separated_prefix /v2/models/{model}, and
//     "{model}/grpc" matching prefix /inference.GRPCInferenceService/ plus
//     header x-switchyard-model: {model} (ModelHeader; the sidecar or an edge
//     filter sets it from ModelInfer's model_name). Action: weighted_clusters
//     (versions with weight > 0, document order, each adding request header
//     x-switchyard-version: {version}), timeout = spec.timeout, retry_policy
//     (spec.retries), request_mirror_policies for spec.shadow (runtime_fraction
//     percent per million). The route metadata filter_metadata["switchyard"]
//     is the whole Model document as a google.protobuf.Struct, without
//     endpoints (those travel in EDS, so an endpoint change only touches EDS).
//   - Cluster "{model}_{version}" (ClusterName) per version: EDS over ADS
//     (service_name = cluster name), LEAST_REQUEST, circuit_breakers
//     (max_requests = fallback.maxConcurrency, retry_budget =
//     retries.budgetPercent), outlier_detection (fallback.breaker), HTTP/2
//     upstream protocol options for grpc versions, filter_metadata
//     ["switchyard"] = {model, version, protocol, backendModel,
//     backendVersion}. A version with a DNS-name endpoint becomes a
//     STRICT_DNS cluster with an inline load_assignment instead of EDS.
//   - ClusterLoadAssignment "{model}_{version}" per EDS cluster, endpoints in
//     document order.
//
// Proxy side (the inverse; any error means NACK, with the error as
// error_detail):
//
//	models, err := xdsconv.FromResources(listeners, routes, clusters, endpoints)
//
//	var r xdsconv.Resources      // or accumulate DiscoveryResponse resources:
//	err := r.Add(anyResource)    // per *anypb.Any, decoded by type URL
//	models, err := r.Models()
//
// FromResources returns the models sorted by name, defaulted and validated,
// with each version's Endpoints ("host:port") resolved from its
// ClusterLoadAssignment (or inline load assignment). Round trip:
// FromResources(Translate(models)) == models (after Defaults).
package xdsconv
