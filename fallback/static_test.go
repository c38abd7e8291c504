package fallback

import (
	"strings"
	"testing"

	"github.com/switchyard-dev/switchyard/oip"
)

func TestNewStatic(t *testing.T) {
	s, err := NewStatic([]StaticTensor{
		{Name: "scores", Datatype: "FP32", Shape: []int64{1, 3}, Data: []float64{0.5, 0.25, -1}},
		{Name: "items", Datatype: "INT64", Shape: []int64{3}, Data: []float64{42, 7, -9007199254740992}},
		{Name: "labels", Datatype: "BYTES", Shape: []int64{2}, Strings: []string{"popular", ""}},
		{Name: "flags", Datatype: "BOOL", Shape: []int64{2}, Data: []float64{1, 0}},
		{Name: "half", Datatype: "FP16", Shape: []int64{1}, Data: []float64{1.5}},
	})
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.Response("rec", "id-7", -1)
	if err != nil {
		t.Fatal(err)
	}
	if r.ID != "id-7" || r.ModelName != "rec" || len(r.Outputs) != 5 {
		t.Fatalf("%+v", r)
	}
	f, _ := r.Outputs[0].Float64s()
	if f[0] != 0.5 || f[1] != 0.25 || f[2] != -1 {
		t.Errorf("scores %v", f)
	}
	i := oip.Values[int64](r.Outputs[1].Raw)
	if i[0] != 42 || i[2] != -9007199254740992 {
		t.Errorf("items %v", i)
	}
	el, _ := r.Outputs[2].BytesElements()
	if string(el[0]) != "popular" || len(el[1]) != 0 {
		t.Errorf("labels %q", el)
	}
	h, _ := r.Outputs[4].Float64s()
	if h[0] != 1.5 {
		t.Errorf("fp16 %v", h)
	}
	for _, o := range r.Outputs {
		if err := o.Validate(); err != nil {
			t.Error(err)
		}
	}
}

func TestNewStaticErrors(t *testing.T) {
	cases := map[string]struct {
		spec []StaticTensor
		want string
	}{
		"none":           {nil, "at least one output"},
		"no name":        {[]StaticTensor{{Datatype: "FP32", Shape: []int64{1}, Data: []float64{1}}}, "name is required"},
		"bad datatype":   {[]StaticTensor{{Name: "a", Datatype: "FLOAT", Shape: []int64{1}, Data: []float64{1}}}, `unknown datatype "FLOAT"`},
		"count mismatch": {[]StaticTensor{{Name: "a", Datatype: "FP32", Shape: []int64{2, 2}, Data: []float64{1}}}, "needs 4 values, got 1"},
		"neg dim":        {[]StaticTensor{{Name: "a", Datatype: "FP32", Shape: []int64{-1}}}, "dimensions must be >= 0"},
		"fraction int":   {[]StaticTensor{{Name: "a", Datatype: "INT32", Shape: []int64{1}, Data: []float64{1.5}}}, "whole number"},
		"int8 range":     {[]StaticTensor{{Name: "a", Datatype: "INT8", Shape: []int64{1}, Data: []float64{200}}}, "out of range for INT8"},
		"uint negative":  {[]StaticTensor{{Name: "a", Datatype: "UINT32", Shape: []int64{1}, Data: []float64{-1}}}, "out of range"},
		"bool 2":         {[]StaticTensor{{Name: "a", Datatype: "BOOL", Shape: []int64{1}, Data: []float64{2}}}, "0 or 1"},
		"fp32 overflow":  {[]StaticTensor{{Name: "a", Datatype: "FP32", Shape: []int64{1}, Data: []float64{1e300}}}, "overflows FP32"},
		"bytes as data":  {[]StaticTensor{{Name: "a", Datatype: "BYTES", Shape: []int64{1}, Data: []float64{1}}}, "takes strings"},
		"strings as num": {[]StaticTensor{{Name: "a", Datatype: "FP32", Shape: []int64{1}, Strings: []string{"x"}}}, "takes data"},
		"bytes count":    {[]StaticTensor{{Name: "a", Datatype: "BYTES", Shape: []int64{2}, Strings: []string{"x"}}}, "needs 2 strings"},
		"duplicate": {[]StaticTensor{
			{Name: "a", Datatype: "FP32", Shape: []int64{1}, Data: []float64{1}},
			{Name: "a", Datatype: "FP32", Shape: []int64{1}, Data: []float64{1}},
		}, "duplicate output name"},
	}
	for name, c := range cases {
		_, err := NewStatic(c.spec)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want it to contain %q", name, err, c.want)
		}
	}
	_, err := NewStatic([]StaticTensor{{Name: "ok", Datatype: "FP32", Shape: []int64{1}, Data: []float64{1}}, {Name: "bad", Datatype: "INT8", Shape: []int64{1}, Data: []float64{1000}}})
	if err == nil || !strings.Contains(err.Error(), `static.outputs[1] "bad": data[0]`) {
		t.Errorf("error must name the output and element: %v", err)
	}
}

// TestStaticFollowsRequestRows: the static answer's batch dimension
// follows the request's — a configured row is repeated per request row;
// a matching row count is served as is; anything else is an error naming
// the sizes, never an answer of the wrong shape.
func TestStaticFollowsRequestRows(t *testing.T) {
	s, err := NewStatic([]StaticTensor{
		{Name: "scores", Datatype: "FP32", Shape: []int64{1, 2}, Data: []float64{0.5, 0.25}},
		{Name: "labels", Datatype: "BYTES", Shape: []int64{1, 1}, Strings: []string{"popular"}},
		{Name: "version", Datatype: "INT32", Shape: []int64{1}, Data: []float64{7}},
	})
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.Response("rec", "", 3)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Outputs[0].Shape; len(got) != 2 || got[0] != 3 || got[1] != 2 {
		t.Fatalf("scores shape %v, want [3 2]", got)
	}
	f, _ := r.Outputs[0].Float64s()
	if len(f) != 6 || f[0] != 0.5 || f[1] != 0.25 || f[4] != 0.5 || f[5] != 0.25 {
		t.Fatalf("scores %v, want the row repeated 3 times", f)
	}
	el, err := r.Outputs[1].BytesElements()
	if err != nil || len(el) != 3 || string(el[2]) != "popular" || r.Outputs[1].Shape[0] != 3 {
		t.Fatalf("labels %q %v (%v)", el, r.Outputs[1].Shape, err)
	}
	if got := r.Outputs[2].Shape; len(got) != 1 || got[0] != 1 {
		t.Fatalf("rank-1 output reshaped to %v", got)
	}
	for _, o := range r.Outputs {
		if err := o.Validate(); err != nil {
			t.Error(err)
		}
	}
	if one, _ := s.Response("rec", "", 1); one.Outputs[0].Shape[0] != 1 {
		t.Fatalf("one row: %v", one.Outputs[0].Shape)
	}
	two, err := NewStatic([]StaticTensor{{Name: "scores", Datatype: "FP32", Shape: []int64{2, 1}, Data: []float64{1, 2}}})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := two.Response("rec", "", 2); err != nil || r.Outputs[0].Shape[0] != 2 {
		t.Fatalf("matching rows: %v %v", r, err)
	}
	if _, err := two.Response("rec", "", 3); err == nil || !strings.Contains(err.Error(), `static output "scores" has 2 rows; the request has 3`) {
		t.Fatalf("2 configured rows for a 3-row request: %v", err)
	}
}
