package canary

import (
	"fmt"
	"slices"
	"sort"
	"time"
)

// Stats are one model version's figures over an interval: what a proxy
// reports each second, and what a window sums.
type Stats struct {
	Requests uint64 `json:"requests"`
	// Errors by kind (the proxy's labels: status_5xx, timeout,
	// unavailable, nan_output, and client_4xx and overload, which are not
	// the version's failure: see FailureCount).
	Errors     map[string]uint64 `json:"errors,omitempty"`
	Fallbacks  uint64            `json:"fallbacks"`
	NaNOutputs uint64            `json:"nan_outputs"`
	// UpstreamFailures counts, by trigger (timeout, connect_error,
	// upstream_5xx, unavailable, not_serving, nan_output, breaker_open,
	// ...), the requests whose attempt on this version failed by the
	// version's fault, whether or not a fallback answered in its place:
	// what the version really did. Errors counts only what the client got.
	// No gate reads it (the error and fallback gates do).
	UpstreamFailures map[string]uint64 `json:"upstream_failures,omitempty"`
	// BackupAnswers counts the requests of other versions this version
	// answered as their spec.fallback.backup (not in Requests, which are
	// the requests routed to it).
	BackupAnswers uint64 `json:"backup_answers,omitempty"`
	// Shadow comparisons where this version was the shadow.
	ShadowCompared  uint64    `json:"shadow_compared,omitempty"`
	ShadowDisagreed uint64    `json:"shadow_disagreed,omitempty"`
	Latency         Histogram `json:"latency"`
}

// Error kinds (keys of Stats.Errors) that are not the version failing.
const (
	// ErrClient4xx: the variant rejected the request (400 /
	// InvalidArgument) and the rejection was passed to the client. The
	// request is taken to be at fault, so the error gate leaves it out; a
	// canary that rejects what its baseline accepts fails the
	// client_4xx_rate gate instead.
	ErrClient4xx = "client_4xx"
	// ErrOverload: the backend was full (queue full, ResourceExhausted) or
	// the proxy's concurrency limit was reached, and a fallback answered.
	// Capacity, not correctness: neither the error gate nor the fallback
	// gate counts it.
	ErrOverload = "overload"
)

// ErrorCount is the sum of Errors, of every kind.
func (s *Stats) ErrorCount() uint64 {
	var n uint64
	for _, c := range s.Errors {
		n += c
	}
	return n
}

// FailureCount is the errors that are the version's own failure: Errors
// without client_4xx and overload.
func (s *Stats) FailureCount() uint64 {
	return s.ErrorCount() - s.Errors[ErrClient4xx] - s.Errors[ErrOverload]
}

// OwnFallbacks is the fallbacks not caused by overload (each overload was
// answered by a fallback, and is counted in both).
func (s *Stats) OwnFallbacks() uint64 {
	return s.Fallbacks - min(s.Fallbacks, s.Errors[ErrOverload])
}

// UpstreamFailureCount is the sum of UpstreamFailures.
func (s *Stats) UpstreamFailureCount() uint64 {
	var n uint64
	for _, c := range s.UpstreamFailures {
		n += c
	}
	return n
}

// AddError counts one error of kind.
func (s *Stats) AddError(kind string) {
	if s.Errors == nil {
		s.Errors = map[string]uint64{}
	}
	s.Errors[kind]++
}

// Merge adds o to s.
func (s *Stats) Merge(o *Stats) {
	s.Requests += o.Requests
	for k, v := range o.Errors {
		if s.Errors == nil {
			s.Errors = map[string]uint64{}
		}
		s.Errors[k] += v
	}
	for k, v := range o.UpstreamFailures {
		if s.UpstreamFailures == nil {
			s.UpstreamFailures = map[string]uint64{}
		}
		s.UpstreamFailures[k] += v
	}
	s.BackupAnswers += o.BackupAnswers
	s.Fallbacks += o.Fallbacks
	s.NaNOutputs += o.NaNOutputs
	s.ShadowCompared += o.ShadowCompared
	s.ShadowDisagreed += o.ShadowDisagreed
	s.Latency.Merge(&o.Latency)
}

// Since is s - prev: what happened between two cumulative readings of one
// version's counters (MaxNS is s's: a maximum is per interval already).
func (s *Stats) Since(prev *Stats) Stats {
	d := Stats{
		Requests:         s.Requests - prev.Requests,
		Fallbacks:        s.Fallbacks - prev.Fallbacks,
		NaNOutputs:       s.NaNOutputs - prev.NaNOutputs,
		ShadowCompared:   s.ShadowCompared - prev.ShadowCompared,
		ShadowDisagreed:  s.ShadowDisagreed - prev.ShadowDisagreed,
		BackupAnswers:    s.BackupAnswers - prev.BackupAnswers,
		Errors:           countsSince(s.Errors, prev.Errors),
		UpstreamFailures: countsSince(s.UpstreamFailures, prev.UpstreamFailures),
	}
	for i := range s.Latency.Counts {
		d.Latency.Counts[i] = s.Latency.Counts[i] - prev.Latency.Counts[i]
	}
	d.Latency.Total = s.Latency.Total - prev.Latency.Total
	d.Latency.SumNS = s.Latency.SumNS - prev.Latency.SumNS
	d.Latency.MaxNS = s.Latency.MaxNS
	return d
}

// countsSince is cur - prev per key (nil when nothing grew).
func countsSince(cur, prev map[string]uint64) map[string]uint64 {
	var d map[string]uint64
	for k, v := range cur {
		if n := v - prev[k]; n > 0 {
			if d == nil {
				d = map[string]uint64{}
			}
			d[k] = n
		}
	}
	return d
}

// CopyCounts makes dst a copy of the count map src, reusing dst's storage
// (allocated only when src has counts), and returns it.
func CopyCounts(dst, src map[string]uint64) map[string]uint64 {
	clear(dst)
	if dst == nil && len(src) > 0 {
		dst = make(map[string]uint64, len(src))
	}
	for k, v := range src {
		dst[k] = v
	}
	return dst
}

// Entry is one (model, version)'s stats in a report.
type Entry struct {
	Model   string `json:"model"`
	Version string `json:"version"`
	Stats   Stats  `json:"stats"`
}

// Report is what one proxy sends for one interval: the delta since its
// previous report, never a running total. Proxy identifies the proxy
// process: it must change when the process restarts (e.g. host name plus
// a random instance id), so that a restarted proxy's Seq numbers, starting
// again at 1, are not mistaken for resends. Seq increases by one per report
// of that process; (Proxy, Seq) identifies the report, so a resend is
// counted once.
type Report struct {
	Proxy   string    `json:"proxy"`
	Seq     uint64    `json:"seq"`
	At      time.Time `json:"at"` // end of the interval
	Entries []Entry   `json:"entries"`
}

type reportID struct {
	proxy string
	seq   uint64
}

// Window merges proxies' reports into sliding windows over injected time.
// Reports are deltas, so a proxy that disappears simply stops adding; its
// past reports age out of the window (or Forget drops them at once). Not
// safe for concurrent use: the control plane guards it with its own lock.
type Window struct {
	retention time.Duration
	reports   []Report // sorted by At
	seen      map[reportID]struct{}
	lastSeen  map[string]time.Time
}

// NewWindow keeps reports for retention (the longest window queried).
func NewWindow(retention time.Duration) *Window {
	return &Window{retention: retention, seen: map[reportID]struct{}{}, lastSeen: map[string]time.Time{}}
}

// Add takes one report at time now. It returns false, without counting it,
// for a duplicate (Proxy, Seq) or a report older than the retention.
func (w *Window) Add(r Report, now time.Time) bool {
	w.Prune(now)
	id := reportID{r.Proxy, r.Seq}
	if _, dup := w.seen[id]; dup {
		return false
	}
	if r.At.Before(now.Add(-w.retention)) {
		return false
	}
	w.seen[id] = struct{}{}
	if r.At.After(w.lastSeen[r.Proxy]) {
		w.lastSeen[r.Proxy] = r.At
	}
	i := sort.Search(len(w.reports), func(i int) bool { return w.reports[i].At.After(r.At) })
	w.reports = slices.Insert(w.reports, i, r)
	return true
}

// Prune drops reports older than the retention.
func (w *Window) Prune(now time.Time) {
	cut := now.Add(-w.retention)
	n := 0
	for n < len(w.reports) && w.reports[n].At.Before(cut) {
		delete(w.seen, reportID{w.reports[n].Proxy, w.reports[n].Seq})
		n++
	}
	if n > 0 {
		w.reports = slices.Delete(w.reports, 0, n)
	}
	for p, t := range w.lastSeen {
		if t.Before(cut) {
			delete(w.lastSeen, p)
		}
	}
}

// Forget drops every report of proxy (e.g. when it is decommissioned and its
// figures should no longer weigh on a decision).
func (w *Window) Forget(proxy string) {
	w.reports = slices.DeleteFunc(w.reports, func(r Report) bool {
		if r.Proxy == proxy {
			delete(w.seen, reportID{r.Proxy, r.Seq})
			return true
		}
		return false
	})
	delete(w.lastSeen, proxy)
}

// Stats sums (model, version) over reports with from < At <= to.
func (w *Window) Stats(model, version string, from, to time.Time) Stats {
	var s Stats
	i := sort.Search(len(w.reports), func(i int) bool { return w.reports[i].At.After(from) })
	for ; i < len(w.reports) && !w.reports[i].At.After(to); i++ {
		for j := range w.reports[i].Entries {
			e := &w.reports[i].Entries[j]
			if e.Model == model && e.Version == version {
				s.Merge(&e.Stats)
			}
		}
	}
	return s
}

// Proxies lists the proxies that reported within staleAfter of now, sorted.
func (w *Window) Proxies(now time.Time, staleAfter time.Duration) []string {
	var out []string
	for p, t := range w.lastSeen {
		if !t.Before(now.Add(-staleAfter)) {
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out
}

func (s *Stats) String() string {
	return fmt.Sprintf("%d requests, %d errors (%d client 4xx, %d overload), %d fallbacks, %d NaN, p99 %s", s.Requests, s.FailureCount(),
		s.Errors[ErrClient4xx], s.Errors[ErrOverload], s.Fallbacks, s.NaNOutputs, s.Latency.Quantile(0.99))
}
