package fallback

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/oip"
)

// StaticTensor is one output tensor of a static answer, as the desired state
// holds it (spec.fallback.static.outputs[]): NewStatic validates and builds
// it.
type StaticTensor = api.StaticTensor

// Static is a validated static answer, ready to serve.
type Static struct {
	outputs []oip.Tensor
}

// NewStatic validates the spec and builds the tensors once. Errors name the
// output (outputs[i] "name") and the problem.
func NewStatic(spec []StaticTensor) (*Static, error) {
	if len(spec) == 0 {
		return nil, fmt.Errorf("static: at least one output is required")
	}
	seen := map[string]bool{}
	s := &Static{outputs: make([]oip.Tensor, len(spec))}
	for i, st := range spec {
		t, err := buildStatic(st)
		if err != nil {
			return nil, fmt.Errorf("static.outputs[%d] %q: %w", i, st.Name, err)
		}
		if seen[st.Name] {
			return nil, fmt.Errorf("static.outputs[%d] %q: duplicate output name", i, st.Name)
		}
		seen[st.Name] = true
		s.outputs[i] = t
	}
	return s, nil
}

// Outputs are the static tensors (shared; do not modify).
func (s *Static) Outputs() []oip.Tensor { return s.outputs }

// Response is the static answer for a request of rows rows (its batch
// dimension; rows < 0: unknown). The batch dimension follows the request:
// an output configured with one row ([1, ...]) is that row repeated once
// per request row; an output configured with exactly rows rows is served
// as it is; so is every output when rows is unknown, and a rank-0 or
// rank-1 output (no batch dimension). Anything else cannot be made to fit
// and is an error naming the output and both sizes — never an answer of
// the wrong shape. Unrepeated tensors' bytes are shared between responses
// and must not be modified.
func (s *Static) Response(model, id string, rows int64) (*oip.InferResponse, error) {
	out := &oip.InferResponse{ModelName: model, ID: id, Outputs: make([]oip.Tensor, len(s.outputs))}
	for i, t := range s.outputs {
		if rows < 0 || len(t.Shape) < 2 || t.Shape[0] == rows {
			out.Outputs[i] = t
			continue
		}
		if t.Shape[0] != 1 {
			return nil, fmt.Errorf("static output %q has %d rows; the request has %d (configure one row to have it repeated per request row)", t.Name, t.Shape[0], rows)
		}
		if rows > 0 && int64(len(t.Raw)) > maxStaticBytes/rows {
			return nil, fmt.Errorf("static output %q repeated for %d rows would exceed %d bytes", t.Name, rows, maxStaticBytes)
		}
		r := t
		r.Shape = append([]int64{rows}, t.Shape[1:]...)
		// One row's bytes repeated (BYTES elements are length-prefixed,
		// so their row repeats the same way).
		r.Raw = bytes.Repeat(t.Raw, int(rows))
		out.Outputs[i] = r
	}
	return out, nil
}

// maxStaticBytes bounds one repeated static output.
const maxStaticBytes = 64 << 20

func buildStatic(st StaticTensor) (oip.Tensor, error) {
	if st.Name == "" {
		return oip.Tensor{}, fmt.Errorf("name is required")
	}
	dt, err := oip.ParseDatatype(st.Datatype)
	if err != nil {
		return oip.Tensor{}, err
	}
	n, err := oip.NumElements(st.Shape)
	if err != nil {
		return oip.Tensor{}, err
	}
	t := oip.Tensor{Name: st.Name, Datatype: dt, Shape: append([]int64(nil), st.Shape...)}
	if dt == oip.BYTES {
		if len(st.Data) > 0 {
			return oip.Tensor{}, fmt.Errorf("BYTES output takes strings, not data")
		}
		if int64(len(st.Strings)) != n {
			return oip.Tensor{}, fmt.Errorf("shape %v needs %d strings, got %d", st.Shape, n, len(st.Strings))
		}
		raw := []byte{}
		for _, v := range st.Strings {
			raw = oip.AppendBytesElement(raw, []byte(v))
		}
		t.Raw = raw
		return t, t.Validate()
	}
	if len(st.Strings) > 0 {
		return oip.Tensor{}, fmt.Errorf("%s output takes data, not strings", dt)
	}
	if int64(len(st.Data)) != n {
		return oip.Tensor{}, fmt.Errorf("shape %v needs %d values, got %d", st.Shape, n, len(st.Data))
	}
	raw := make([]byte, 0, int(n)*dt.Size())
	for j, v := range st.Data {
		raw, err = appendStatic(raw, dt, v)
		if err != nil {
			return oip.Tensor{}, fmt.Errorf("data[%d]: %w", j, err)
		}
	}
	t.Raw = raw
	return t, t.Validate()
}

func appendStatic(raw []byte, dt oip.Datatype, v float64) ([]byte, error) {
	le := binary.LittleEndian
	switch dt {
	case oip.FP32:
		if math.Abs(v) > math.MaxFloat32 && !math.IsInf(v, 0) {
			return nil, fmt.Errorf("%g overflows FP32", v)
		}
		return le.AppendUint32(raw, math.Float32bits(float32(v))), nil
	case oip.FP64:
		return le.AppendUint64(raw, math.Float64bits(v)), nil
	case oip.FP16:
		if math.Abs(v) > 65504 && !math.IsInf(v, 0) {
			return nil, fmt.Errorf("%g overflows FP16", v)
		}
		return le.AppendUint16(raw, oip.Float32ToHalf(float32(v))), nil
	case oip.BOOL:
		if v != 0 && v != 1 {
			return nil, fmt.Errorf("BOOL value must be 0 or 1, got %g", v)
		}
		return append(raw, byte(v)), nil
	}
	if v != math.Trunc(v) || math.IsInf(v, 0) || math.IsNaN(v) {
		return nil, fmt.Errorf("%s value must be a whole number, got %g", dt, v)
	}
	lo, hi := intRange(dt)
	if v < lo || v > hi {
		return nil, fmt.Errorf("%g is out of range for %s", v, dt)
	}
	switch dt {
	case oip.UINT8:
		return append(raw, uint8(v)), nil
	case oip.INT8:
		return append(raw, uint8(int8(v))), nil
	case oip.UINT16:
		return le.AppendUint16(raw, uint16(v)), nil
	case oip.INT16:
		return le.AppendUint16(raw, uint16(int16(v))), nil
	case oip.UINT32:
		return le.AppendUint32(raw, uint32(v)), nil
	case oip.INT32:
		return le.AppendUint32(raw, uint32(int32(v))), nil
	case oip.UINT64:
		return le.AppendUint64(raw, uint64(v)), nil
	case oip.INT64:
		return le.AppendUint64(raw, uint64(int64(v))), nil
	}
	return nil, fmt.Errorf("unsupported datatype %s", dt)
}

// intRange is the range of an integer datatype that a float64 can state
// exactly (64-bit types are capped at ±2^53).
func intRange(dt oip.Datatype) (lo, hi float64) {
	const exact = 1 << 53
	switch dt {
	case oip.UINT8:
		return 0, math.MaxUint8
	case oip.INT8:
		return math.MinInt8, math.MaxInt8
	case oip.UINT16:
		return 0, math.MaxUint16
	case oip.INT16:
		return math.MinInt16, math.MaxInt16
	case oip.UINT32:
		return 0, math.MaxUint32
	case oip.INT32:
		return math.MinInt32, math.MaxInt32
	case oip.UINT64:
		return 0, exact
	case oip.INT64:
		return -exact, exact
	}
	return 0, 0
}
