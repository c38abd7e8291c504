package onnxpb

import (
	"bytes"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

func TestTensorRoundTrip(t *testing.T) {
	cases := []Tensor{
		{Name: "f", DataType: Float, Dims: []int64{2, 2}, Raw: le32(1, 2, 3, 4)},
		{Name: "scalar", DataType: Int64, Raw: make([]byte, 8)},
		{Name: "b", DataType: Bool, Dims: []int64{3}, Raw: []byte{1, 0, 1}},
		{Name: "h", DataType: Float16, Dims: []int64{1}, Raw: []byte{0x00, 0x3c}},
		{Name: "s", DataType: String, Dims: []int64{2}, Strings: [][]byte{[]byte("a"), []byte("")}},
	}
	for _, want := range cases {
		got, err := ParseTensor(want.Marshal())
		if err != nil {
			t.Fatalf("%s: %v", want.Name, err)
		}
		if got.Name != want.Name || got.DataType != want.DataType || len(got.Dims) != len(want.Dims) ||
			!bytes.Equal(got.Raw, want.Raw) || len(got.Strings) != len(want.Strings) {
			t.Errorf("%s: round trip gave %+v", want.Name, got)
		}
	}
}

// TestParseTypedFields: tensors may carry data in the typed repeated fields,
// packed or not, instead of raw_data.
func TestParseTypedFields(t *testing.T) {
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.VarintType) // dims, unpacked
	b = protowire.AppendVarint(b, 3)
	b = protowire.AppendTag(b, 2, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(Int32))
	var packed []byte
	for _, v := range []int32{-1, 0, 7} {
		packed = protowire.AppendVarint(packed, uint64(int64(v)))
	}
	b = protowire.AppendTag(b, 5, protowire.BytesType)
	b = protowire.AppendBytes(b, packed)
	got, err := ParseTensor(b)
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 7, 0, 0, 0}
	if !bytes.Equal(got.Raw, want) {
		t.Fatalf("raw %v, want %v", got.Raw, want)
	}
	// A dims/data mismatch is an error naming the tensor.
	bad := Tensor{Name: "short", DataType: Float, Dims: []int64{3}, Raw: le32(1)}
	if _, err := ParseTensor(bad.Marshal()); err == nil {
		t.Fatal("short tensor: no error")
	}
	if _, err := ParseTensor([]byte{0xff}); err == nil {
		t.Fatal("garbage: no error")
	}
}

func TestModelIO(t *testing.T) {
	m := Model{IRVersion: 8, Opset: 13, Graph: Graph{
		Name:         "g",
		Inputs:       []ValueInfo{{Name: "x", ElemType: Float, HasShape: true, Shape: []Dim{{Param: "N"}, {Value: 4, Known: true}}}, {Name: "w", ElemType: Float}},
		Outputs:      []ValueInfo{{Name: "y", ElemType: Int64}},
		Initializers: []Tensor{{Name: "w", DataType: Float, Raw: le32(1)}},
		Nodes:        []Node{{OpType: "Identity", Inputs: []string{"x"}, Outputs: []string{"y"}}},
	}}
	ins, outs, err := ParseModelIO(m.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	if len(ins) != 1 || ins[0].Name != "x" || !ins[0].HasShape || ins[0].Shape[0].Known || ins[0].Shape[0].Param != "N" || ins[0].Shape[1].Value != 4 {
		t.Errorf("inputs %+v (initializer w must be dropped)", ins)
	}
	if len(outs) != 1 || outs[0].Name != "y" || outs[0].ElemType != Int64 || outs[0].HasShape {
		t.Errorf("outputs %+v", outs)
	}
}

// TestParseONNXTestData reads real TensorProto files written by ONNX.
func TestParseONNXTestData(t *testing.T) {
	dir := "/usr/share/libonnx-testdata/data/node/test_abs/test_data_set_0"
	if _, err := os.Stat(dir); err != nil {
		t.Skip("libonnx-testdata not installed (run make setup); the backend conformance test requires it")
	}
	in, err := os.ReadFile(filepath.Join(dir, "input_0.pb"))
	if err != nil {
		t.Fatal(err)
	}
	out, _ := os.ReadFile(filepath.Join(dir, "output_0.pb"))
	x, err := ParseTensor(in)
	if err != nil {
		t.Fatal(err)
	}
	y, err := ParseTensor(out)
	if err != nil {
		t.Fatal(err)
	}
	if x.DataType != Float || x.NumElements() != 60 || len(x.Raw) != 240 {
		t.Fatalf("input %s %d %v", x.Name, x.DataType, x.Dims)
	}
	for i := 0; i < len(x.Raw); i += 4 {
		a := math.Float32frombits(binary.LittleEndian.Uint32(x.Raw[i:]))
		b := math.Float32frombits(binary.LittleEndian.Uint32(y.Raw[i:]))
		if float32(math.Abs(float64(a))) != b {
			t.Fatalf("abs(%v) = %v in the expected output", a, b)
		}
	}
}

func le32(v ...float32) []byte {
	var b []byte
	for _, f := range v {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(f))
	}
	return b
}
