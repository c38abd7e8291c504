// Package canary ramps a model's traffic from its current version to a new
// one step by step (default 20, 50, 80, 100 %), judging the canary against
// the baseline at each tick, and rolls it back by itself when it is worse.
// Everything here is pure: values in, values out, time passed in. The
// controller around it (ticks, store writes, the Prometheus source) is
// controlplane/canaryctl, the stats stream controlplane/stats, the API
// controlplane/rest; the proxy's recorder and reporter are proxy/report.
//
// # Stats
//
// Histogram is a mergeable latency histogram with fixed log-linear buckets
// (8 per power of two, 512 ns .. 68.7 s, each at most 12.5 % wide; p50/p99
// by interpolation). Stats holds one version's figures for an interval:
// requests, errors by kind, fallbacks, NaN outputs, shadow comparisons, the
// histogram. A proxy sends a Report each second: the deltas of every
// (model, version) since its last report, identified by (Proxy, Seq).
// Window merges reports from all proxies: a resent (Proxy, Seq) is counted
// once; a restarted proxy uses a new Proxy id (name plus instance id) so
// its fresh Seq numbers are new; a proxy that disappears stops adding and
// its reports age out (Forget drops them at once); Stats(model, version,
// from, to] sums the window. Proxies lists the live ones.
//
// # Analysis
//
// Analyze(baseline, canary Stats, gates, StepInfo) Verdict compares the two
// over the same window (the controller queries both from Window with the
// same bounds, starting no earlier than the step's start). Gates:
//
//   - error_rate, nan_rate, fallback_rate: rates per request judged with
//     Wilson score intervals (Z, default 1.96). Fail when the canary's lower
//     bound is above the maximum and above the baseline's upper bound (bad
//     with confidence, and worse than the baseline); pass when the observed
//     rate is within the maximum; otherwise wait. So 1 error in 12 requests
//     (lower bound 1.5 %) waits where 100 in 1,200 (6.9 %) fails a 5 % gate.
//     error_rate counts only the version's own failures (FailureCount):
//     not client_4xx (the variant rejected the request as bad, 400 /
//     InvalidArgument, passed to the client) nor overload (a full backend
//     or the concurrency limit; a fallback answered). fallback_rate leaves
//     the overload fallbacks out too (OwnFallbacks).
//   - client_4xx_rate: the canary's client_4xx rate against the
//     baseline's over the same window. Fail when the canary's lower Wilson
//     bound is above the baseline's upper bound plus MaxClientErrorExcess
//     (default 0.01): it rejects clearly more of the requests than the
//     baseline, which accepts them; pass when the observed rate is within
//     the baseline's plus the excess, or without baseline traffic to
//     compare with (the last step); otherwise wait.
//   - p99_ratio: canary p99 / baseline p99 <= MaxP99Ratio, judged only once
//     both have MinLatencySamples (without baseline traffic, e.g. at 100 %,
//     it passes).
//   - shadow_disagreement (when MaxShadowDisagreement > 0): the share of
//     shadow comparisons that disagreed, as a rate gate without baseline.
//
// Decision: any failing gate → Rollback (with the failing gates' numbers);
// else Hold while the canary has fewer than MinRequests ("waiting: 137/500
// canary requests"), the step is younger than its duration ("waiting: 2m10s
// left in step") or a gate waits (its reason); else Promote.
//
// # State machine
//
// Start(cfg, currentSplit, failedVersions, now) → State at step 0 and the
// weights to apply. Tick(state, cfg, baseline, canary, now) runs the
// analysis: Promote moves to the next step (or, after the last, to phase
// promoted with the canary at 100); Rollback needs FailuresBeforeRollback
// failing ticks in a row (a clean tick resets the count) and then restores
// the split that was in force at Start with the canary's share given to
// the baseline (RestoreSplit: from {v1: 80, v2: 20} a failed v2 gets 0),
// and marks the canary Failed; Hold changes nothing. Act(state, cfg,
// action, now, reason) applies pause, resume (restarts the step clock),
// promote (next step now, skipping the gates) and abort (rollback). Each returns the new State (the input is
// not modified), and a Transition whose Changed/Weights the controller
// writes through the store and xDS path. State is plain JSON-serialisable
// data with a bounded History of events (start, hold when its reason
// changes, rollback_check, promote, promoted, rollback, pause, resume) for
// GET /v1/models/{name}/canary. State.Step indexes Config.Steps; events,
// the status API and the step metric count steps from 1 (StepNumber), so
// "step 4" of [20, 50, 80, 100] is 100 % everywhere. Weights are
// percentages summing to 100;
// during the ramp only the baseline and the canary carry traffic.
//
// # Desired state mapping (api.Model.Spec.Canary)
//
//	canary.version             -> Config.Canary (Config.Baseline: the version
//	                              holding the traffic when the canary starts)
//	canary.steps               -> Config.Steps
//	canary.stepDuration        -> Config.StepDuration
//	canary.minRequests         -> Gates.MinRequests
//	canary.maxErrorRate        -> Gates.MaxErrorRate
//	canary.maxP99Ratio         -> Gates.MaxP99Ratio
//	canary.maxNaNRate          -> Gates.MaxNaNRate
//	canary.consecutiveFailures -> Config.FailuresBeforeRollback (default 3
//	                              in both)
//	canary.maxClientErrorExcess -> Gates.MaxClientErrorExcess (default 0.01)
//	(no field yet)             -> Gates.MaxFallbackRate, MaxShadowDisagreement,
//	                              MinLatencySamples, Z: defaults
package canary
