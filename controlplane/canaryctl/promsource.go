package canaryctl

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/switchyard-dev/switchyard/canary"
)

// PromQueries are the PromQL templates a PromSource runs. In each, {{sel}}
// is replaced by the label matchers of the model and version (model="m",
// variant="v" for the proxy's metrics; version="v" for the fallback
// metrics: see {{vsel}}) and {{window}} by the range, e.g. 90s.
type PromQueries struct {
	// Requests: one value, the number of requests.
	Requests string
	// Errors: one series per error kind, labelled by code.
	Errors string
	// ClientErrors: one value, requests the version rejected as bad (400 /
	// InvalidArgument, passed to the client): the canary's client_4xx.
	ClientErrors string
	// NaN: one value, answers with NaN/Inf outputs.
	NaN string
	// Fallbacks: one value.
	Fallbacks string
	// LatencyBuckets: cumulative histogram bucket counts, one series per le
	// (seconds).
	LatencyBuckets string
}

// DefaultPromQueries read the proxy's own metrics (proxy/pipeline/metrics.go) and
// the fallback package's (fallback/metrics.go). The proxy labels requests
// by the variant that answered; a fallback answered by a backup counts
// there, and as a fallback trigger of the version that failed.
var DefaultPromQueries = PromQueries{
	Requests:       `sum(increase(switchyard_proxy_requests_total{{{sel}}}[{{window}}]))`,
	Errors:         `sum by (code) (increase(switchyard_proxy_requests_total{{{sel}},code=~"5..|DeadlineExceeded|Unavailable|Internal|Unknown|DataLoss"}[{{window}}]))`,
	ClientErrors:   `sum(increase(switchyard_proxy_requests_total{{{sel}},code=~"400|InvalidArgument"}[{{window}}]))`,
	NaN:            `sum(increase(switchyard_fallback_triggers_total{{{vsel}},trigger="nan_output"}[{{window}}]))`,
	Fallbacks:      `sum(increase(switchyard_fallback_triggers_total{{{vsel}},trigger!="nan_output"}[{{window}}]))`,
	LatencyBuckets: `sum by (le) (increase(switchyard_proxy_request_duration_seconds_bucket{{{sel}}}[{{window}}]))`,
}

// PromSource reads the canary's figures from a Prometheus server's HTTP
// API (instant queries at the end of the window), the production
// MetricSource (as Flagger does). An empty answer ("no values found") is
// zero traffic: the analysis then holds, saying it waits for requests,
// instead of failing.
type PromSource struct {
	// URL of the Prometheus server, e.g. http://prometheus:9090.
	URL string
	// Client (nil: a client with a 10s timeout).
	Client  *http.Client
	Queries PromQueries
}

// NewPromSource reads from the Prometheus server at baseURL with the
// default queries.
func NewPromSource(baseURL string) *PromSource {
	return &PromSource{URL: strings.TrimSuffix(baseURL, "/"), Client: &http.Client{Timeout: 10 * time.Second}, Queries: DefaultPromQueries}
}

type promSample struct {
	labels map[string]string
	value  float64
}

// promQL quotes a label value.
func promQL(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	return `"` + r.Replace(s) + `"`
}

// promWindow is the PromQL range of (from, to]: whole seconds, at least 1.
func promWindow(from, to time.Time) string {
	s := int64(math.Ceil(to.Sub(from).Seconds()))
	return strconv.FormatInt(max(s, 1), 10) + "s"
}

func (p *PromSource) expand(tmpl, model, version string, from, to time.Time) string {
	return strings.NewReplacer(
		"{{sel}}", "model="+promQL(model)+",variant="+promQL(version),
		"{{vsel}}", "model="+promQL(model)+",version="+promQL(version),
		"{{window}}", promWindow(from, to),
	).Replace(tmpl)
}

func (p *PromSource) query(ctx context.Context, q string, at time.Time) ([]promSample, error) {
	client := p.Client
	if client == nil {
		client = http.DefaultClient
	}
	u := p.URL + "/api/v1/query?" + url.Values{"query": {q}, "time": {strconv.FormatFloat(float64(at.UnixNano())/1e9, 'f', 3, 64)}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("prometheus query %s: %w", q, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return nil, fmt.Errorf("prometheus query %s: %w", q, err)
	}
	var r struct {
		Status    string `json:"status"`
		ErrorType string `json:"errorType"`
		Error     string `json:"error"`
		Data      struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("prometheus query %s: HTTP %d, undecodable answer: %v", q, resp.StatusCode, err)
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("prometheus query %s: %s: %s", q, r.ErrorType, r.Error)
	}
	if r.Data.ResultType != "vector" {
		return nil, fmt.Errorf("prometheus query %s: want an instant vector, got %s", q, r.Data.ResultType)
	}
	out := make([]promSample, 0, len(r.Data.Result))
	for _, s := range r.Data.Result {
		str, _ := s.Value[1].(string)
		v, err := strconv.ParseFloat(str, 64)
		if err != nil {
			return nil, fmt.Errorf("prometheus query %s: value %v: %v", q, s.Value[1], err)
		}
		out = append(out, promSample{labels: s.Metric, value: v})
	}
	return out, nil
}

func count(v float64) uint64 {
	if math.IsNaN(v) || v <= 0 {
		return 0
	}
	return uint64(math.Round(v))
}

func (p *PromSource) scalar(ctx context.Context, tmpl, model, version string, from, to time.Time) (uint64, error) {
	if tmpl == "" {
		return 0, nil
	}
	ss, err := p.query(ctx, p.expand(tmpl, model, version, from, to), to)
	if err != nil {
		return 0, err
	}
	var n uint64
	for _, s := range ss {
		n += count(s.value)
	}
	return n, nil
}

// Stats reads (model, version)'s figures over (from, to].
func (p *PromSource) Stats(ctx context.Context, model, version string, from, to time.Time) (canary.Stats, error) {
	q := p.Queries
	var s canary.Stats
	var err error
	if s.Requests, err = p.scalar(ctx, q.Requests, model, version, from, to); err != nil {
		return s, err
	}
	if s.NaNOutputs, err = p.scalar(ctx, q.NaN, model, version, from, to); err != nil {
		return s, err
	}
	if s.Fallbacks, err = p.scalar(ctx, q.Fallbacks, model, version, from, to); err != nil {
		return s, err
	}
	if q.Errors != "" {
		ss, err := p.query(ctx, p.expand(q.Errors, model, version, from, to), to)
		if err != nil {
			return s, err
		}
		for _, e := range ss {
			if n := count(e.value); n > 0 {
				if s.Errors == nil {
					s.Errors = map[string]uint64{}
				}
				s.Errors["code_"+e.labels["code"]] += n
			}
		}
	}
	if n, err := p.scalar(ctx, q.ClientErrors, model, version, from, to); err != nil {
		return s, err
	} else if n > 0 {
		if s.Errors == nil {
			s.Errors = map[string]uint64{}
		}
		s.Errors[canary.ErrClient4xx] = n
	}
	if q.LatencyBuckets != "" {
		ss, err := p.query(ctx, p.expand(q.LatencyBuckets, model, version, from, to), to)
		if err != nil {
			return s, err
		}
		var bs []PromBucket
		for _, b := range ss {
			le, err := strconv.ParseFloat(b.labels["le"], 64)
			if err != nil {
				return s, fmt.Errorf("prometheus latency bucket le=%q: %v", b.labels["le"], err)
			}
			bs = append(bs, PromBucket{UpperBound: le, Count: b.value})
		}
		s.Latency = HistogramFromProm(bs)
	}
	return s, nil
}

// PromBucket is one cumulative Prometheus histogram bucket: observations
// <= UpperBound seconds.
type PromBucket struct {
	UpperBound float64
	Count      float64
}

// HistogramFromProm converts cumulative Prometheus buckets into a
// canary.Histogram, spreading each bucket's observations over the canary
// buckets it overlaps in proportion to the overlap (the uniform-within-
// bucket assumption of histogram_quantile). Observations above the last
// finite bound are placed at it, as histogram_quantile does. Pure.
func HistogramFromProm(buckets []PromBucket) canary.Histogram {
	var h canary.Histogram
	bs := append([]PromBucket(nil), buckets...)
	sort.Slice(bs, func(i, j int) bool { return bs[i].UpperBound < bs[j].UpperBound })
	var prevCum float64
	var prevLE float64
	lastFinite := 0.0
	for _, b := range bs {
		if !math.IsInf(b.UpperBound, 1) {
			lastFinite = b.UpperBound
		}
	}
	for _, b := range bs {
		n := count(b.Count - prevCum)
		prevCum = max(prevCum, b.Count)
		lo, hi := prevLE, b.UpperBound
		prevLE = b.UpperBound
		if n == 0 {
			continue
		}
		if math.IsInf(hi, 1) {
			ns := uint64(lastFinite * 1e9)
			h.Counts[canary.BucketIndex(ns)] += n
			h.Total += n
			h.SumNS += n * ns
			h.MaxNS = max(h.MaxNS, ns)
			continue
		}
		spread(&h, uint64(lo*1e9), uint64(hi*1e9), n)
	}
	return h
}

// spread adds n observations uniformly over [lo, hi) nanoseconds.
func spread(h *canary.Histogram, lo, hi, n uint64) {
	if hi <= lo {
		hi = lo + 1
	}
	width := float64(hi - lo)
	var placed uint64
	first, last := canary.BucketIndex(lo), canary.BucketIndex(hi-1)
	for i := first; i <= last; i++ {
		_, bhi := canary.BucketBounds(i)
		// Cumulative rounding: the first i buckets hold round(n * their
		// share of the range), so no count is lost to truncation.
		upTo := uint64(math.Round(float64(n) * float64(min(bhi, hi)-lo) / width))
		if i == last {
			upTo = n
		}
		h.Counts[i] += upTo - placed
		placed = upTo
	}
	h.Total += n
	h.SumNS += n * ((lo + hi) / 2)
	h.MaxNS = max(h.MaxNS, hi)
}
