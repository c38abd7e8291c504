// Package shadow mirrors requests to a candidate model version off the
// request path and compares its answers with the primary's, as models need:
// within numeric tolerances, by top-k overlap and rank agreement of score
// vectors, by argmax label, or exactly.
//
// Pieces, each usable on its own:
//
//   - Compare(primary, shadow Result, cfg Config) Comparison: the pure diff
//     engine, per output tensor. Modes (Mode): numeric (|a-b| <= AbsTol +
//     RelTol*|primary|; reports max abs and max rel difference), topk (rows
//     are the last dimension; TopKOverlap = |top_k(p) ∩ top_k(s)| / k,
//     averaged over rows, MinTopKOverlap the worst row, RankAgreement =
//     share of the k rank positions that hold the same index; a row agrees
//     when its overlap >= MinOverlap), argmax (share of rows with the same
//     top-1 label; agrees when all rows do), exact (element-wise bytes;
//     BYTES outputs always use it). Also: shadow error while the primary
//     answered (and the reverse), NaN/Inf on either side (a shadow NaN the
//     primary lacks is a disagreement), latency difference. Both sides
//     failing counts as agreement.
//   - Sampler{Percent, Mode}.Sample(key, rnd): pure mirroring decision,
//     random or sticky by FNV-1a of a key (the same users always mirrored;
//     raising the share only adds users). KeepRecord / RecordWeight decide
//     which compared pairs reach the record file.
//   - Mirror (NewMirror(cfg, call, sink, metrics, logger)): bounded queue and
//     a fixed worker pool. Enqueue(*Job) never blocks (full queue: dropped
//     and counted); workers call the injected CallFunc with cfg.Timeout,
//     compare, update Metrics, keep every record in a Ring and write
//     disagreements (and a sample of agreements) to the RecordSink; Close(ctx)
//     drains until ctx ends. The proxy supplies CallFunc (the real upstream
//     call carrying a shadow marker header) and never awaits anything.
//     Noise floor: enqueue a Job with Kind KindNoiseFloor and TargetVersion =
//     the primary version for a sample of requests; its figures are
//     reported apart (label kind="noise_floor", Report.NoiseFloor).
//     Batching (cfg.Batch, cfg.BatchCall): a worker joins queued jobs of the
//     same kind and target whose requests are Joinable (same inputs, inner
//     dimensions, parameters, requested outputs) into one call of at most
//     MaxRows rows, waiting at most MaxDelay; JoinRequests and
//     SplitResponse are the pure join and split. Nobody waits for a
//     shadow's answer, so the round trip saved per mirror is free; the
//     shadow latency is then the joined call's.
//   - RotatingWriter: JSON-lines record file, size-based rotation, N files
//     kept; ReadRecords reads them back (oldest first) within a window.
//   - Summary(records, from, to, worstN) Report and Ring.Summary: the report
//     for GET /v1/models/{name}/shadow/report — agreement rate overall and
//     by mode, shadow and primary p50/p99, error and NaN counts and rates,
//     noise-floor figures, worst examples.
//   - Metrics (NewMetrics(reg)): switchyard_shadow_mirrored_total,
//     _dropped_total{reason}, _compared_total,
//     _outputs_compared_total{mode,result}, _errors_total{side},
//     _nan_total{side}, _latency_seconds{side} (histograms, primary vs
//     shadow), _records_total{result}; labels model, version (the version
//     called), kind.
//
// Shadow answers never reach the client, the prediction cache or the
// fallback chain: the proxy enqueues after answering and ignores the rest.
//
// # Record schema (one JSON object per line)
//
//	time             RFC 3339 time the primary request arrived
//	request_id       the request's id ("" if none)
//	model            virtual model name
//	primary_version  version that answered the client
//	shadow_version   version mirrored to (the primary version for noise_floor)
//	kind             "shadow" | "noise_floor"
//	input_digest     hex SHA-256 of the canonical request (oip.AppendCanonical;
//	                 equal to the prediction cache key hash)
//	weight           pairs this line stands for: 1, or 1/rate for a sampled agreement
//	agree            bool
//	reason           first disagreement, e.g. `output "scores": top-10 overlap 0.60 in row 0 < 0.80`
//	primary, shadow  {latency_ms, error?, nan?, outputs: [{name, datatype, shape,
//	                 top?: [[indices of the 10 largest values] per row, ≤ 8 rows],
//	                 head?: [first ≤ 8 values], strings?: [first ≤ 8 BYTES elements]}]}
//	diff             [{name, mode, agree, reason?, rows?, max_abs_diff?, max_rel_diff?,
//	                 topk_overlap?, min_topk_overlap?, rank_agreement?, k?,
//	                 argmax_agreement?, mismatches?, elements?}]
//
// # Desired state mapping (api.Model.Spec.Shadow)
//
//	shadow.version     -> Job.TargetVersion
//	shadow.percent     -> Sampler.Percent
//	shadow.sampling    -> Sampler.Mode (sticky key: the traffic.stickyHeader value)
//	shadow.queueSize   -> MirrorConfig.QueueSize
//	shadow.workers     -> MirrorConfig.Workers
//	shadow.timeout     -> MirrorConfig.Timeout (default spec.timeout)
//	shadow.compare     -> MirrorConfig.Compare: mode -> Rule.Mode (ParseMode), k -> K,
//	                      absTol/relTol -> AbsTol/RelTol, outputs -> Config.Outputs
//	                      (MinOverlap and PerOutput have no field yet: defaults)
//	shadow.noiseFloorPercent -> the share of mirrored requests the proxy also
//	                      enqueues as KindNoiseFloor jobs (the primary called a
//	                      second time), as package api documents it.
//
// The proxy's side (proxy/pipeline/shadow.go): Job.Payload carries the request and
// the primary's answer as bytes and implements Preparer, so decoding runs in
// the workers; MirrorConfig.OnCompared feeds the canary's stats.
package shadow
