package canary

// The stats stream's wire form (package api/statspb) and back: the proxy
// encodes its per-interval deltas with EntryToProto, the control plane
// decodes and checks a report with ReportFromProto.

import (
	"fmt"
	"sort"
	"time"

	"github.com/switchyard-dev/switchyard/api/statspb"
)

// AppendHistogramProto fills dst (reused) with the non-empty buckets of h.
func AppendHistogramProto(dst *statspb.Histogram, h *Histogram) {
	dst.BucketIndex, dst.BucketCount = dst.BucketIndex[:0], dst.BucketCount[:0]
	for i, c := range h.Counts {
		if c != 0 {
			dst.BucketIndex = append(dst.BucketIndex, uint32(i))
			dst.BucketCount = append(dst.BucketCount, c)
		}
	}
	dst.Total, dst.SumNs, dst.MaxNs, dst.NumBuckets = h.Total, h.SumNS, h.MaxNS, NumBuckets
}

// HistogramFromProto decodes a sparse histogram, rejecting another bucket layout
// or inconsistent counts.
func HistogramFromProto(p *statspb.Histogram) (Histogram, error) {
	var h Histogram
	if p == nil {
		return h, nil
	}
	if p.NumBuckets != NumBuckets {
		return h, fmt.Errorf("histogram has %d buckets, want %d (another bucket layout)", p.NumBuckets, NumBuckets)
	}
	if len(p.BucketIndex) != len(p.BucketCount) {
		return h, fmt.Errorf("histogram has %d bucket indexes but %d counts", len(p.BucketIndex), len(p.BucketCount))
	}
	var total uint64
	for i, idx := range p.BucketIndex {
		if idx >= NumBuckets {
			return h, fmt.Errorf("histogram bucket index %d out of range 0..%d", idx, NumBuckets-1)
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

// EntryToProto encodes one (model, version)'s stats.
func EntryToProto(e *Entry) *statspb.VariantStats {
	v := &statspb.VariantStats{
		Model: e.Model, Version: e.Version, Requests: e.Stats.Requests,
		Fallbacks: e.Stats.Fallbacks, NanOutputs: e.Stats.NaNOutputs,
		ShadowCompared: e.Stats.ShadowCompared, ShadowDisagreed: e.Stats.ShadowDisagreed,
		Latency: &statspb.Histogram{},
	}
	v.Errors = CopyCounts(nil, e.Stats.Errors)
	v.UpstreamFailures = CopyCounts(nil, e.Stats.UpstreamFailures)
	v.BackupAnswers = e.Stats.BackupAnswers
	AppendHistogramProto(v.Latency, &e.Stats.Latency)
	return v
}

// ProxyKey is the Report.Proxy of a (proxy, boot id): a restarted
// proxy is a new reporter, so its seq numbers are new.
func ProxyKey(proxy, bootID string) string { return proxy + "/" + bootID }

// ReportFromProto decodes and checks a report; at is the time the control plane
// files it under (its own clock, so proxies' clock skew does not move
// reports in or out of a step's window).
func ReportFromProto(p *statspb.Report, at time.Time) (Report, error) {
	switch {
	case p.GetProxy() == "":
		return Report{}, fmt.Errorf("report: proxy is required")
	case p.GetBootId() == "":
		return Report{}, fmt.Errorf("report from %q: boot_id is required", p.GetProxy())
	case p.GetSeq() == 0:
		return Report{}, fmt.Errorf("report from %q: seq must be >= 1", p.GetProxy())
	}
	r := Report{Proxy: ProxyKey(p.Proxy, p.BootId), Seq: p.Seq, At: at, Entries: make([]Entry, 0, len(p.Entries))}
	for i, e := range p.Entries {
		if e.GetModel() == "" || e.GetVersion() == "" {
			return Report{}, fmt.Errorf("report from %q seq %d: entries[%d]: model and version are required", p.Proxy, p.Seq, i)
		}
		h, err := HistogramFromProto(e.Latency)
		if err != nil {
			return Report{}, fmt.Errorf("report from %q seq %d: entries[%d] (%s/%s): %w", p.Proxy, p.Seq, i, e.Model, e.Version, err)
		}
		ce := Entry{Model: e.Model, Version: e.Version, Stats: Stats{
			Requests: e.Requests, Fallbacks: e.Fallbacks, NaNOutputs: e.NanOutputs,
			ShadowCompared: e.ShadowCompared, ShadowDisagreed: e.ShadowDisagreed, Latency: h,
			Errors: CopyCounts(nil, e.Errors), UpstreamFailures: CopyCounts(nil, e.UpstreamFailures), BackupAnswers: e.BackupAnswers,
		}}
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
