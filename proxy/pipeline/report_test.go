package pipeline

import (
	"encoding/binary"
	"math"
	"testing"

	"github.com/switchyard-dev/switchyard/api"
	pb "github.com/switchyard-dev/switchyard/oip/inferencepb"
)

func TestNaNDetection(t *testing.T) {
	f32 := func(vs ...float32) []byte {
		b := make([]byte, 4*len(vs))
		for i, v := range vs {
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
		}
		return b
	}
	nan := float32(math.NaN())
	canaryRoute := &Route{Model: &api.Model{Spec: api.Spec{Canary: &api.Canary{Version: "v2"}}}}
	plainRoute := &Route{Model: &api.Model{}}
	withRaw := func(raw []byte) *Result {
		return &Result{PB: &pb.ModelInferResponse{Outputs: []*pb.ModelInferResponse_InferOutputTensor{{Name: "scores", Datatype: "FP32", Shape: []int64{1, 2}}},
			RawOutputContents: [][]byte{raw}}}
	}
	cases := map[string]struct {
		route  *Route
		res    *Result
		status int
		want   bool
	}{
		"backend 500 naming NaN":               {plainRoute, &Result{Status: 500, Body: []byte(`{"error":"output \"scores\": element 3 is NaN or infinite, which JSON cannot carry"}`)}, 500, true},
		"backend 500 for another reason":       {plainRoute, &Result{Status: 500, Body: []byte(`{"error":"boom"}`)}, 500, false},
		"proxy's own 503":                      {plainRoute, &Result{}, 503, false},
		"NaN replaced by a fallback":           {plainRoute, &Result{Fallback: "backup", FallbackReason: "nan_output"}, 200, true},
		"fallback for another reason":          {plainRoute, &Result{Fallback: "backup", FallbackReason: "connect_error"}, 200, false},
		"gRPC raw NaN, canary route":           {canaryRoute, withRaw(f32(1, nan)), 200, true},
		"gRPC raw Inf, canary route":           {canaryRoute, withRaw(f32(float32(math.Inf(1)), 0)), 200, true},
		"gRPC raw finite":                      {canaryRoute, withRaw(f32(1, 2)), 200, false},
		"gRPC raw NaN, no canary: not scanned": {plainRoute, withRaw(f32(nan)), 200, false},
	}
	for name, c := range cases {
		if got := hasNaNOutput(c.route, c.res, c.status); got != c.want {
			t.Errorf("%s: %v, want %v", name, got, c.want)
		}
	}
	if !rawHasNaN("FP64", binary.LittleEndian.AppendUint64(nil, math.Float64bits(math.NaN()))) || rawHasNaN("FP64", binary.LittleEndian.AppendUint64(nil, math.Float64bits(1))) {
		t.Error("FP64")
	}
	if !rawHasNaN("FP16", []byte{0x00, 0x7e}) || rawHasNaN("FP16", []byte{0x00, 0x3c}) || rawHasNaN("INT32", f32(nan)) {
		t.Error("FP16 / INT32")
	}
}
