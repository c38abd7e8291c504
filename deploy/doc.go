// Package deploy holds Switchyard's deployment artefacts — Dockerfile,
// Kubernetes manifests (Kustomize), Prometheus rules and their unit tests,
// a Grafana dashboard, an edge Envoy bootstrap and the desired state for
// the Kubernetes example — and the tests that keep them true to the code:
// every flag a manifest passes exists in the switchyard binary, every port
// lines up, every metric and label a rule, dashboard or scaler queries is
// one the code exports, promtool accepts the rules and passes their tests,
// and the Envoy bootstrap is a valid Envoy v3 Bootstrap.
//
// There is no Go API here.
package deploy
