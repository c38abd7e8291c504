package oip

import (
	"math"
	"slices"
	"strings"
	"testing"
)

// TestFloat64s: every numeric datatype reads back as float64 (FP16
// decoded), BYTES is refused naming the tensor, and AppendFloat64s reuses
// the buffer it is given.
func TestFloat64s(t *testing.T) {
	want := []float64{0, 1, 2, 3}
	cases := map[string]Tensor{
		"BOOL":   {Name: "b", Datatype: BOOL, Shape: []int64{4}, Raw: []byte{0, 1, 2, 3}},
		"UINT8":  NewTensor("x", []int64{4}, []uint8{0, 1, 2, 3}),
		"INT8":   NewTensor("x", []int64{4}, []int8{0, 1, 2, 3}),
		"UINT16": NewTensor("x", []int64{4}, []uint16{0, 1, 2, 3}),
		"INT16":  NewTensor("x", []int64{4}, []int16{0, 1, 2, 3}),
		"UINT32": NewTensor("x", []int64{4}, []uint32{0, 1, 2, 3}),
		"INT32":  NewTensor("x", []int64{4}, []int32{0, 1, 2, 3}),
		"UINT64": NewTensor("x", []int64{4}, []uint64{0, 1, 2, 3}),
		"INT64":  NewTensor("x", []int64{2, 2}, []int64{0, 1, 2, 3}),
		"FP32":   NewTensor("x", []int64{4}, []float32{0, 1, 2, 3}),
		"FP64":   NewTensor("x", []int64{4}, []float64{0, 1, 2, 3}),
		"FP16":   {Name: "h", Datatype: FP16, Shape: []int64{4}, Raw: []byte{0, 0, 0, 0x3c, 0, 0x40, 0, 0x42}},
	}
	for name, tn := range cases {
		got, err := tn.Float64s()
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("%s: Float64s = %v, %v; want %v", name, got, err, want)
		}
		buf := make([]float64, 0, 16)
		got, err = tn.AppendFloat64s(buf)
		if err != nil || !slices.Equal(got, want) || &got[0] != &buf[:1][0] {
			t.Errorf("%s: AppendFloat64s did not fill the given buffer: %v, %v", name, got, err)
		}
	}
	// Unaligned raw data (a tensor cut out of a larger buffer) reads the same.
	raw := NewTensor("x", []int64{2}, []float32{1.5, float32(math.Inf(-1))}).Raw
	odd := append([]byte{0}, raw...)[1:]
	if got, _ := (&Tensor{Datatype: FP32, Raw: odd}).Float64s(); got[0] != 1.5 || !math.IsInf(got[1], -1) {
		t.Errorf("unaligned FP32: %v", got)
	}
	s := NewBytesTensor("names", []int64{1}, [][]byte{[]byte("a")})
	if _, err := s.Float64s(); err == nil || !strings.Contains(err.Error(), `"names"`) {
		t.Errorf("BYTES: %v, want an error naming the tensor", err)
	}
}
