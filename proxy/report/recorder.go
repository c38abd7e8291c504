// Package report is the proxy's stats stream: every answered request is
// counted per (model, version) by a lock-free Recorder (atomic counters,
// sharded, no allocation per request), and a Reporter goroutine ships the
// deltas of each interval to the control plane's Stats gRPC service as
// (proxy, boot id, seq) reports, so a resend is counted once and a restart
// is a new reporter. Unacknowledged reports are kept (bounded: the oldest
// are dropped first) and resent after a reconnect, which backs off
// exponentially.
//
// What a request counts as (its Kind, its version's failure) is the
// pipeline's judgement (fallback.Trigger); this package only counts and
// ships.
package report

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchyard-dev/switchyard/canary"
	"github.com/switchyard-dev/switchyard/fallback"
)

// Kind is the error kind a request is counted under, by the answer the
// caller got: Client4xx (the version rejected the request; the canary
// compares its rate with the baseline's) and Overload (too busy; a
// fallback may have answered) are not errors of the version for the
// error-rate gate; the canary reads them apart.
type Kind int

// The error kinds, and KindNone for an answer without one.
const (
	Kind5xx Kind = iota
	KindTimeout
	KindUnavailable
	KindNaN
	KindClient4xx
	KindOverload
	NumKinds
	KindNone Kind = -1
)

var kindNames = [NumKinds]string{
	Kind5xx:         "status_5xx",
	KindTimeout:     "timeout",
	KindUnavailable: "unavailable",
	KindNaN:         "nan_output",
	KindClient4xx:   canary.ErrClient4xx,
	KindOverload:    canary.ErrOverload,
}

// shards spreads concurrent requests of one variant over several counter
// sets (picked by the low bits of the latency), so cores do not fight over
// one cache line.
const shards = 8

type shard struct {
	requests, fallbacks, nan   atomic.Uint64
	shadowCompared, shadowDiff atomic.Uint64
	backupAnswers              atomic.Uint64
	errors                     [NumKinds]atomic.Uint64
	failures                   [fallback.NumTriggers]atomic.Uint64 // by trigger
	buckets                    [canary.NumBuckets]atomic.Uint64
	sumNS                      atomic.Uint64
	maxNS                      atomic.Uint64 // since the last collect (swapped to 0)
	_                          [64]byte
}

// Slot holds one (model, version)'s counters.
type Slot struct {
	model, version string
	shards         [shards]shard
}

type key struct{ model, version string }

// Recorder holds one Slot per (model, version), created on first use and
// kept for the life of the proxy (so configuration changes do not reset
// counters). Lookups read an immutable map through an atomic pointer.
type Recorder struct {
	mu    sync.Mutex // serialises slot creation
	slots atomic.Pointer[map[key]*Slot]
}

// NewRecorder returns an empty recorder.
func NewRecorder() *Recorder {
	r := &Recorder{}
	m := map[key]*Slot{}
	r.slots.Store(&m)
	return r
}

// Slot returns (model, version)'s counters, creating them on first use.
func (r *Recorder) Slot(model, version string) *Slot {
	if s, ok := (*r.slots.Load())[key{model, version}]; ok {
		return s
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	cur := *r.slots.Load()
	if s, ok := cur[key{model, version}]; ok {
		return s
	}
	next := make(map[key]*Slot, len(cur)+1)
	for k, v := range cur {
		next[k] = v
	}
	s := &Slot{model: model, version: version}
	next[key{model, version}] = s
	r.slots.Store(&next)
	return s
}

// Outcome is one answered request, as the recorder sees it.
type Outcome struct {
	Latency   time.Duration
	Kind      Kind // KindNone: no error
	Fallback  bool
	NaNOutput bool
	// Failure is the version's own failure on the request's attempt
	// (fallback.None if none), whether or not a fallback answered.
	Failure fallback.Trigger
}

func (s *Slot) shard(ns uint64) *shard { return &s.shards[ns&(shards-1)] }

// Record counts one request routed to the slot's version.
func (s *Slot) Record(o Outcome) {
	ns := uint64(max(o.Latency, 0))
	sh := s.shard(ns)
	sh.requests.Add(1)
	if o.Kind >= 0 {
		sh.errors[o.Kind].Add(1)
	}
	if o.Fallback {
		sh.fallbacks.Add(1)
	}
	if o.NaNOutput {
		sh.nan.Add(1)
	}
	if o.Failure != fallback.None {
		sh.failures[o.Failure].Add(1)
	}
	sh.buckets[canary.BucketIndex(ns)].Add(1)
	sh.sumNS.Add(ns)
	for {
		m := sh.maxNS.Load()
		if ns <= m || sh.maxNS.CompareAndSwap(m, ns) {
			break
		}
	}
}

// RecordBackupAnswer counts an answer the slot's version gave as another
// version's backup (apart from the requests routed to it).
func (s *Slot) RecordBackupAnswer(latency time.Duration) {
	s.shard(uint64(max(latency, 0))).backupAnswers.Add(1)
}

// RecordShadow counts one shadow comparison with the slot's version as the
// shadow, for the canary's shadow-disagreement gate. spread picks the
// counter set (any varying number: a random one, a latency).
func (s *Slot) RecordShadow(disagreed bool, spread uint64) {
	sh := s.shard(spread)
	sh.shadowCompared.Add(1)
	if disagreed {
		sh.shadowDiff.Add(1)
	}
}

// Snapshot sums the shards into cumulative stats (the latency maximum:
// since the last snapshot, which it resets; the Reporter's is then one
// snapshot short). Requests are recorded while it reads, so the latency total is
// the sum of the bucket counts it read, never a counter of its own: a
// total read apart from the buckets can be one request ahead of (or
// behind) them, and the control plane rejects such a report (its buckets
// must sum to its total), which stalled the reporter's stream behind it.
func (s *Slot) Snapshot(out *canary.Stats) {
	*out = canary.Stats{Errors: out.Errors, UpstreamFailures: out.UpstreamFailures}
	clear(out.Errors)
	clear(out.UpstreamFailures)
	for i := range s.shards {
		sh := &s.shards[i]
		out.Requests += sh.requests.Load()
		out.Fallbacks += sh.fallbacks.Load()
		out.NaNOutputs += sh.nan.Load()
		out.ShadowCompared += sh.shadowCompared.Load()
		out.ShadowDisagreed += sh.shadowDiff.Load()
		out.BackupAnswers += sh.backupAnswers.Load()
		for t := range sh.failures {
			if n := sh.failures[t].Load(); n > 0 {
				if out.UpstreamFailures == nil {
					out.UpstreamFailures = map[string]uint64{}
				}
				out.UpstreamFailures[fallback.Trigger(t).String()] += n
			}
		}
		for k := range sh.errors {
			if n := sh.errors[k].Load(); n > 0 {
				if out.Errors == nil {
					out.Errors = map[string]uint64{}
				}
				out.Errors[kindNames[k]] += n
			}
		}
		for b := range sh.buckets {
			n := sh.buckets[b].Load()
			out.Latency.Counts[b] += n
			out.Latency.Total += n
		}
		out.Latency.SumNS += sh.sumNS.Load()
		out.Latency.MaxNS = max(out.Latency.MaxNS, sh.maxNS.Swap(0))
	}
}
