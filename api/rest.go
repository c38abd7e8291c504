package api

import (
	"time"

	"github.com/switchyard-dev/switchyard/canary"
	"github.com/switchyard-dev/switchyard/shadow"
)

// The control plane's REST API (/v1/...): request and response bodies, and
// the records the store keeps (Record, AuditEntry, FailedMark), which the
// API answers as they are stored. cmd/syctl decodes the same types.

// ModelList is the body of GET /v1/models. The list bodies' fields are in
// alphabetical order: they were JSON objects with sorted keys, and stay byte
// for byte what they were.
type ModelList struct {
	Items    []ModelResponse `json:"items"`
	Revision int64           `json:"revision"`
}

// History is the body of GET /v1/models/{name}/history, newest first.
type History struct {
	Items []Record `json:"items"`
}

// Audit is the body of GET /v1/audit, newest first.
type Audit struct {
	Items []AuditEntry `json:"items"`
}

// ProxyList is the body of GET /v1/proxies.
type ProxyList struct {
	Proxies []ProxyStatus `json:"proxies"`
	// SnapshotVersion is the store revision being served, as a string.
	SnapshotVersion string `json:"snapshotVersion"`
}

// Health is the body of GET /healthz.
type Health struct {
	OK              bool  `json:"ok"`
	SnapshotVersion int64 `json:"snapshotVersion"`
}

// DeleteResponse is the body of DELETE /v1/models/{name}.
type DeleteResponse struct {
	Deleted  bool  `json:"deleted"`
	Revision int64 `json:"revision"`
}

// Record is one revision of one model.
type Record struct {
	Model Model `json:"model"`
	// Revision is the global store revision of this change (the ETag).
	Revision int64 `json:"revision"`
	// CreateRevision is the revision that created the model (since its
	// last deletion).
	CreateRevision int64 `json:"createRevision"`
	// Deleted marks a tombstone in history: the model was deleted at
	// Revision (Model holds what was deleted).
	Deleted bool      `json:"deleted,omitempty"`
	Time    time.Time `json:"time"`
	Subject string    `json:"subject,omitempty"`
	Action  string    `json:"action,omitempty"`
	Reason  string    `json:"reason,omitempty"`
}

// FailedMark says that a version of a model failed its canary: when, why,
// and with which revision it was marked. Marks are stored apart from the
// history (which is trimmed) and outlive the model's deletion; only a
// change with ClearFailed removes one. They are the one record of which
// versions failed: canary start, rollback and the API all read them here.
type FailedMark struct {
	Version string    `json:"version"`
	Time    time.Time `json:"time"`
	Subject string    `json:"subject,omitempty"`
	Reason  string    `json:"reason"`
	// Revision is the revision written with the mark (0: marked alone).
	Revision int64 `json:"revision,omitempty"`
}

// AuditEntry is one change in the audit log.
type AuditEntry struct {
	Revision int64     `json:"revision"`
	Time     time.Time `json:"time"`
	Subject  string    `json:"subject"`
	Action   string    `json:"action"`
	Model    string    `json:"model"`
	Reason   string    `json:"reason,omitempty"`
	Before   *Model    `json:"before,omitempty"`
	After    *Model    `json:"after,omitempty"`
}

// ModelResponse is the body of a single-model answer.
type ModelResponse struct {
	Revision       int64     `json:"revision"`
	CreateRevision int64     `json:"createRevision"`
	Time           time.Time `json:"time"`
	Subject        string    `json:"subject,omitempty"`
	Model          Model     `json:"model"`
	// Proxies is set when the request asked to wait for ACKs.
	Proxies *AppliedResult `json:"proxies,omitempty"`
	// RestoredRevision is, for a rollback, the revision whose document was
	// restored (as the new revision Revision).
	RestoredRevision int64 `json:"restoredRevision,omitempty"`
	// Skipped lists, for a rollback without a named revision, the newer
	// revisions passed over because their split was not known healthy.
	Skipped []SkippedRevision `json:"skipped,omitempty"`
	// AbortedCanary is set when the request aborted the model's running
	// canary first (a rollback, a forced weight change).
	AbortedCanary *AbortedCanary `json:"abortedCanary,omitempty"`
	// FailedVersions (GET of one model) are the versions marked failed by
	// a canary, with when and why: what rollback avoids and canary start
	// refuses.
	FailedVersions map[string]FailedMark `json:"failedVersions,omitempty"`
	// Unchanged says the write was a no-op (the document asked for what
	// is stored): no new revision.
	Unchanged bool `json:"unchanged,omitempty"`
}

// ErrorResponse is the body of every error.
type ErrorResponse struct {
	Error  string       `json:"error"`
	Fields []FieldError `json:"fields,omitempty"`
	// Revision is the current revision on a 409.
	Revision int64 `json:"revision,omitempty"`
	// Hints name the actions that resolve a refusal (a 409 during a
	// canary: abort it, or repeat with force).
	Hints []Hint `json:"hints,omitempty"`
}

// WeightsRequest is the body of PUT /v1/models/{name}/weights.
type WeightsRequest struct {
	Weights map[string]int `json:"weights"`
	Reason  string         `json:"reason,omitempty"`
	// Force a change while a canary runs: the canary is aborted first (its
	// version marked failed), then the weights are written. Without it
	// such a change is refused (409). Also ?force=true.
	Force bool `json:"force,omitempty"`
	// WaitForAck, e.g. "10s", waits up to that long for the connected
	// proxies to apply the new weights and reports which did (at most 60s;
	// default: answer at once). Also ?waitForAck=10s.
	WaitForAck Duration `json:"waitForAck,omitempty"`
}

// RollbackRequest is the (optional) body of POST /v1/models/{name}/rollback.
type RollbackRequest struct {
	// Revision to restore (0: the revision before the current one).
	Revision int64  `json:"revision,omitempty"`
	Reason   string `json:"reason,omitempty"`
	// WaitForAck, e.g. "5s", waits up to that long for connected proxies to
	// ACK the restored config and reports which did (at most 60s; default
	// 5s; "1ns" effectively does not wait).
	WaitForAck Duration `json:"waitForAck,omitempty"`
}

// ProxyStatus is what the control plane knows about one connected xDS
// stream (one proxy; a proxy that reconnects shows up with a new stream).
type ProxyStatus struct {
	Node        string    `json:"node"`
	Cluster     string    `json:"cluster,omitempty"`
	Admin       string    `json:"admin,omitempty"` // admin address from node metadata "switchyard.admin" (shadow reports)
	Stream      int64     `json:"stream"`
	ConnectedAt time.Time `json:"connectedAt"`
	// AckedVersion is the newest config version every resource type the
	// proxy subscribed to has ACKed ("" before the first ACK).
	AckedVersion string `json:"ackedVersion"`
	// NackedVersion and NackReason describe the newest rejected version.
	NackedVersion string                `json:"nackedVersion,omitempty"`
	NackReason    string                `json:"nackReason,omitempty"`
	Types         map[string]TypeStatus `json:"types"`
}

// TypeStatus is the ACK state of one resource type on one stream.
type TypeStatus struct {
	SentVersion   string `json:"sentVersion,omitempty"`
	AckedVersion  string `json:"ackedVersion,omitempty"`
	NackedVersion string `json:"nackedVersion,omitempty"`
	NackReason    string `json:"nackReason,omitempty"`
}

// AckResult says which proxies applied a version.
type AckResult struct {
	Version string   `json:"version"`
	Acked   []string `json:"acked"`
	Nacked  []string `json:"nacked,omitempty"`
	Pending []string `json:"pending,omitempty"`
	Total   int      `json:"total"`
}

// SkippedRevision is an earlier revision a rollback passed over, and why.
type SkippedRevision struct {
	Revision int64  `json:"revision"`
	Why      string `json:"why"`
}

// AppliedResult is an AckResult with how long applying took (from the store
// write to the last ACK) and its one-line summary, "applied on 2/2 proxies
// in 14 ms" (cmd/syctl reads elapsedMs).
type AppliedResult struct {
	AckResult
	ElapsedMS *float64 `json:"elapsedMs,omitempty"`
	Message   string   `json:"message"`
}

// Hint actions (Hint.Action): what resolves a refusal.
const (
	HintCanaryAbort = "canary-abort" // abort the canary: POST .../canary/abort
	HintCanaryReset = "canary-reset" // clear a version's failed mark: POST .../canary/reset
	HintForce       = "force"        // repeat the request with force (aborts the canary first)
)

// Hint is one action that resolves a refused request, in ErrorResponse.
// Clients render it (syctl prints the command to run); Method, Path and
// Body are the request that does it.
type Hint struct {
	Action  string         `json:"action"`
	Model   string         `json:"model"`
	Version string         `json:"version,omitempty"`
	Method  string         `json:"method"`
	Path    string         `json:"path"`
	Body    map[string]any `json:"body,omitempty"`
	Message string         `json:"message"`
}

// AbortedCanary says a request aborted the canary it found running.
type AbortedCanary struct {
	Canary string `json:"canary"`
	// Revision is the abort's own revision: the split from before the
	// canary, the canary's share given to the baseline.
	Revision int64          `json:"revision"`
	Weights  map[string]int `json:"weights"`
	Reason   string         `json:"reason"`
}

// CanaryWindow is the figures the newest analysis compares.
type CanaryWindow struct {
	From     time.Time        `json:"from"`
	To       time.Time        `json:"to"`
	Baseline VariantStatsView `json:"baseline"`
	Canary   VariantStatsView `json:"canary"`
}

// CanaryStatus is the answer of GET /v1/models/{name}/canary.
type CanaryStatus struct {
	Model string `json:"model"`
	// Phase: none, progressing, paused, promoted or rolled_back. A run
	// ends when spec.canary is removed or names another version: the
	// status is none again (the reason says how the last run ended).
	Phase    string `json:"phase"`
	Canary   string `json:"canary,omitempty"`
	Baseline string `json:"baseline,omitempty"`
	// Step counts from 1 (0: no canary); StepWeight is the canary's share
	// at this step, in percent.
	Step         int            `json:"step"`
	Steps        []int          `json:"steps,omitempty"`
	StepWeight   int            `json:"stepWeight"`
	Weights      map[string]int `json:"weights"`
	StepStarted  *time.Time     `json:"stepStarted,omitempty"`
	TimeInStep   string         `json:"timeInStep,omitempty"`
	StepDuration string         `json:"stepDuration,omitempty"`
	MinRequests  int            `json:"minRequests,omitempty"`
	// Decision and Reason of the newest analysis or action ("hold",
	// "waiting: 137/500 canary requests").
	Decision            string              `json:"decision,omitempty"`
	Reason              string              `json:"reason"`
	Gates               []canary.GateResult `json:"gates,omitempty"`
	Window              *CanaryWindow       `json:"window,omitempty"`
	ConsecutiveFailures int                 `json:"consecutiveFailures"`
	FailuresToRollback  int                 `json:"failuresToRollback,omitempty"`
	// FailedVersions maps versions marked failed (the store's failed
	// marks) to when and why.
	FailedVersions map[string]string `json:"failedVersions,omitempty"`
	// StateError is the newest state write that failed, until one
	// succeeds: the canary holds meanwhile.
	StateError       string         `json:"stateError,omitempty"`
	History          []canary.Event `json:"history"`
	ReportingProxies []string       `json:"reportingProxies"`
	Revision         int64          `json:"revision"`
}

// CanaryActionRequest is the (optional) body of POST .../canary/{action}.
type CanaryActionRequest struct {
	Reason string `json:"reason,omitempty"`
	// Version: start: the version to ramp (default spec.canary.version);
	// reset: the version to clear (default spec.canary.version).
	Version string `json:"version,omitempty"`
	// Steps, StepDuration and MinRequests (start only) are written into
	// spec.canary.
	Steps        []int    `json:"steps,omitempty"`
	StepDuration Duration `json:"stepDuration,omitempty"`
	MinRequests  int      `json:"minRequests,omitempty"`
	// WaitForAck bounds waiting for the proxies to apply the change
	// (default 10s, at most 60s; "0s": don't wait).
	WaitForAck *Duration `json:"waitForAck,omitempty"`
}

// CanaryActionResponse answers a canary action.
type CanaryActionResponse struct {
	Action   string `json:"action"`
	Revision int64  `json:"revision"`
	// Proxies: which proxies applied the revision, "applied on N/N proxies
	// in T ms".
	Proxies *AppliedResult `json:"proxies,omitempty"`
	Status  CanaryStatus   `json:"status"`
}

// StaticRequest is the body of PUT /v1/models/{name}/fallback/static: the
// new static answer (e.g. today's popular items), replacing
// spec.fallback.static and nothing else.
type StaticRequest struct {
	Outputs []StaticTensor `json:"outputs"`
	Reason  string         `json:"reason,omitempty"`
}

// ShadowReportResponse is the body of GET /v1/models/{name}/shadow/report:
// shadow.Report's fields (from, to, shadow, noise_floor, worst) merged over
// the proxies, plus where the figures came from.
type ShadowReportResponse struct {
	shadow.Report
	Model         string `json:"model"`
	ShadowVersion string `json:"shadowVersion,omitempty"`
	Window        string `json:"window"`
	// Proxies lists every proxy asked (one per admin address).
	Proxies []ShadowProxy `json:"proxies"`
	// Missing names the proxies whose figures are not included.
	Missing []string `json:"missing,omitempty"`
}

// ShadowProxy is one proxy's part of a report.
type ShadowProxy struct {
	Node    string `json:"node"`
	Admin   string `json:"admin,omitempty"`
	Records int    `json:"records"`
	Error   string `json:"error,omitempty"`
}

// VariantStatsView is one version's live figures in GET .../stats.
type VariantStatsView struct {
	Version  string            `json:"version"`
	Requests uint64            `json:"requests"`
	Errors   map[string]uint64 `json:"errors,omitempty"`
	// ErrorRate counts the version's own failures: not client_4xx nor
	// overload (the error gate's count).
	ErrorRate float64 `json:"errorRate"`
	// ClientErrorRate is the share of requests the version rejected as
	// bad (client_4xx: the client_4xx_rate gate's).
	ClientErrorRate float64 `json:"clientErrorRate,omitempty"`
	Fallbacks       uint64  `json:"fallbacks"`
	NaNOutputs      uint64  `json:"nanOutputs"`
	// UpstreamFailures are the version's own failures by trigger
	// (timeout, connect_error, not_serving, ...), counted whether or not
	// a fallback answered in its place; UpstreamFailureRate is their share
	// of Requests: what the version really did, which ErrorRate (what the
	// clients got) hides when a fallback answers.
	UpstreamFailures    map[string]uint64 `json:"upstreamFailures,omitempty"`
	UpstreamFailureRate float64           `json:"upstreamFailureRate"`
	// BackupAnswers are the requests of other versions this version
	// answered as their fallback backup (not in Requests).
	BackupAnswers uint64 `json:"backupAnswers"`
	// ShadowCompared and ShadowDisagreed count the comparisons where this
	// version was the shadow (its mirrored calls answered and compared).
	ShadowCompared  uint64  `json:"shadowCompared"`
	ShadowDisagreed uint64  `json:"shadowDisagreed"`
	P50Ms           float64 `json:"p50Ms"`
	P99Ms           float64 `json:"p99Ms"`
}

// ModelStatsView is the answer of GET /v1/models/{name}/stats.
type ModelStatsView struct {
	Model    string             `json:"model"`
	Window   string             `json:"window"`
	From     time.Time          `json:"from"`
	To       time.Time          `json:"to"`
	Proxies  []string           `json:"proxies"`
	Variants []VariantStatsView `json:"variants"`
}
