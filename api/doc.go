// Package api holds Switchyard's wire types, shared by the control plane,
// syctl and the proxy (Contour's apis/ is the model): nothing here runs a
// server, so a client links none.
//
//   - The Model document (model.go): the desired state of one virtual
//     model, its whole traffic policy, as plain structs. The control plane
//     decodes a document strictly (DecodeJSON, DecodeYAML: unknown fields
//     and wrong types are errors naming the field), applies Defaults,
//     checks it with Validate (a ValidationError lists every bad field by
//     path, e.g. "spec.traffic.weights.v9: no such version (versions: v1,
//     v2)"), stores it, and translates it to xDS (package routing/xdsconv).
//     The proxy reads the same structs back out of xDS.
//   - The control plane's REST API (rest.go): the request and response
//     bodies of /v1/... (ModelResponse, AuditEntry, AckResult,
//     ErrorResponse, CanaryStatus, ...), also the records the store keeps.
//   - The proxies' stats stream (api/statspb): generated protobuf code.
//
// JSON field names, xDS metadata and the stats proto are what a control
// plane and proxies of the previous release speak during a rolling
// upgrade: change them only compatibly.
//
// Conventions of the Model document:
//   - Optional sections (spec.retries, shadow, canary, fallback, cache) are
//     pointers; nil means the feature is off. When a section is present,
//     Defaults fills its zero-valued fields (see defaults.go).
//   - Weights are relative integers, each 0..MaxWeight (10000), total > 0.
//     A version missing from the map has weight 0. A proxy normalises them:
//     share = weight / sum(weights).
//   - Durations are Go duration strings ("50ms") in both JSON and YAML.
//   - docs/desired-state.md is the user-facing reference.
package api
