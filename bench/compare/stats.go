package compare

import (
	"math"
	"slices"
)

// Sample is one measured run of one piece at one rate in one repetition.
type Sample struct {
	Piece    string  `json:"piece"`
	Rate     float64 `json:"rate"`
	Rep      int     `json:"rep"`
	Achieved float64 `json:"achieved_rps"`
	P50ms    float64 `json:"p50_ms"`
	P99ms    float64 `json:"p99_ms"`
	MaxMs    float64 `json:"max_ms"`
	// ServiceP50ms is the median from the actual send to the answer (no
	// generator lag); LagP50ms / LagP99ms are the generator's send lag.
	ServiceP50ms float64 `json:"service_p50_ms"`
	LagP50ms     float64 `json:"lag_p50_ms"`
	LagP99ms     float64 `json:"lag_p99_ms"`
	Scheduled    int     `json:"scheduled"`
	Completed    int     `json:"completed"`
	OK           int     `json:"ok"`
	Errors       int     `json:"errors"`
	Unsent       int     `json:"unsent"`
	// ProxyCPU is the proxy processes' utime+stime over the measured run
	// (seconds); HasProxy is false for pieces without a proxy.
	HasProxy     bool    `json:"has_proxy"`
	ProxyCPU     float64 `json:"proxy_cpu_s"`
	ProxyRSSPeak int64   `json:"proxy_rss_peak_bytes"`
	// BackendCPU is the serving backend's utime+stime over the run
	// (seconds); HasBackend is false for the in-process piece.
	HasBackend bool    `json:"has_backend"`
	BackendCPU float64 `json:"backend_cpu_s"`
}

// Spread is the median and range of repeated measurements.
type Spread struct {
	N      int     `json:"n"`
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
}

// SpreadOf summarises xs; NaN values are left out (N counts the rest).
func SpreadOf(xs []float64) Spread {
	v := make([]float64, 0, len(xs))
	for _, x := range xs {
		if !math.IsNaN(x) {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return Spread{Median: math.NaN(), Min: math.NaN(), Max: math.NaN()}
	}
	slices.Sort(v)
	m := v[len(v)/2]
	if len(v)%2 == 0 {
		m = (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return Spread{N: len(v), Median: m, Min: v[0], Max: v[len(v)-1]}
}

// Row is one piece at one rate over all repetitions.
type Row struct {
	Piece    string  `json:"piece"`
	Rate     float64 `json:"rate"`
	Runs     int     `json:"runs"`
	Achieved Spread  `json:"achieved_rps"`
	P50      Spread  `json:"p50_ms"`
	P99      Spread  `json:"p99_ms"`
	// AddedP50 / AddedP99: this piece minus Direct in the same repetition
	// and rate (ms).
	AddedP50 Spread `json:"added_p50_ms"`
	AddedP99 Spread `json:"added_p99_ms"`
	// ReqPerCPU is completed requests per proxy CPU-second.
	ReqPerCPU Spread `json:"requests_per_proxy_cpu_s"`
	RSSMiB    Spread `json:"proxy_rss_peak_mib"`
	// ReqPerBackendCPU is completed requests per backend CPU-second.
	ReqPerBackendCPU Spread `json:"requests_per_backend_cpu_s"`
	// VsNginxCPU is ReqPerCPU / nginx's ReqPerCPU, pair by pair (same
	// repetition and rate); VsNginxAddedP99 likewise for the added p99.
	VsNginxCPU      Spread `json:"vs_nginx_requests_per_cpu"`
	VsNginxAddedP99 Spread `json:"vs_nginx_added_p99"`
	// ServiceP50 is the median service time (actual send to answer).
	ServiceP50 Spread `json:"service_p50_ms"`
	// OverInProcessP50us is this piece's service-time p50 minus the
	// in-process ONNX Runtime one, pair by pair (µs): the protocol's cost
	// per request, without the load generator's send lag.
	OverInProcessP50us Spread `json:"over_inprocess_p50_us"`
	Errors             int    `json:"errors"`
	Unsent             int    `json:"unsent"`
}

// Aggregate groups samples by (piece, rate) in the order the pieces and
// rates first appear in order and rates, and computes medians, ranges and
// pairwise differences and ratios against the reference pieces direct,
// nginx and inprocess (pure).
func Aggregate(samples []Sample, order []string, rates []float64, direct, nginx, inprocess string) []Row {
	type key struct {
		piece string
		rate  float64
		rep   int
	}
	byKey := map[key]Sample{}
	for _, s := range samples {
		byKey[key{s.Piece, s.Rate, s.Rep}] = s
	}
	var rows []Row
	for _, piece := range order {
		for _, rate := range rates {
			var ss []Sample
			for _, s := range samples {
				if s.Piece == piece && s.Rate == rate {
					ss = append(ss, s)
				}
			}
			if len(ss) == 0 {
				continue
			}
			r := Row{Piece: piece, Rate: rate, Runs: len(ss)}
			var ach, p50, p99, svc, ap50, ap99, rpc, rss, rpb, vsCPU, vsP99, overIP []float64
			for _, s := range ss {
				ach = append(ach, s.Achieved)
				p50 = append(p50, s.P50ms)
				p99 = append(p99, s.P99ms)
				svc = append(svc, s.ServiceP50ms)
				r.Errors += s.Errors
				r.Unsent += s.Unsent
				if d, ok := byKey[key{direct, rate, s.Rep}]; ok && piece != direct {
					ap50 = append(ap50, s.P50ms-d.P50ms)
					ap99 = append(ap99, s.P99ms-d.P99ms)
				}
				if s.HasProxy {
					rpc = append(rpc, perCPU(s.Completed, s.ProxyCPU))
					rss = append(rss, float64(s.ProxyRSSPeak)/(1<<20))
				}
				if s.HasBackend {
					rpb = append(rpb, perCPU(s.Completed, s.BackendCPU))
				}
				if n, ok := byKey[key{nginx, rate, s.Rep}]; ok && s.HasProxy && n.HasProxy {
					vsCPU = append(vsCPU, ratio(perCPU(s.Completed, s.ProxyCPU), perCPU(n.Completed, n.ProxyCPU)))
					if d, ok := byKey[key{direct, rate, s.Rep}]; ok {
						vsP99 = append(vsP99, ratio(s.P99ms-d.P99ms, n.P99ms-d.P99ms))
					}
				}
				if ip, ok := byKey[key{inprocess, rate, s.Rep}]; ok && piece != inprocess {
					overIP = append(overIP, (s.ServiceP50ms-ip.ServiceP50ms)*1000)
				}
			}
			r.Achieved, r.P50, r.P99, r.ServiceP50 = SpreadOf(ach), SpreadOf(p50), SpreadOf(p99), SpreadOf(svc)
			r.AddedP50, r.AddedP99 = SpreadOf(ap50), SpreadOf(ap99)
			r.ReqPerCPU, r.RSSMiB, r.ReqPerBackendCPU = SpreadOf(rpc), SpreadOf(rss), SpreadOf(rpb)
			r.VsNginxCPU, r.VsNginxAddedP99 = SpreadOf(vsCPU), SpreadOf(vsP99)
			r.OverInProcessP50us = SpreadOf(overIP)
			rows = append(rows, r)
		}
	}
	return rows
}

// perCPU is requests per CPU-second; NaN when no CPU time was measured
// (runs shorter than the 10 ms tick of /proc).
func perCPU(n int, cpu float64) float64 {
	if cpu <= 0 {
		return math.NaN()
	}
	return float64(n) / cpu
}

// ratio is a/b; NaN when b is not positive (an added latency at or below
// zero has no meaningful ratio).
func ratio(a, b float64) float64 {
	if !(b > 0) || math.IsNaN(a) {
		return math.NaN()
	}
	return a / b
}

// Rotate returns xs rotated left by k, so each repetition starts with a
// different piece and no piece always runs on a machine warmed by the
// same predecessor.
func Rotate[T any](xs []T, k int) []T {
	if len(xs) == 0 {
		return nil
	}
	k %= len(xs)
	out := make([]T, 0, len(xs))
	out = append(out, xs[k:]...)
	return append(out, xs[:k]...)
}
