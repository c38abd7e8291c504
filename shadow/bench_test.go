package shadow

import (
	"math/rand/v2"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchyard-dev/switchyard/oip"
)

// BenchmarkCompareTopK diffs two [1,100] FP32 score vectors, top-10.
func BenchmarkCompareTopK(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	p, s := make([]float32, 100), make([]float32, 100)
	for i := range p {
		p[i] = r.Float32()
		s[i] = p[i] + 0.05*r.Float32()
	}
	pr := Result{Response: &oip.InferResponse{Outputs: []oip.Tensor{oip.NewTensor("scores", []int64{1, 100}, p)}}}
	sr := Result{Response: &oip.InferResponse{Outputs: []oip.Tensor{oip.NewTensor("scores", []int64{1, 100}, s)}}}
	cfg := Config{Rule: Rule{Mode: TopK, K: 10}}.Defaults()
	b.ReportAllocs()
	for b.Loop() {
		Compare(pr, sr, cfg)
	}
}

// BenchmarkWorkerAfterCall is a worker's CPU per job after the shadow call
// returned: compare, metrics, the ring's record (summaries, input digest).
func BenchmarkWorkerAfterCall(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	in, p, s := make([]float32, 32), make([]float32, 100), make([]float32, 100)
	for i := range in {
		in[i] = r.Float32()
	}
	for i := range p {
		p[i] = r.Float32()
		s[i] = p[i] + 0.05*r.Float32()
	}
	req := &oip.InferRequest{ID: "r1", Inputs: []oip.Tensor{oip.NewTensor("features", []int64{1, 32}, in)}}
	pr := Result{Response: &oip.InferResponse{Outputs: []oip.Tensor{oip.NewTensor("scores", []int64{1, 100}, p)}}}
	sr := Result{Response: &oip.InferResponse{Outputs: []oip.Tensor{oip.NewTensor("scores", []int64{1, 100}, s)}}}
	cfg := MirrorConfig{Compare: Config{Rule: Rule{Mode: TopK, K: 10}}}.defaults()
	m := NewMetrics(prometheus.NewRegistry())
	mr := &Mirror{cfg: cfg, m: m, ring: NewRing(1024)}
	w := newWorkerState(m)
	j := &Job{Kind: KindShadow, Model: "m", PrimaryVersion: "v1", TargetVersion: "v2", Request: req, Primary: pr}
	b.ReportAllocs()
	for b.Loop() {
		mr.afterCall(w, j, sr)
	}
}
