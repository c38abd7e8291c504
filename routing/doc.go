// Package routing holds Switchyard's desired state — the Model document that
// describes one virtual model's whole traffic policy — as plain structs, plus
// the pure routing decisions the proxy makes with it (the variant picker lives
// in pick*.go).
//
// The control plane decodes a document strictly (DecodeJSON, DecodeYAML:
// unknown fields and wrong types are errors naming the field), applies
// Defaults, checks it with Validate (a ValidationError lists every bad field
// by path, e.g. "spec.traffic.weights.v9: no such version (versions: v1,
// v2)"), stores it, and translates it to xDS (package routing/xdsconv). The
// proxy reads the same structs back out of xDS.
//
// Conventions:
//   - Optional sections (spec.retries, shadow, canary, fallback, cache) are
//     pointers; nil means the feature is off. When a section is present,
//     Defaults fills its zero-valued fields (see defaults.go).
//   - Weights are relative integers, each 0..MaxWeight (10000), total > 0.
//     A version missing from the map has weight 0. A proxy normalises them:
//     share = weight / sum(weights).
//   - Durations are Go duration strings ("50ms") in both JSON and YAML.
//   - docs/desired-state.md is the user-facing reference.
package routing
