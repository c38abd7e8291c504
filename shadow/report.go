package shadow

import (
	"github.com/switchyard-dev/switchyard/oip"
	"slices"
	"sort"
	"sync"
	"time"
)

// Report summarises compared pairs over a time window: what
// GET /v1/models/{name}/shadow/report returns. Rates are weighted by each
// record's Weight, so a record file whose agreements were sampled gives
// unbiased rates.
type Report struct {
	From time.Time `json:"from"`
	To   time.Time `json:"to"`
	// Shadow holds the shadow-vs-primary figures, NoiseFloor the
	// primary-vs-primary ones (Compared 0 when no noise floor ran).
	Shadow     Figures `json:"shadow"`
	NoiseFloor Figures `json:"noise_floor"`
	// Worst lists the worst shadow disagreements, worst first.
	Worst []Record `json:"worst,omitempty"`
}

// Figures are the summary of one kind of comparison.
type Figures struct {
	Records  int     `json:"records"`  // records read
	Compared float64 `json:"compared"` // pairs they stand for (sum of weights)
	Agreed   float64 `json:"agreed"`
	// AgreementRate is Agreed / Compared.
	AgreementRate float64              `json:"agreement_rate"`
	ByMode        map[Mode]ModeFigures `json:"by_mode,omitempty"`
	// Errors: shadow failed while the primary answered, and the reverse.
	ShadowErrors    float64 `json:"shadow_errors"`
	PrimaryErrors   float64 `json:"primary_errors"`
	ShadowErrorRate float64 `json:"shadow_error_rate"`
	ShadowNaN       float64 `json:"shadow_nan"`
	PrimaryNaN      float64 `json:"primary_nan"`
	// Latency percentiles in milliseconds.
	PrimaryP50MS float64 `json:"primary_p50_ms"`
	PrimaryP99MS float64 `json:"primary_p99_ms"`
	ShadowP50MS  float64 `json:"shadow_p50_ms"`
	ShadowP99MS  float64 `json:"shadow_p99_ms"`
}

// ModeFigures aggregate the per-output figures of one comparison mode.
type ModeFigures struct {
	Outputs       float64 `json:"outputs"`
	Agreed        float64 `json:"agreed"`
	AgreementRate float64 `json:"agreement_rate"`
	// Means over outputs of the mode's figures (topk: overlap and rank
	// agreement; argmax: label agreement); numeric: the largest difference.
	MeanTopKOverlap     float64 `json:"mean_topk_overlap,omitempty"`
	MeanRankAgreement   float64 `json:"mean_rank_agreement,omitempty"`
	MeanArgmaxAgreement float64 `json:"mean_argmax_agreement,omitempty"`
	MaxAbsDiff          float64 `json:"max_abs_diff,omitempty"`
}

// Summary computes the report over recs with from <= Time < to (zero
// bounds are open), listing at most worstN worst examples. Pure.
func Summary(recs []Record, from, to time.Time, worstN int) Report {
	rep := Report{From: from, To: to}
	var shadow, noise []Record
	for i := range recs {
		if !inWindow(recs[i].Time, from, to) {
			continue
		}
		if recs[i].Kind == KindNoiseFloor {
			noise = append(noise, recs[i])
		} else {
			shadow = append(shadow, recs[i])
		}
	}
	rep.Shadow = figures(shadow)
	rep.NoiseFloor = figures(noise)
	var bad []Record
	for _, r := range shadow {
		if !r.Agree {
			bad = append(bad, r)
		}
	}
	sort.SliceStable(bad, func(i, j int) bool { return severity(bad[i]) > severity(bad[j]) })
	if len(bad) > worstN {
		bad = bad[:worstN]
	}
	rep.Worst = bad
	return rep
}

// severity orders disagreements: failures and NaN first, then by how far
// the outputs are apart (1 - worst overlap or label agreement; numeric
// differences squashed into [0, 1)).
func severity(r Record) float64 {
	switch {
	case r.Shadow.Error != "" || r.Primary.Error != "":
		return 3
	case r.Shadow.NaN:
		return 2
	}
	worst := 0.0
	for _, d := range r.Diff {
		var s float64
		switch d.Mode {
		case TopK:
			s = 1 - d.MinTopKOverlap
		case Argmax:
			s = 1 - d.ArgmaxAgreement
		case Exact:
			if d.Elements > 0 {
				s = float64(d.Mismatches) / float64(d.Elements)
			}
		default:
			s = d.MaxAbsDiff / (1 + d.MaxAbsDiff)
		}
		if !d.Agree && s == 0 {
			s = 1 // shape or missing output
		}
		worst = max(worst, s)
	}
	return worst
}

func figures(recs []Record) Figures {
	f := Figures{Records: len(recs)}
	if len(recs) == 0 {
		return f
	}
	type acc struct{ n, agreed, overlap, rank, argmax, maxAbs float64 }
	modes := map[Mode]*acc{}
	var pl, sl []weighted
	for _, r := range recs {
		w := r.Weight
		if w <= 0 {
			w = 1
		}
		f.Compared += w
		if r.Agree {
			f.Agreed += w
		}
		switch {
		case r.Shadow.Error != "" && r.Primary.Error == "":
			f.ShadowErrors += w
		case r.Primary.Error != "" && r.Shadow.Error == "":
			f.PrimaryErrors += w
		}
		if r.Shadow.NaN {
			f.ShadowNaN += w
		}
		if r.Primary.NaN {
			f.PrimaryNaN += w
		}
		pl = append(pl, weighted{r.Primary.LatencyMS, w})
		if r.Shadow.Error == "" {
			sl = append(sl, weighted{r.Shadow.LatencyMS, w})
		}
		for _, d := range r.Diff {
			if d.NaN && (d.Mode == TopK || d.Mode == Argmax) {
				continue // not ranked: counted in ShadowNaN / PrimaryNaN, not in the mode's means
			}
			a := modes[d.Mode]
			if a == nil {
				a = &acc{}
				modes[d.Mode] = a
			}
			a.n += w
			if d.Agree {
				a.agreed += w
			}
			a.overlap += w * d.TopKOverlap
			a.rank += w * d.RankAgreement
			a.argmax += w * d.ArgmaxAgreement
			a.maxAbs = max(a.maxAbs, d.MaxAbsDiff)
		}
	}
	f.AgreementRate = f.Agreed / f.Compared
	f.ShadowErrorRate = f.ShadowErrors / f.Compared
	f.PrimaryP50MS, f.PrimaryP99MS = quantile(pl, 0.5), quantile(pl, 0.99)
	f.ShadowP50MS, f.ShadowP99MS = quantile(sl, 0.5), quantile(sl, 0.99)
	if len(modes) > 0 {
		f.ByMode = map[Mode]ModeFigures{}
		for m, a := range modes {
			mf := ModeFigures{Outputs: a.n, Agreed: a.agreed, AgreementRate: a.agreed / a.n}
			switch m {
			case TopK:
				mf.MeanTopKOverlap, mf.MeanRankAgreement = a.overlap/a.n, a.rank/a.n
			case Argmax:
				mf.MeanArgmaxAgreement = a.argmax / a.n
			case Numeric:
				mf.MaxAbsDiff = a.maxAbs
			}
			f.ByMode[m] = mf
		}
	}
	return f
}

type weighted struct{ v, w float64 }

// quantile is the weighted q-quantile: the smallest value whose cumulative
// weight reaches q of the total.
func quantile(xs []weighted, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	slices.SortFunc(xs, func(a, b weighted) int {
		switch {
		case a.v < b.v:
			return -1
		case a.v > b.v:
			return 1
		}
		return 0
	})
	total := 0.0
	for _, x := range xs {
		total += x.w
	}
	cum := 0.0
	for _, x := range xs {
		cum += x.w
		if cum >= q*total {
			return x.v
		}
	}
	return xs[len(xs)-1].v
}

// Ring keeps the most recent records in memory (every compared pair, weight
// 1), for reports without reading the file. Safe for concurrent use.
//
// A worker adds each record without its input digest and output summaries
// (AddDeferred): those cost more than the comparison itself and are only
// read when a report asks, so Records fills them in then, once per record.
type Ring struct {
	mu   sync.Mutex
	buf  []ringEntry
	next int
	full bool
}

type ringEntry struct {
	rec      Record
	deferred deferredParts // filled into rec by Records when pending
	pending  bool
}

// deferredParts is what a record's digest and summaries are computed from.
type deferredParts struct {
	req             *oip.InferRequest
	primary, shadow *oip.InferResponse
}

func (d *deferredParts) fill(rec *Record) {
	rec.InputDigest = InputDigest(d.req)
	if rec.Primary.Error == "" {
		rec.Primary.Outputs = Summarise(d.primary)
	}
	if rec.Shadow.Error == "" {
		rec.Shadow.Outputs = Summarise(d.shadow)
	}
}

// NewRing keeps the last n records (n <= 0: 1024).
func NewRing(n int) *Ring {
	if n <= 0 {
		n = 1024
	}
	return &Ring{buf: make([]ringEntry, n)}
}

// Add stores r, overwriting the oldest record when full.
func (r *Ring) Add(rec Record) { r.add(ringEntry{rec: rec}) }

// AddDeferred stores rec, whose InputDigest and output summaries are
// computed from req and the two answers only when Records is called.
func (r *Ring) AddDeferred(rec Record, req *oip.InferRequest, primary, shadow *oip.InferResponse) {
	r.add(ringEntry{rec: rec, deferred: deferredParts{req: req, primary: primary, shadow: shadow}, pending: true})
}

func (r *Ring) add(e ringEntry) {
	r.mu.Lock()
	r.buf[r.next] = e
	r.next++
	if r.next == len(r.buf) {
		r.next, r.full = 0, true
	}
	r.mu.Unlock()
}

// Records returns the held records, oldest first.
func (r *Ring) Records() []Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.next
	if r.full {
		n = len(r.buf)
	}
	out := make([]Record, 0, n)
	for i := range n {
		k := i
		if r.full {
			k = (r.next + i) % len(r.buf)
		}
		e := &r.buf[k]
		if e.pending {
			e.deferred.fill(&e.rec)
			e.deferred, e.pending = deferredParts{}, false
		}
		out = append(out, e.rec)
	}
	return out
}

// Summary is Summary over the ring's records.
func (r *Ring) Summary(from, to time.Time, worstN int) Report {
	return Summary(r.Records(), from, to, worstN)
}
