package statspb

import (
	"fmt"
	"sort"
	"time"

	"github.com/switchyard-dev/switchyard/canary"
)

// AppendHistogram fills dst (reused) with the non-empty buckets of h.
func AppendHistogram(dst *Histogram, h *canary.Histogram) {
	dst.BucketIndex, dst.BucketCount = dst.BucketIndex[:0], dst.BucketCount[:0]
	for i, c := range h.Counts {
		if c != 0 {
			dst.BucketIndex = append(dst.BucketIndex, uint32(i))
			dst.BucketCount = append(dst.BucketCount, c)
		}
	}
	dst.Total, dst.SumNs, dst.MaxNs, dst.NumBuckets = h.Total, h.SumNS, h.MaxNS, canary.NumBuckets
}

// ToHistogram decodes a sparse histogram, rejecting another bucket layout
// or inconsistent counts.
func ToHistogram(p *Histogram) (canary.Histogram, error) {
	var h canary.Histogram
	if p == nil {
		return h, nil
	}
	if p.NumBuckets != canary.NumBuckets {
		return h, fmt.Errorf("histogram has %d buckets, want %d (another bucket layout)", p.NumBuckets, canary.NumBuckets)
	}
	if len(p.BucketIndex) != len(p.BucketCount) {
		return h, fmt.Errorf("histogram has %d bucket indexes but %d counts", len(p.BucketIndex), len(p.BucketCount))
	}
	var total uint64
	for i, idx := range p.BucketIndex {
		if idx >= canary.NumBuckets {
			return h, fmt.Errorf("histogram bucket index %d out of range 0..%d", idx, canary.NumBuckets-1)
		}
		h.Counts[idx] += p.BucketCount[i]
		total += p.BucketCount[i]
	}
	if total != p.Total {
		return h, fmt.Errorf("histogram buckets sum to %d, total says %d", total, p.Total)
	}
	h.Total, h.SumNS, h.MaxNS = p.Total, p.SumNs, p.MaxNs
	return h, nil
}

// FromEntry encodes one (model, version)'s stats.
func FromEntry(e *canary.Entry) *VariantStats {
	v := &VariantStats{
		Model: e.Model, Version: e.Version, Requests: e.Stats.Requests,
		Fallbacks: e.Stats.Fallbacks, NanOutputs: e.Stats.NaNOutputs,
		ShadowCompared: e.Stats.ShadowCompared, ShadowDisagreed: e.Stats.ShadowDisagreed,
		Latency: &Histogram{},
	}
	if len(e.Stats.Errors) > 0 {
		v.Errors = make(map[string]uint64, len(e.Stats.Errors))
		for k, c := range e.Stats.Errors {
			v.Errors[k] = c
		}
	}
	AppendHistogram(v.Latency, &e.Stats.Latency)
	return v
}

// ProxyKey is the canary.Report.Proxy of a (proxy, boot id): a restarted
// proxy is a new reporter, so its seq numbers are new.
func ProxyKey(proxy, bootID string) string { return proxy + "/" + bootID }

// ToReport decodes and checks a report; at is the time the control plane
// files it under (its own clock, so proxies' clock skew does not move
// reports in or out of a step's window).
func ToReport(p *Report, at time.Time) (canary.Report, error) {
	switch {
	case p.GetProxy() == "":
		return canary.Report{}, fmt.Errorf("report: proxy is required")
	case p.GetBootId() == "":
		return canary.Report{}, fmt.Errorf("report from %q: boot_id is required", p.GetProxy())
	case p.GetSeq() == 0:
		return canary.Report{}, fmt.Errorf("report from %q: seq must be >= 1", p.GetProxy())
	}
	r := canary.Report{Proxy: ProxyKey(p.Proxy, p.BootId), Seq: p.Seq, At: at, Entries: make([]canary.Entry, 0, len(p.Entries))}
	for i, e := range p.Entries {
		if e.GetModel() == "" || e.GetVersion() == "" {
			return canary.Report{}, fmt.Errorf("report from %q seq %d: entries[%d]: model and version are required", p.Proxy, p.Seq, i)
		}
		h, err := ToHistogram(e.Latency)
		if err != nil {
			return canary.Report{}, fmt.Errorf("report from %q seq %d: entries[%d] (%s/%s): %w", p.Proxy, p.Seq, i, e.Model, e.Version, err)
		}
		ce := canary.Entry{Model: e.Model, Version: e.Version, Stats: canary.Stats{
			Requests: e.Requests, Fallbacks: e.Fallbacks, NaNOutputs: e.NanOutputs,
			ShadowCompared: e.ShadowCompared, ShadowDisagreed: e.ShadowDisagreed, Latency: h,
		}}
		if len(e.Errors) > 0 {
			ce.Stats.Errors = make(map[string]uint64, len(e.Errors))
			for k, c := range e.Errors {
				ce.Stats.Errors[k] = c
			}
		}
		r.Entries = append(r.Entries, ce)
	}
	sort.Slice(r.Entries, func(i, j int) bool {
		if r.Entries[i].Model != r.Entries[j].Model {
			return r.Entries[i].Model < r.Entries[j].Model
		}
		return r.Entries[i].Version < r.Entries[j].Version
	})
	return r, nil
}
