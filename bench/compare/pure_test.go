package compare

import (
	"math"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestSpreadOf(t *testing.T) {
	nan := math.NaN()
	for _, tc := range []struct {
		in   []float64
		want Spread
	}{
		{[]float64{3, 1, 2}, Spread{N: 3, Median: 2, Min: 1, Max: 3}},
		{[]float64{4, 1, 3, 2}, Spread{N: 4, Median: 2.5, Min: 1, Max: 4}},
		{[]float64{5}, Spread{N: 1, Median: 5, Min: 5, Max: 5}},
		{[]float64{nan, 7, nan}, Spread{N: 1, Median: 7, Min: 7, Max: 7}},
	} {
		if got := SpreadOf(tc.in); got != tc.want {
			t.Errorf("SpreadOf(%v) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
	if got := SpreadOf(nil); got.N != 0 || !math.IsNaN(got.Median) {
		t.Errorf("SpreadOf(nil) = %+v, want N 0 and NaN", got)
	}
}

func TestRotate(t *testing.T) {
	xs := []string{"a", "b", "c"}
	for k, want := range [][]string{{"a", "b", "c"}, {"b", "c", "a"}, {"c", "a", "b"}, {"a", "b", "c"}} {
		if got := Rotate(xs, k); !cmp.Equal(got, want) {
			t.Errorf("Rotate(%d) = %v, want %v", k, got, want)
		}
	}
	if Rotate([]string{}, 3) != nil {
		t.Error("Rotate of empty: want nil")
	}
}

// Two repetitions at one rate: every difference and ratio is taken within
// a repetition, then summarised.
func TestAggregatePairwise(t *testing.T) {
	s := func(piece string, rep int, p50, p99, svc float64, proxyCPU float64, rss int64, backendCPU float64) Sample {
		return Sample{Piece: piece, Rate: 1000, Rep: rep, Achieved: 1000, P50ms: p50, P99ms: p99, ServiceP50ms: svc,
			Completed: 1000, OK: 1000, HasProxy: proxyCPU > 0, ProxyCPU: proxyCPU, ProxyRSSPeak: rss,
			HasBackend: backendCPU > 0, BackendCPU: backendCPU}
	}
	samples := []Sample{
		s("direct", 0, 1.0, 2.0, 0.9, 0, 0, 0.5),
		s("direct", 1, 2.0, 4.0, 1.8, 0, 0, 0.5),
		s("nginx", 0, 1.5, 3.0, 1.4, 0.1, 10<<20, 0.5),    // 10000 req/CPU-s, added p99 1
		s("nginx", 1, 2.5, 6.0, 2.4, 0.2, 12<<20, 0.5),    // 5000, added p99 2
		s("switchyard", 0, 2.0, 4.0, 1.9, 0.2, 30<<20, 1), // 5000 (0.5×), added p99 2 (2×)
		s("switchyard", 1, 3.0, 6.0, 2.9, 0.1, 32<<20, 1), // 10000 (2×), added p99 2 (1×)
		s("inprocess", 0, 0.5, 1.0, 0.4, 0, 0, 0),
		s("inprocess", 1, 0.6, 1.0, 0.5, 0, 0, 0),
	}
	rows := Aggregate(samples, []string{"direct", "nginx", "switchyard", "inprocess"}, []float64{1000}, "direct", "nginx", "inprocess")
	if len(rows) != 4 {
		t.Fatalf("%d rows, want 4", len(rows))
	}
	sy := rows[2]
	if sy.Piece != "switchyard" || sy.Runs != 2 {
		t.Fatalf("row 2 = %s with %d runs", sy.Piece, sy.Runs)
	}
	near := func(name string, got Spread, med, lo, hi float64) {
		t.Helper()
		if math.Abs(got.Median-med) > 1e-9 || math.Abs(got.Min-lo) > 1e-9 || math.Abs(got.Max-hi) > 1e-9 {
			t.Errorf("%s = %+v, want median %v [%v, %v]", name, got, med, lo, hi)
		}
	}
	near("added p50", sy.AddedP50, 1.0, 1.0, 1.0)
	near("added p99", sy.AddedP99, 2.0, 2.0, 2.0)
	near("req per proxy CPU-s", sy.ReqPerCPU, 7500, 5000, 10000)
	near("vs nginx CPU", sy.VsNginxCPU, 1.25, 0.5, 2.0)
	near("vs nginx added p99", sy.VsNginxAddedP99, 1.5, 1.0, 2.0)
	near("RSS MiB", sy.RSSMiB, 31, 30, 32)
	near("req per backend CPU-s", sy.ReqPerBackendCPU, 1000, 1000, 1000)
	near("service over in-process µs", sy.OverInProcessP50us, 1950, 1500, 2400)
	// nginx against itself is 1× by construction; direct has no proxy
	// and no added latency.
	near("nginx vs nginx", rows[1].VsNginxCPU, 1, 1, 1)
	if rows[0].AddedP50.N != 0 || rows[0].ReqPerCPU.N != 0 || rows[0].VsNginxCPU.N != 0 {
		t.Errorf("direct row %+v: want no added latency, proxy CPU or ratio", rows[0])
	}
	if rows[3].OverInProcessP50us.N != 0 || rows[3].ReqPerBackendCPU.N != 0 {
		t.Errorf("in-process row %+v: want no self-difference and no backend CPU", rows[3])
	}
}

func TestAggregateNoCPUTicks(t *testing.T) {
	// A run too short for one /proc tick has no requests-per-CPU value
	// rather than an infinite one; an added latency at or below zero for
	// nginx gives no ratio.
	samples := []Sample{
		{Piece: "direct", Rate: 50, P99ms: 2},
		{Piece: "nginx", Rate: 50, P99ms: 1.5, HasProxy: true, ProxyCPU: 0, Completed: 50},
		{Piece: "switchyard", Rate: 50, P99ms: 3, HasProxy: true, ProxyCPU: 0.01, Completed: 50},
	}
	rows := Aggregate(samples, []string{"direct", "nginx", "switchyard"}, []float64{50}, "direct", "nginx", "inprocess")
	if rows[1].ReqPerCPU.N != 0 || rows[2].ReqPerCPU.Median != 5000 {
		t.Errorf("req per CPU: nginx %+v, switchyard %+v", rows[1].ReqPerCPU, rows[2].ReqPerCPU)
	}
	if rows[2].VsNginxCPU.N != 0 || rows[2].VsNginxAddedP99.N != 0 {
		t.Errorf("ratios %+v %+v, want none", rows[2].VsNginxCPU, rows[2].VsNginxAddedP99)
	}
	var b strings.Builder
	r := &Results{Rows: rows, Samples: samples}
	if err := r.WriteMarkdown(&b); err != nil || !strings.Contains(b.String(), "| nginx | 50 |") {
		t.Errorf("markdown: %v\n%s", err, b.String())
	}
	b.Reset()
	if err := r.WriteJSON(&b); err != nil {
		t.Errorf("JSON with empty spreads: %v", err)
	}
}

func TestParsePPID(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
		ok   bool
	}{
		{"1234 (nginx) S 1200 1234 1234 0 -1", 1200, true},
		{"77 (a b) c)) R 5 77 77", 5, true},
		{"garbage", 0, false},
		{"1 (x)", 0, false},
	} {
		got, err := ParsePPID([]byte(tc.in))
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParsePPID(%q) = %d, %v; want %d ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestMetricSum(t *testing.T) {
	text := []byte(`# HELP switchyard_cache_hits_total Hits.
# TYPE switchyard_cache_hits_total counter
switchyard_cache_hits_total{model="a",variant="v1"} 40
switchyard_cache_hits_total{model="b",variant="v1"} 2
switchyard_cache_hits_totally_other 99
switchyard_shadow_mirrored_total 7
`)
	for name, want := range map[string]float64{"switchyard_cache_hits_total": 42, "switchyard_shadow_mirrored_total": 7, "absent": 0} {
		if got := MetricSum(text, name); got != want {
			t.Errorf("MetricSum(%s) = %v, want %v", name, got, want)
		}
	}
}

func TestPeerConfigs(t *testing.T) {
	n := NginxConfig("/tmp/x", 8081, "127.0.0.1:9000", 2)
	for _, want := range []string{"worker_processes 2;", "listen 127.0.0.1:8081;", "server 127.0.0.1:9000; keepalive 128;",
		"proxy_pass http://backend/v2/models/recommender-v1/infer;", `proxy_set_header Connection "";`, "access_log off;"} {
		if !strings.Contains(n, want) {
			t.Errorf("nginx.conf lacks %q:\n%s", want, n)
		}
	}
	h := HAProxyConfig(8082, "127.0.0.1:9000", 1)
	for _, want := range []string{"nbthread 1", "bind 127.0.0.1:8082", "server b1 127.0.0.1:9000", "http-reuse always",
		"set-path /v2/models/recommender-v1/infer"} {
		if !strings.Contains(h, want) {
			t.Errorf("haproxy.cfg lacks %q:\n%s", want, h)
		}
	}
}
