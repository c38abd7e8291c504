package fallback

import (
	"encoding/json"
	"testing"

	"github.com/switchyard-dev/switchyard/oip"
)

func req(params map[string]any, inputs ...oip.Tensor) *oip.InferRequest {
	return &oip.InferRequest{ModelName: "rec", Inputs: inputs, Parameters: params}
}

func mustKey(t *testing.T, version string, r *oip.InferRequest) Key {
	t.Helper()
	k, err := NewKey("rec", version, "json", r, nil)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestKeyCanonical(t *testing.T) {
	a := oip.NewTensor("user", []int64{1, 4}, []float32{1, 2, 3, 4})
	b := oip.NewTensor("ctx", []int64{1, 2}, []int64{7, 8})
	base := mustKey(t, "v1", req(map[string]any{"temperature": 0.5, "n": 3.0}, a, b))

	same := map[string]*oip.InferRequest{
		"inputs reordered":      req(map[string]any{"temperature": 0.5, "n": 3.0}, b, a),
		"int64 parameter":       req(map[string]any{"n": int64(3), "temperature": 0.5}, a, b),
		"json number parameter": req(map[string]any{"n": json.Number("3"), "temperature": json.Number("0.5")}, a, b),
		"different id":          {ID: "other", ModelName: "rec", Inputs: []oip.Tensor{a, b}, Parameters: map[string]any{"temperature": 0.5, "n": 3.0}},
		"binary_data_size": req(map[string]any{"temperature": 0.5, "n": 3.0},
			oip.Tensor{Name: a.Name, Datatype: a.Datatype, Shape: a.Shape, Raw: a.Raw, Parameters: map[string]any{"binary_data_size": 16.0}}, b),
	}
	for name, r := range same {
		if got := mustKey(t, "v1", r); got != base {
			t.Errorf("%s: key differs", name)
		}
	}

	c := oip.NewTensor("user", []int64{1, 4}, []float32{1, 2, 3, 5})
	differ := map[string]*oip.InferRequest{
		"other value":     req(map[string]any{"temperature": 0.5, "n": 3.0}, c, b),
		"other shape":     req(map[string]any{"temperature": 0.5, "n": 3.0}, oip.NewTensor("user", []int64{2, 2}, []float32{1, 2, 3, 4}), b),
		"other dtype":     req(map[string]any{"temperature": 0.5, "n": 3.0}, a, oip.NewTensor("ctx", []int64{1, 2}, []uint64{7, 8})),
		"other name":      req(map[string]any{"temperature": 0.5, "n": 3.0}, a, oip.NewTensor("ctx2", []int64{1, 2}, []int64{7, 8})),
		"other parameter": req(map[string]any{"temperature": 0.7, "n": 3.0}, a, b),
		"extra parameter": req(map[string]any{"temperature": 0.5, "n": 3.0, "k": "x"}, a, b),
		"no parameters":   req(nil, a, b),
		"requested output": {ModelName: "rec", Inputs: []oip.Tensor{a, b}, Parameters: map[string]any{"temperature": 0.5, "n": 3.0},
			Outputs: []oip.RequestedOutput{{Name: "scores"}}},
	}
	seen := map[[32]byte]string{base.Hash: "base"}
	for name, r := range differ {
		k := mustKey(t, "v1", r)
		if prev, dup := seen[k.Hash]; dup {
			t.Errorf("%s: same hash as %s", name, prev)
		}
		seen[k.Hash] = name
	}
	if mustKey(t, "v2", req(map[string]any{"temperature": 0.5, "n": 3.0}, a, b)) == base {
		t.Error("another version must give another key")
	}

	// An ignored parameter does not change the key.
	ign := func(p string) bool { return p == "trace" }
	k1, _ := NewKey("rec", "v1", "json", req(map[string]any{"trace": "abc"}, a), ign)
	k2, _ := NewKey("rec", "v1", "json", req(map[string]any{"trace": "def"}, a), ign)
	k3, _ := NewKey("rec", "v1", "json", req(nil, a), ign)
	if k1 != k2 || k1 != k3 {
		t.Error("ignored parameter changed the key")
	}
}

func TestKeyBoundaries(t *testing.T) {
	// Length prefixes: moving a byte from a name into the data must change the key.
	x := req(nil, oip.Tensor{Name: "ab", Datatype: oip.UINT8, Shape: []int64{1}, Raw: []byte{'c'}})
	y := req(nil, oip.Tensor{Name: "a", Datatype: oip.UINT8, Shape: []int64{1}, Raw: []byte{'b'}})
	if mustKey(t, "v1", x) == mustKey(t, "v1", y) {
		t.Error("keys collide")
	}
	dup := req(nil, oip.NewTensor("a", []int64{1}, []float32{1}), oip.NewTensor("a", []int64{1}, []float32{2}))
	_, err := NewKey("rec", "v1", "json", dup, nil)
	if err == nil || oip.CodeOf(err) != oip.InvalidArgument {
		t.Errorf("duplicate input: %v", err)
	}
	// many inputs (more than the stack index buffer) still sort
	var in1, in2 []oip.Tensor
	for i := 0; i < 20; i++ {
		in1 = append(in1, oip.NewTensor(string(rune('a'+i)), []int64{1}, []float32{float32(i)}))
	}
	for i := 19; i >= 0; i-- {
		in2 = append(in2, in1[i])
	}
	if mustKey(t, "v1", req(nil, in1...)) != mustKey(t, "v1", req(nil, in2...)) {
		t.Error("20 inputs: order changed the key")
	}
}
