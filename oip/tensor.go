package oip

import (
	"encoding/binary"
	"fmt"
	"maps"
	"math"
	"slices"
	"unsafe"
)

// Tensor is one named input or output tensor in canonical form: Raw holds the
// elements row-major and little-endian (BYTES: each element as a 4-byte
// little-endian length and then its bytes).
type Tensor struct {
	Name       string
	Datatype   Datatype
	Shape      []int64
	Parameters map[string]any
	Raw        []byte
}

// RequestedOutput names an output the client asks for.
type RequestedOutput struct {
	Name       string
	Parameters map[string]any
}

// InferRequest is an inference request, whatever transport carried it.
type InferRequest struct {
	ModelName    string
	ModelVersion string
	ID           string
	Parameters   map[string]any
	Inputs       []Tensor
	Outputs      []RequestedOutput
}

// InferResponse is an inference response, whatever transport carries it.
type InferResponse struct {
	ModelName    string
	ModelVersion string
	ID           string
	Parameters   map[string]any
	Outputs      []Tensor
}

// MaxElements bounds the element count of one tensor (2^31), so a hostile
// shape cannot overflow size arithmetic.
const MaxElements = 1 << 31

// NumElements is the product of shape, or an error naming the problem when a
// dimension is negative or the product exceeds MaxElements. A rank-0 shape
// (scalar) has one element.
func NumElements(shape []int64) (int64, error) {
	n := int64(1)
	for i, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("shape[%d] is %d; dimensions must be >= 0", i, d)
		}
		if d != 0 && n > MaxElements/d {
			return 0, fmt.Errorf("shape %v has more than %d elements", shape, int64(MaxElements))
		}
		n *= d
	}
	return n, nil
}

// NumElements is the element count of the tensor's shape (0 if invalid).
func (t *Tensor) NumElements() int64 {
	n, _ := NumElements(t.Shape)
	return n
}

// Validate checks that the datatype is known and that Raw holds exactly the
// number of elements the shape says. Errors are InvalidArgument and name the
// tensor.
func (t *Tensor) Validate() error {
	if !t.Datatype.Valid() {
		return Errorf(InvalidArgument, "tensor %q: unknown datatype %q", t.Name, t.Datatype)
	}
	n, err := NumElements(t.Shape)
	if err != nil {
		return Errorf(InvalidArgument, "tensor %q: %v", t.Name, err)
	}
	if t.Datatype == BYTES {
		got, err := countBytesElements(t.Raw)
		if err != nil {
			return Errorf(InvalidArgument, "tensor %q: %v", t.Name, err)
		}
		if got != n {
			return Errorf(InvalidArgument, "tensor %q: shape %v needs %d elements, data has %d", t.Name, t.Shape, n, got)
		}
		return nil
	}
	if want := n * int64(t.Datatype.Size()); int64(len(t.Raw)) != want {
		return Errorf(InvalidArgument, "tensor %q: shape %v of %s needs %d bytes (%d elements), data has %d bytes",
			t.Name, t.Shape, t.Datatype, want, n, len(t.Raw))
	}
	return nil
}

func countBytesElements(raw []byte) (int64, error) {
	var n int64
	for off := 0; off < len(raw); n++ {
		if len(raw)-off < 4 {
			return 0, fmt.Errorf("BYTES data truncated at element %d (length prefix needs 4 bytes)", n)
		}
		l := int(binary.LittleEndian.Uint32(raw[off:]))
		off += 4
		if l > len(raw)-off {
			return 0, fmt.Errorf("BYTES element %d declares %d bytes, %d remain", n, l, len(raw)-off)
		}
		off += l
	}
	return n, nil
}

// BytesElements splits a BYTES tensor's Raw into its elements (sub-slices of
// Raw, not copies).
func (t *Tensor) BytesElements() ([][]byte, error) {
	var out [][]byte
	raw := t.Raw
	for off := 0; off < len(raw); {
		if len(raw)-off < 4 {
			return nil, fmt.Errorf("tensor %q: BYTES data truncated", t.Name)
		}
		l := int(binary.LittleEndian.Uint32(raw[off:]))
		off += 4
		if l > len(raw)-off {
			return nil, fmt.Errorf("tensor %q: BYTES element declares %d bytes, %d remain", t.Name, l, len(raw)-off)
		}
		out = append(out, raw[off:off+l])
		off += l
	}
	return out, nil
}

// AppendBytesElement appends one BYTES element (length prefix + data) to raw.
func AppendBytesElement(raw, elem []byte) []byte {
	raw = binary.LittleEndian.AppendUint32(raw, uint32(len(elem)))
	return append(raw, elem...)
}

// NewBytesTensor builds a BYTES tensor from its elements.
func NewBytesTensor(name string, shape []int64, elems [][]byte) Tensor {
	var raw []byte
	for _, e := range elems {
		raw = AppendBytesElement(raw, e)
	}
	return Tensor{Name: name, Datatype: BYTES, Shape: shape, Raw: raw}
}

// Number is the set of Go element types with a fixed-width OIP datatype.
type Number interface {
	~bool | ~uint8 | ~uint16 | ~uint32 | ~uint64 | ~int8 | ~int16 | ~int32 | ~int64 | ~float32 | ~float64
}

// NewTensor builds a tensor from a Go slice, copying the data. The datatype
// follows T (uint16 maps to UINT16; use NewFP16Tensor for half floats).
func NewTensor[T Number](name string, shape []int64, data []T) Tensor {
	var zero T
	return Tensor{Name: name, Datatype: datatypeOf(zero), Shape: shape, Raw: append([]byte(nil), asBytes(data)...)}
}

func datatypeOf(v any) Datatype {
	switch v.(type) {
	case bool:
		return BOOL
	case uint8:
		return UINT8
	case uint16:
		return UINT16
	case uint32:
		return UINT32
	case uint64:
		return UINT64
	case int8:
		return INT8
	case int16:
		return INT16
	case int32:
		return INT32
	case int64:
		return INT64
	case float32:
		return FP32
	case float64:
		return FP64
	}
	return ""
}

// asBytes views a slice of fixed-width numbers as little-endian bytes. Every
// platform Switchyard builds for (amd64, arm64) is little-endian.
func asBytes[T Number](data []T) []byte {
	if len(data) == 0 {
		return nil
	}
	var zero T
	return unsafe.Slice((*byte)(unsafe.Pointer(&data[0])), len(data)*int(unsafe.Sizeof(zero)))
}

// View reinterprets raw little-endian bytes as a slice of T without copying.
// len(raw) must be a multiple of T's size; the bytes must stay alive and
// unmodified while the view is used. Use Values for an aligned copy.
func View[T Number](raw []byte) []T {
	var zero T
	sz := int(unsafe.Sizeof(zero))
	if len(raw) < sz {
		return nil
	}
	p := unsafe.Pointer(&raw[0])
	if uintptr(p)%uintptr(unsafe.Alignof(zero)) != 0 {
		return Values[T](raw)
	}
	return unsafe.Slice((*T)(p), len(raw)/sz)
}

// Values copies raw little-endian bytes into a new slice of T.
func Values[T Number](raw []byte) []T {
	var zero T
	sz := int(unsafe.Sizeof(zero))
	out := make([]T, len(raw)/sz)
	if len(out) > 0 {
		copy(asBytes(out), raw)
	}
	return out
}

// Float64s converts any numeric tensor's elements to float64 (FP16 decoded),
// for comparison and diffing. BYTES returns an error.
func (t *Tensor) Float64s() ([]float64, error) {
	return t.AppendFloat64s(nil)
}

// AppendFloat64s is Float64s appending to dst (no allocation when dst has
// the room): hot comparison loops reuse one buffer.
func (t *Tensor) AppendFloat64s(dst []float64) ([]float64, error) {
	dst = slices.Grow(dst, t.elementsBySize())
	switch t.Datatype {
	case BOOL, UINT8:
		return appendConv(dst, View[uint8](t.Raw)), nil
	case INT8:
		return appendConv(dst, View[int8](t.Raw)), nil
	case UINT16:
		return appendConv(dst, View[uint16](t.Raw)), nil
	case INT16:
		return appendConv(dst, View[int16](t.Raw)), nil
	case UINT32:
		return appendConv(dst, View[uint32](t.Raw)), nil
	case INT32:
		return appendConv(dst, View[int32](t.Raw)), nil
	case UINT64:
		return appendConv(dst, View[uint64](t.Raw)), nil
	case INT64:
		return appendConv(dst, View[int64](t.Raw)), nil
	case FP32:
		return appendConv(dst, View[float32](t.Raw)), nil
	case FP64:
		return append(dst, View[float64](t.Raw)...), nil
	case FP16:
		for i := 0; i+2 <= len(t.Raw); i += 2 {
			dst = append(dst, float64(HalfToFloat32(binary.LittleEndian.Uint16(t.Raw[i:]))))
		}
		return dst, nil
	}
	return dst, fmt.Errorf("tensor %q: %s is not numeric", t.Name, t.Datatype)
}

// elementsBySize is len(Raw) / the element size (0 for BYTES).
func (t *Tensor) elementsBySize() int {
	if sz := t.Datatype.Size(); sz > 0 {
		return len(t.Raw) / sz
	}
	return 0
}

func appendConv[T uint8 | int8 | uint16 | int16 | uint32 | int32 | uint64 | int64 | float32](dst []float64, in []T) []float64 {
	for _, v := range in {
		dst = append(dst, float64(v))
	}
	return dst
}

// HasNaNOrInf reports whether a floating-point tensor holds NaN or ±Inf.
// Other datatypes never do.
func (t *Tensor) HasNaNOrInf() bool {
	switch t.Datatype {
	case FP32:
		for i := 0; i+4 <= len(t.Raw); i += 4 {
			// exponent bits all ones <=> NaN or Inf
			if binary.LittleEndian.Uint32(t.Raw[i:])&0x7f800000 == 0x7f800000 {
				return true
			}
		}
	case FP64:
		for i := 0; i+8 <= len(t.Raw); i += 8 {
			if binary.LittleEndian.Uint64(t.Raw[i:])&0x7ff0000000000000 == 0x7ff0000000000000 {
				return true
			}
		}
	case FP16:
		for i := 0; i+2 <= len(t.Raw); i += 2 {
			if binary.LittleEndian.Uint16(t.Raw[i:])&0x7c00 == 0x7c00 {
				return true
			}
		}
	}
	return false
}

// HalfToFloat32 decodes an IEEE 754 half-precision value.
func HalfToFloat32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	frac := uint32(h) & 0x3ff
	switch {
	case exp == 0 && frac == 0:
		return math.Float32frombits(sign)
	case exp == 0: // subnormal: normalise
		e := uint32(127 - 15 + 1)
		for frac&0x400 == 0 {
			frac <<= 1
			e--
		}
		frac &= 0x3ff
		return math.Float32frombits(sign | e<<23 | frac<<13)
	case exp == 0x1f:
		return math.Float32frombits(sign | 0xff<<23 | frac<<13)
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | frac<<13)
}

// Float32ToHalf encodes f as IEEE 754 half precision, rounding to nearest even.
func Float32ToHalf(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int32(b>>23) & 0xff
	frac := b & 0x7fffff
	if exp == 0xff {
		if frac != 0 {
			return sign | 0x7e00
		}
		return sign | 0x7c00
	}
	e := exp - 127 + 15
	if e >= 0x1f {
		return sign | 0x7c00
	}
	if e <= 0 {
		if e < -10 {
			return sign
		}
		frac |= 0x800000
		shift := uint32(14 - e)
		half := frac >> shift
		rem := frac & (1<<shift - 1)
		mid := uint32(1) << (shift - 1)
		if rem > mid || (rem == mid && half&1 == 1) {
			half++
		}
		return sign | uint16(half)
	}
	half := uint32(e)<<10 | frac>>13
	rem := frac & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && half&1 == 1) {
		half++
	}
	return sign | uint16(half)
}

// WithBinaryOutput returns a shallow copy of r that asks for every output as
// binary tensor data (request parameter binary_data_output); r, its
// parameters and tensors are not modified (the copy shares the tensors).
func (r *InferRequest) WithBinaryOutput() *InferRequest {
	c := *r
	c.Parameters = make(map[string]any, len(r.Parameters)+1)
	maps.Copy(c.Parameters, r.Parameters)
	c.Parameters[ParamBinaryDataOutput] = true
	return &c
}

// AnyNaNOrInf reports whether any floating-point tensor of ts holds NaN or
// ±Inf.
func AnyNaNOrInf(ts []Tensor) bool {
	for i := range ts {
		if ts[i].HasNaNOrInf() {
			return true
		}
	}
	return false
}

// BatchRows is the batch dimension that the tensors of ts agree on: the
// first dimension shared by every tensor of rank minRank or more (tensors
// of lower rank carry no batch dimension and are passed over). It is -1
// when no tensor has one, or when they disagree. A request's rows are
// BatchRows(inputs, 1); an answer's, BatchRows(outputs, 2).
func BatchRows(ts []Tensor, minRank int) int64 {
	return BatchRowsOf(len(ts), func(i int) []int64 { return ts[i].Shape }, minRank)
}

// BatchRowsOf is BatchRows over n shapes (shape(i) for i < n), for tensors
// in another form (a gRPC message's inputs).
func BatchRowsOf(n int, shape func(i int) []int64, minRank int) int64 {
	rows := int64(-1)
	for i := range n {
		sh := shape(i)
		if len(sh) < max(minRank, 1) {
			continue
		}
		switch r := sh[0]; {
		case rows < 0:
			rows = r
		case r != rows:
			return -1
		}
	}
	return rows
}
