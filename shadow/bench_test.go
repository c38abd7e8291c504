package shadow

import (
	"math/rand/v2"
	"testing"

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
