package oip

import "testing"

// BenchmarkDecodeResponseJSON_FP32_1x100 decodes the demo recommender's
// [1,100] FP32 answer as a backend writes it (the primary's answer a shadow
// worker compares).
func BenchmarkDecodeResponseJSON_FP32_1x100(b *testing.B) {
	resp := &InferResponse{ModelName: "recommender-v1", ID: "bench",
		Outputs: []Tensor{NewTensor("scores", []int64{1, 100}, benchFloats(100))}}
	body, _, err := AppendInferResponse(nil, resp, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeInferResponse(body, 0); err != nil {
			b.Fatal(err)
		}
	}
}
