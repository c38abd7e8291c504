package shadow

import (
	"reflect"
	"strings"
	"testing"

	"github.com/switchyard-dev/switchyard/oip"
)

func req(id string, rows int64, first float32) *oip.InferRequest {
	data := make([]float32, rows*3)
	for i := range data {
		data[i] = first + float32(i)
	}
	return &oip.InferRequest{ID: id, Inputs: []oip.Tensor{
		oip.NewTensor("x", []int64{rows, 3}, data),
		oip.NewBytesTensor("tag", []int64{rows}, tags(rows, id)),
	}}
}

func tags(rows int64, id string) [][]byte {
	out := make([][]byte, rows)
	for i := range out {
		out[i] = []byte(id + strings.Repeat("!", i))
	}
	return out
}

func TestJoinable(t *testing.T) {
	base := req("a", 1, 0)
	cases := map[string]struct {
		mut  func(r *oip.InferRequest)
		want bool
	}{
		"same signature, more rows": {func(r *oip.InferRequest) { *r = *req("b", 3, 9) }, true},
		"other id":                  {func(r *oip.InferRequest) { r.ID = "zzz" }, true},
		"input renamed":             {func(r *oip.InferRequest) { r.Inputs[0].Name = "y" }, false},
		"other datatype":            {func(r *oip.InferRequest) { r.Inputs[0] = oip.NewTensor("x", []int64{1, 3}, []float64{1, 2, 3}) }, false},
		"other inner dim":           {func(r *oip.InferRequest) { r.Inputs[0] = oip.NewTensor("x", []int64{1, 4}, make([]float32, 4)) }, false},
		"rank 0 input":              {func(r *oip.InferRequest) { r.Inputs[0] = oip.NewTensor("x", nil, []float32{1}) }, false},
		"inputs disagree on rows":   {func(r *oip.InferRequest) { r.Inputs[0] = oip.NewTensor("x", []int64{2, 3}, make([]float32, 6)) }, false},
		"one input fewer":           {func(r *oip.InferRequest) { r.Inputs = r.Inputs[:1] }, false},
		"request parameter":         {func(r *oip.InferRequest) { r.Parameters = map[string]any{"top": 5.0} }, false},
		"requested outputs":         {func(r *oip.InferRequest) { r.Outputs = []oip.RequestedOutput{{Name: "s"}} }, false},
		"tensor parameter":          {func(r *oip.InferRequest) { r.Inputs[1].Parameters = map[string]any{"k": "v"} }, false},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			b := req("b", 1, 5)
			c.mut(b)
			if got := Joinable(base, b); got != c.want {
				t.Fatalf("Joinable = %v, want %v", got, c.want)
			}
		})
	}
}

// TestJoinSplitRoundTrip: joining requests and splitting an answer that
// echoes the joined rows gives every request back its own rows.
func TestJoinSplitRoundTrip(t *testing.T) {
	reqs := []*oip.InferRequest{req("a", 1, 0), req("b", 3, 100), req("c", 2, 200)}
	joined, err := JoinRequests(reqs)
	if err != nil {
		t.Fatal(err)
	}
	if joined.ID != "a" || !reflect.DeepEqual(joined.Inputs[0].Shape, []int64{6, 3}) || !reflect.DeepEqual(joined.Inputs[1].Shape, []int64{6}) {
		t.Fatalf("joined %+v", joined)
	}
	if err := joined.Inputs[1].Validate(); err != nil {
		t.Fatalf("joined BYTES input: %v", err)
	}
	// An "identity model" answer: the joined x as output "y".
	resp := &oip.InferResponse{ModelName: "m", Outputs: []oip.Tensor{{Name: "y", Datatype: oip.FP32, Shape: joined.Inputs[0].Shape, Raw: joined.Inputs[0].Raw}}}
	parts, err := SplitResponse(resp, []int64{1, 3, 2})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range reqs {
		got := parts[i].Outputs[0]
		if !reflect.DeepEqual(got.Shape, r.Inputs[0].Shape) || !reflect.DeepEqual(got.Raw, r.Inputs[0].Raw) || parts[i].ModelName != "m" {
			t.Errorf("part %d: %+v, want the rows of %+v", i, got, r.Inputs[0])
		}
	}
	for i, r := range []*oip.InferRequest{req("a", 1, 0), req("b", 3, 100), req("c", 2, 200)} {
		if !reflect.DeepEqual(r, reqs[i]) {
			t.Errorf("request %d was modified by the join", i)
		}
	}
}

func TestJoinSplitRefusals(t *testing.T) {
	if _, err := JoinRequests(nil); err == nil {
		t.Error("join of nothing")
	}
	odd := req("b", 1, 0)
	odd.Parameters = map[string]any{"p": true}
	if _, err := JoinRequests([]*oip.InferRequest{req("a", 1, 0), odd}); err == nil || !strings.Contains(err.Error(), "request 1") {
		t.Errorf("mismatched join: %v", err)
	}
	cases := map[string]oip.Tensor{
		"lost the batch dim": oip.NewTensor("y", []int64{3}, make([]float32, 3)),
		"rank 0":             oip.NewTensor("y", nil, []float32{1}),
		"BYTES output":       oip.NewBytesTensor("y", []int64{4}, tags(4, "z")),
		"short data":         {Name: "y", Datatype: oip.FP32, Shape: []int64{4, 2}, Raw: make([]byte, 30)},
	}
	for name, o := range cases {
		if _, err := SplitResponse(&oip.InferResponse{Outputs: []oip.Tensor{o}}, []int64{1, 3}); err == nil || !strings.Contains(err.Error(), `"y"`) {
			t.Errorf("%s: %v, want an error naming the output", name, err)
		}
	}
}
