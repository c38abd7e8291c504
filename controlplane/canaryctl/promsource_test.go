package canaryctl_test

import (
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/canary"
	"github.com/switchyard-dev/switchyard/controlplane/canaryctl"
	"github.com/switchyard-dev/switchyard/controlplane/cptest"
	"github.com/switchyard-dev/switchyard/inference-backend/backendtest"
	"github.com/switchyard-dev/switchyard/inference-backend/demomodels"
	"github.com/switchyard-dev/switchyard/proxy"
)

const prometheusBin = "/usr/bin/prometheus"

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// startPrometheus runs the real Prometheus server on 127.0.0.1 scraping
// target every 200ms; it is killed at cleanup.
func startPrometheus(t *testing.T, target string) string {
	t.Helper()
	if _, err := os.Stat(prometheusBin); err != nil {
		t.Skipf("%s not installed (scripts/setup.sh installs Debian's prometheus): %v", prometheusBin, err)
	}
	dir := t.TempDir()
	cfg := fmt.Sprintf("global:\n  scrape_interval: 200ms\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: switchyard-proxy\n    scrape_interval: 200ms\n    scrape_timeout: 150ms\n    static_configs:\n      - targets: [%q]\n", target)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, prometheusBin, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr, "--log.level=warn")
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		cmd.Wait()
		if t.Failed() {
			t.Logf("prometheus output:\n%s", logs.String())
		}
	})
	url := "http://" + addr
	cptest.WaitUntil(t, "prometheus ready", 30*time.Second, func() bool {
		resp, err := http.Get(url + "/-/ready")
		if err != nil {
			return false
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return url
}

// TestPromSourceAgainstRealPrometheus: a real proxy in front of a real
// backend serves v1 (healthy) and v9 (its endpoint refuses connections);
// a real Prometheus scrapes the proxy's /metrics; PromSource reads the
// same figures back by PromQL.
func TestPromSourceAgainstRealPrometheus(t *testing.T) {
	if _, err := os.Stat(prometheusBin); err != nil {
		t.Skipf("%s not installed (scripts/setup.sh installs Debian's prometheus): %v", prometheusBin, err)
	}
	be := backendtest.Start(t, backendtest.Options{})
	m := api.Model{
		Metadata: api.Metadata{Name: "recommender"},
		Spec: api.Spec{
			Versions: []api.Version{
				{Name: "v1", Endpoints: []string{be.HTTPAddr}, BackendModel: demomodels.V1},
				{Name: "v9", Endpoints: []string{freeAddr(t)}, BackendModel: demomodels.V1},
			},
			Traffic: api.Traffic{Weights: map[string]int{"v1": 100}},
			Timeout: api.Duration(2 * time.Second),
		},
	}
	p, err := proxy.New(proxy.Config{HTTPAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", Models: []api.Model{m}})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	promURL := startPrometheus(t, p.AdminAddr())
	src := canaryctl.NewPromSource(promURL)
	ctx := context.Background()

	// Wait until Prometheus holds the proxy's zero-valued series, so all
	// traffic below falls between scrapes it has.
	cptest.WaitUntil(t, "the first scrape of the proxy", 30*time.Second, func() bool {
		ss, err := src.Query(ctx, `switchyard_proxy_requests_total{model="recommender",variant="v1",code="200"}`, time.Now())
		return err == nil && len(ss) == 1
	})
	t0 := time.Now()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	rng := rand.New(rand.NewPCG(1, 2))
	send := func(variant string, n int) {
		for range n {
			req, _ := http.NewRequest("POST", "http://"+p.HTTPAddr()+"/v2/models/recommender/infer", strings.NewReader(string(cptest.InferBody(rng))))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("x-switchyard-variant", variant)
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	send("v1", 150)
	send("v9", 30)
	// Wait until Prometheus has scraped the final counts.
	cptest.WaitUntil(t, "prometheus to scrape the traffic", 30*time.Second, func() bool {
		ss, err := src.Query(ctx, `sum(switchyard_proxy_requests_total{model="recommender"})`, time.Now())
		return err == nil && len(ss) == 1 && ss[0] == 180
	})
	time.Sleep(500 * time.Millisecond) // a few more flat samples
	// End the window at the newest sample, so increase() has nothing to
	// extrapolate (it starts from a zero counter, so it does not at the
	// start either) and the counts are exact.
	ts, err := src.Query(ctx, `timestamp(switchyard_proxy_requests_total{model="recommender",variant="v1",code="200"})`, time.Now())
	if err != nil || len(ts) != 1 {
		t.Fatalf("timestamp of the newest sample: %v %v", ts, err)
	}
	to := time.UnixMilli(int64(ts[0] * 1000))
	from := t0.Add(-2 * time.Second)

	v1, err := src.Stats(ctx, "recommender", "v1", from, to)
	if err != nil {
		t.Fatal(err)
	}
	if v1.Requests != 150 || v1.ErrorCount() != 0 {
		t.Fatalf("v1: %d requests, errors %v; want 150 and none", v1.Requests, v1.Errors)
	}
	if v1.Latency.Total != 150 {
		t.Fatalf("v1 latency histogram holds %d observations, want 150", v1.Latency.Total)
	}
	p99 := v1.Latency.Quantile(0.99)
	if p99 <= 0 || p99 > 2*time.Second {
		t.Fatalf("v1 p99 %s", p99)
	}
	v9, err := src.Stats(ctx, "recommender", "v9", from, to)
	if err != nil {
		t.Fatal(err)
	}
	if v9.Requests != 30 || v9.Errors["code_503"] != 30 {
		t.Fatalf("v9: %d requests, errors %v; want 30, all 503", v9.Requests, v9.Errors)
	}
	// The analysis reads them like the proxies' own reports: v9 fails the
	// error-rate gate against v1.
	v := canary.Analyze(v1, v9, canary.Gates{MinRequests: 10}.Defaults(), canary.StepInfo{Started: from, Now: to})
	if v.Decision != canary.Rollback || !strings.Contains(v.Reason, "error_rate 100.00%") {
		t.Fatalf("analysis: %s: %s", v.Decision, v.Reason)
	}
	// A version with no series: zero, no error ("no values found" holds).
	none, err := src.Stats(ctx, "recommender", "v7", from, to)
	if err != nil || none.Requests != 0 || none.Latency.Total != 0 {
		t.Fatalf("unknown version: %+v, %v", none, err)
	}
	// A broken query is an error naming it.
	bad := canaryctl.NewPromSource(promURL)
	bad.Queries.Requests = `sum(increase(switchyard_proxy_requests_total{{{sel}}}[{{window}}])`
	if _, err := bad.Stats(ctx, "recommender", "v1", from, to); err == nil || !strings.Contains(err.Error(), "bad_data") {
		t.Fatalf("broken query: %v", err)
	}
}

func TestHistogramFromProm(t *testing.T) {
	ms := 1e-3
	cases := map[string]struct {
		buckets  []canaryctl.PromBucket
		total    uint64
		p50, p99 [2]time.Duration // accepted range
	}{
		"empty": {buckets: []canaryctl.PromBucket{{1, 0}, {math.Inf(1), 0}}, total: 0},
		"all in one bucket": {buckets: []canaryctl.PromBucket{{1 * ms, 0}, {2 * ms, 100}, {5 * ms, 100}, {math.Inf(1), 100}}, total: 100,
			p50: [2]time.Duration{1300 * time.Microsecond, 1700 * time.Microsecond}, p99: [2]time.Duration{1900 * time.Microsecond, 2 * time.Millisecond}},
		"tail above the last bound": {buckets: []canaryctl.PromBucket{{10 * ms, 90}, {math.Inf(1), 100}}, total: 100,
			p50: [2]time.Duration{4 * time.Millisecond, 6 * time.Millisecond}, p99: [2]time.Duration{9500 * time.Microsecond, 10 * time.Millisecond}},
		"unsorted and non-monotonic input": {buckets: []canaryctl.PromBucket{{math.Inf(1), 10}, {0.5, 10}, {0.1, 10}}, total: 10,
			p50: [2]time.Duration{40 * time.Millisecond, 60 * time.Millisecond}, p99: [2]time.Duration{95 * time.Millisecond, 100 * time.Millisecond}},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			h := canaryctl.HistogramFromProm(c.buckets)
			var sum uint64
			for _, n := range h.Counts {
				sum += n
			}
			if h.Total != c.total || sum != c.total {
				t.Fatalf("total %d, bucket sum %d, want %d", h.Total, sum, c.total)
			}
			if c.total == 0 {
				return
			}
			if q := h.Quantile(0.5); q < c.p50[0] || q > c.p50[1] {
				t.Errorf("p50 %s, want %s..%s", q, c.p50[0], c.p50[1])
			}
			if q := h.Quantile(0.99); q < c.p99[0] || q > c.p99[1] {
				t.Errorf("p99 %s, want %s..%s", q, c.p99[0], c.p99[1])
			}
		})
	}
}

func TestPromQueryExpansion(t *testing.T) {
	p := canaryctl.NewPromSource("http://x")
	t0 := time.Unix(1000, 0)
	got := p.Expand(canaryctl.DefaultPromQueries.Errors, `rec"ommender`, "v2", t0, t0.Add(90500*time.Millisecond))
	want := `sum by (code) (increase(switchyard_proxy_requests_total{model="rec\"ommender",variant="v2",code=~"5..|DeadlineExceeded|Unavailable|Internal|Unknown|DataLoss"}[91s]))`
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	got = p.Expand(canaryctl.DefaultPromQueries.ClientErrors, "recommender", "v2", t0, t0.Add(time.Minute))
	if want := `sum(increase(switchyard_proxy_requests_total{model="recommender",variant="v2",code=~"400|InvalidArgument"}[60s]))`; got != want {
		t.Fatalf("client errors: got  %s\nwant %s", got, want)
	}
}

// TestPromSourceClientErrors: the client 4xx count becomes the
// client_4xx error kind, which the error gate leaves out and the
// client_4xx_rate gate reads (a stub Prometheus answers by query).
func TestPromSourceClientErrors(t *testing.T) {
	answers := map[string]string{
		"requests": "1000", "client": "120",
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query().Get("query")
		val := ""
		switch {
		case strings.Contains(q, `code=~"400|InvalidArgument"`):
			val = answers["client"]
		case strings.HasPrefix(q, "sum(increase(switchyard_proxy_requests_total"):
			val = answers["requests"]
		}
		result := "[]"
		if val != "" {
			result = `[{"metric": {}, "value": [1, "` + val + `"]}]`
		}
		fmt.Fprintf(w, `{"status": "success", "data": {"resultType": "vector", "result": %s}}`, result)
	}))
	defer srv.Close()
	src := canaryctl.NewPromSource(srv.URL)
	t0 := time.Unix(1000, 0)
	st, err := src.Stats(context.Background(), "recommender", "v2", t0, t0.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if st.Requests != 1000 || st.Errors[canary.ErrClient4xx] != 120 || st.FailureCount() != 0 {
		t.Fatalf("stats %d requests, errors %v", st.Requests, st.Errors)
	}
}
