// Package fallback keeps a model useful when it fails: it classifies failed
// upstream attempts into triggers, guards each model version with a circuit
// breaker and a concurrency limit, plans the fallback chain (last good
// answer, backup version, static answer, empty answer), builds the static
// answer, caches predictions and coalesces identical requests in flight.
//
// The package holds no sockets and no configuration plumbing: the proxy
// calls it around each upstream attempt. One request through the proxy:
//
//	key, err := fallback.NewKey(model, version, "json", req, nil) // cache on
//	if e, ok := serving.Get(key); ok { write e.Body; x-switchyard-cache: hit }
//	if !limiter.TryAcquire() { trigger = fallback.Overload } else { defer limiter.Release() }
//	done, ok := breakers.Get(model, version, breakerCfg).Allow()
//	if !ok { trigger = fallback.BreakerOpen } else {
//	        resp, err := coalescer.Do(ctx, key, call)       // or call directly
//	        trigger = fallback.Classify(fallback.Outcome{Err: err, HTTPStatus: st, Response: resp})
//	        done(trigger.CountsForBreaker())
//	}
//	if trigger == fallback.None { serving.Add(key, e); lastGood.Add(key, e); return }
//	metrics.Trigger(model, version, trigger)
//	step, err := fallback.Walk(chain, fallback.Availability{
//	        LastGood: lastGood.Contains(key), Backup: backup != "" && backup != version,
//	        Static: static != nil}, trigger, func(s fallback.Step) error { ... })
//	// success: headers x-switchyard-fallback: step.String(),
//	//          x-switchyard-fallback-reason: trigger.String();
//	//          metrics.Fallback(model, step.String(), trigger)
//	// err is *fallback.ExhaustedError: 503 / UNAVAILABLE via err.OIP();
//	//          metrics.Fallback(model, "failed", trigger)
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
//   - Trigger (None, Timeout, ConnectError, Upstream5xx, Unavailable,
//     Internal, NaNOutput, BreakerOpen, Overload) with String for labels;
//     Classify(Outcome), ClassifyHTTP, ClassifyGRPC, ClassifyError,
//     ClassifyOutputs (NaN/Inf in any FP16/FP32/FP64 output).
//   - Breaker interface {Allow() (done func(failed bool), ok bool); State()};
//     GoBreaker (sony/gobreaker/v2 two-step breaker) from NewBreaker;
//     Breakers: one per (model, version), Get / Remove / Snapshot (admin page).
//   - Step, ParseChain, Availability, Plan (pure), Walk, ExhaustedError,
//     EmptyResponse; header names HeaderFallback, HeaderFallbackReason,
//     HeaderCache.
//   - StaticTensor, NewStatic (validated), Static.Response.
//   - Key, NewKey, AppendCanonical (canonical request form); Cache (serving
//     prediction cache: NewCache) and the LastGood store (NewLastGood).
//   - Coalescer[V] (NewCoalescer, Do).
//   - Limiter (NewLimiter, TryAcquire, Release).
//   - Metrics (NewMetrics(reg)): triggers, fallbacks, breaker state and
//     transitions, cache hits / misses / evictions / expired / bytes /
//     entries, coalesced requests.
//
// # Desired state mapping (routing.Model.Spec)
//
//	spec.fallback.chain            -> ParseChain(chain)
//	spec.fallback.backup           -> the backup version (proxy; Availability.Backup)
//	spec.fallback.backupTimeout    -> the backup call's timeout (proxy)
//	spec.fallback.static.outputs   -> NewStatic([]StaticTensor{...}) (same fields:
//	                                  name, datatype, shape, data, strings)
//	spec.fallback.breaker          -> BreakerConfig{ConsecutiveFailures,
//	                                  FailureRatio, MinRequests, OpenFor}
//	                                  (Window, HalfOpenProbes: defaults)
//	spec.fallback.maxConcurrency   -> NewLimiter(maxConcurrency)
//	spec.cache.{ttl,maxEntries,maxBytes} -> CacheConfig{TTL, MaxEntries, MaxBytes}
//	spec.cache.coalesce            -> use a Coalescer for the model
//	spec.timeout                   -> the context deadline of the upstream call
package fallback
