// Package fallback keeps a model useful when it fails: it judges upstream
// attempts into triggers (whose fault an outcome is), guards each model
// version with a circuit breaker and a concurrency limit, plans the fallback chain (last good
// answer, backup version, static answer, empty answer), builds the static
// answer, caches predictions and coalesces identical requests in flight.
//
// The package holds no sockets and no configuration plumbing: the proxy's
// request pipeline (proxy/pipeline/pipeline.go) calls it around each upstream
// attempt. One request through the proxy:
//
//	ticket, ok := breaker.Allow()              // not ok: trigger BreakerOpen
//	outcome := call the version (transport, status, NaN, rows)
//	trigger := fallback.Judge(outcome)         // whose fault: Trigger.Fault
//	breaker.Done(ticket, fallback.ResultOf(trigger))
//	if !trigger.Falls(fallback.Primary) { answer the client (good, or its own 4xx) }
//	step, err := fallback.Walk(chain, fallback.Availability{...}, trigger,
//	        func(s fallback.Step) error { ... }) // a backup link falls on trigger.Falls(fallback.Backup)
//	// success: x-switchyard-fallback: step, x-switchyard-fallback-reason: trigger
//	// err is *fallback.ExhaustedError: 503 / UNAVAILABLE via err.OIP()
//
// Note for the cache: the stored bytes are returned as they are, so they
// carry the id of the request that filled the entry; the proxy should
// encode cached responses without an id (or rewrite it) and skip the cache
// for requests with Cache-Control: no-cache. The LastGood store should be
// keyed by the primary version the request was routed to (what "the last
// good answer for this input" means to the caller). Shadow calls never
// touch either cache.
//
// # API
//
//   - Trigger, the failure vocabulary (None, Timeout, ConnectError,
//     Upstream5xx, Unavailable, Internal, NaNOutput, BreakerOpen, Overload,
//     NotServing, BadAnswer, Refused, Rejected, Cancelled, ShuttingDown) with String for
//     labels; Fault (request / version / overload / client),
//     CountsForBreaker, EjectsEndpoint, Retryable, Falls(Link); Judge(Outcome),
//     the one rule for whose fault an outcome is.
//   - Breaker (NewBreaker, injected clock): Allow / Done(Ticket, Result) /
//     State; the first open lasts FirstOpenFor and doubles per failed probe
//     up to OpenFor. ResultOf(Trigger).
//   - Step, ParseChain, Availability, Plan (pure), Walk, ExhaustedError,
//     EmptyResponse; header names HeaderFallback, HeaderFallbackReason,
//     HeaderCache.
//   - StaticTensor, NewStatic (validated), Static.Response (the request's
//     batch dimension: a one-row answer repeated per row).
//   - Key, NewKey, AppendCanonical (canonical request form); Cache (serving
//     prediction cache: NewCache) and the LastGood store (NewLastGood).
//   - Coalescer[V] (NewCoalescer, Join / Finish / Flight.Wait).
//   - Limiter (NewLimiter, TryAcquire, Release).
//   - Metrics (NewMetrics(reg)): triggers, fallbacks, cache hits / misses /
//     evictions / expired / bytes / entries, coalesced requests (the
//     breaker's state is the proxy's switchyard_proxy_breaker_state).
//
// # Desired state mapping (api.Model.Spec)
//
//	spec.fallback.chain            -> ParseChain(chain)
//	spec.fallback.backup           -> the backup version (proxy; Availability.Backup)
//	spec.fallback.backupTimeout    -> the backup call's timeout (proxy)
//	spec.fallback.static.outputs   -> NewStatic([]StaticTensor{...}) (same fields:
//	                                  name, datatype, shape, data, strings)
//	spec.fallback.breaker          -> BreakerConfig{ConsecutiveFailures,
//	                                  FailureRatio, MinRequests, OpenFor,
//	                                  FirstOpenFor} (Window, HalfOpenProbes:
//	                                  defaults)
//	spec.fallback.maxConcurrency   -> NewLimiter(maxConcurrency)
//	spec.cache.{ttl,maxEntries,maxBytes} -> CacheConfig{TTL, MaxEntries, MaxBytes}
//	spec.cache.coalesce            -> use a Coalescer for the model
//	spec.timeout                   -> the context deadline of the upstream call
package fallback
