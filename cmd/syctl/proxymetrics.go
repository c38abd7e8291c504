package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Proxy metric names read by describe --proxy-admin (proxy/pipeline/metrics.go).
const (
	metricRequests = "switchyard_proxy_requests_total"
	metricDuration = "switchyard_proxy_request_duration_seconds"
)

// variantNumbers are one variant's numbers since the proxy started.
type variantNumbers struct {
	Requests uint64
	Errors   uint64 // answers with a 5xx status
	P99MS    *float64
}

// fetchProxyMetrics reads a proxy's /metrics and returns per-variant
// numbers of model.
func fetchProxyMetrics(ctx context.Context, hc *http.Client, adminURL, modelName string) (map[string]*variantNumbers, error) {
	u := strings.TrimRight(adminURL, "/")
	if !strings.Contains(u, "://") {
		u = "http://" + u
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/plain")
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the proxy admin at %s: %v", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s/metrics: HTTP %d", u, resp.StatusCode)
	}
	return parseProxyMetrics(io.LimitReader(resp.Body, 64<<20), modelName)
}

// parseProxyMetrics turns Prometheus text exposition into per-variant
// numbers (pure: text in, numbers out).
func parseProxyMetrics(r io.Reader, modelName string) (map[string]*variantNumbers, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("proxy metrics: %v", err)
	}
	out := map[string]*variantNumbers{}
	get := func(m *dto.Metric) *variantNumbers {
		if label(m, "model") != modelName {
			return nil
		}
		v := label(m, "variant")
		if out[v] == nil {
			out[v] = &variantNumbers{}
		}
		return out[v]
	}
	if f := fams[metricRequests]; f != nil {
		for _, m := range f.GetMetric() {
			vn := get(m)
			if vn == nil || m.GetCounter() == nil {
				continue
			}
			n := uint64(m.GetCounter().GetValue())
			vn.Requests += n
			if code, err := strconv.Atoi(label(m, "code")); err == nil && code >= 500 {
				vn.Errors += n
			}
		}
	}
	if f := fams[metricDuration]; f != nil {
		for _, m := range f.GetMetric() {
			vn := get(m)
			h := m.GetHistogram()
			if vn == nil || h == nil {
				continue
			}
			var bs []bucket
			for _, b := range h.GetBucket() {
				bs = append(bs, bucket{UpperBound: b.GetUpperBound(), Count: float64(b.GetCumulativeCount())})
			}
			bs = append(bs, bucket{UpperBound: math.Inf(1), Count: float64(h.GetSampleCount())})
			if q, ok := histogramQuantile(0.99, bs); ok {
				ms := q * 1000
				vn.P99MS = &ms
			}
		}
	}
	return out, nil
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// bucket is one cumulative histogram bucket.
type bucket struct {
	UpperBound float64
	Count      float64 // cumulative
}

// histogramQuantile estimates the q-quantile from cumulative buckets the
// way PromQL's histogram_quantile does: linear interpolation inside the
// bucket that holds the rank; a rank in the +Inf bucket answers the
// largest finite bound. ok is false without observations.
func histogramQuantile(q float64, buckets []bucket) (float64, bool) {
	if len(buckets) == 0 || q < 0 || q > 1 {
		return 0, false
	}
	bs := append([]bucket(nil), buckets...)
	sort.Slice(bs, func(i, j int) bool { return bs[i].UpperBound < bs[j].UpperBound })
	total := bs[len(bs)-1].Count
	if total <= 0 {
		return 0, false
	}
	rank := q * total
	i := sort.Search(len(bs), func(i int) bool { return bs[i].Count >= rank })
	if i == len(bs) {
		i = len(bs) - 1
	}
	if math.IsInf(bs[i].UpperBound, 1) {
		if i == 0 {
			return 0, false
		}
		return bs[i-1].UpperBound, true
	}
	lower, below := 0.0, 0.0
	if i > 0 {
		lower, below = bs[i-1].UpperBound, bs[i-1].Count
	}
	inBucket := bs[i].Count - below
	if inBucket <= 0 {
		return bs[i].UpperBound, true
	}
	return lower + (bs[i].UpperBound-lower)*(rank-below)/inBucket, true
}
