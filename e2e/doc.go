// Package e2e holds Switchyard's end-to-end story test: it builds the real
// `switchyard` and `syctl` binaries, starts the whole stack with
// `switchyard up --any-ports`, and drives it the way a user does — HTTP
// requests to the proxy's OIP v2 endpoint with user ids, `syctl` commands
// and their output and exit codes, the proxy's admin endpoints (/metrics,
// /config_dump) — through an A/B split, a shadow, a promoted canary, a
// canary rolled back automatically, a killed backend answered by the
// fallback, and an on-call rollback.
//
// Run it with
//
//	go test ./e2e/ -run TestStory -v
//
// It needs ONNX Runtime (`make setup`) and is skipped under -short.
// TestStory/docs is the docs replay: the shell sessions of README.md and
// docs/walkthrough.md run in order against a fresh stack, their output
// compared with the docs' (markup and masks in replay_test.go, runner in
// replay_run_test.go, docs/testing.md "The docs replay");
// TestStory/checks drives the same story from Go.
//
// TestFault (fault_test.go, harness in fault_harness_test.go) is the
// fault-injection suite on the same stack: kill -9, SIGSTOP and unloads of
// backends, the NaN model as primary, kill -9 of the control plane and a
// proxy restart without it, each under bounded REST and gRPC load; see
// docs/testing.md.
package e2e
