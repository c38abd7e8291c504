package oip

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"strconv"
	"unicode/utf8"
)

// AppendInferResponse appends the REST (JSON) form of resp to dst. Outputs
// the request asked to receive binary (request parameter binary_data_output,
// or binary_data on a requested output; req may be nil) are appended after
// the JSON as binary tensor data; headerLen is then the length of the JSON
// header (set Inference-Header-Content-Length to it); with no binary
// outputs headerLen is len(out)-len(dst). Float data that JSON cannot carry
// (NaN, ±Inf) is an Internal *Error naming the output, unless that output
// travels binary.
func AppendInferResponse(dst []byte, resp *InferResponse, req *InferRequest) (out []byte, headerLen int, err error) {
	start := len(dst)
	b := append(dst, `{"model_name":`...)
	b = appendJSONString(b, resp.ModelName)
	if resp.ModelVersion != "" {
		b = append(b, `,"model_version":`...)
		b = appendJSONString(b, resp.ModelVersion)
	}
	if resp.ID != "" {
		b = append(b, `,"id":`...)
		b = appendJSONString(b, resp.ID)
	}
	if len(resp.Parameters) > 0 {
		b = append(b, `,"parameters":`...)
		b = appendParams(b, resp.Parameters, -1)
	}
	b = append(b, `,"outputs":[`...)
	anyBinary := false
	for i := range resp.Outputs {
		if i > 0 {
			b = append(b, ',')
		}
		t := &resp.Outputs[i]
		bin := WantsBinaryOutput(req, t.Name)
		anyBinary = anyBinary || bin
		b, err = appendTensor(b, t, bin)
		if err != nil {
			return dst, 0, Errorf(Internal, "outputs[%d] (%q): %v", i, t.Name, err)
		}
	}
	b = append(b, "]}"...)
	headerLen = len(b) - start
	if anyBinary {
		for i := range resp.Outputs {
			if WantsBinaryOutput(req, resp.Outputs[i].Name) {
				b = append(b, resp.Outputs[i].Raw...)
			}
		}
	}
	return b, headerLen, nil
}

// AppendInferRequest appends the REST (JSON) form of req to dst (model name
// and version belong in the URL and are not written). With binary set, every
// input's data follows the JSON as binary tensor data and headerLen is the
// JSON header's length; otherwise headerLen is len(out)-len(dst).
func AppendInferRequest(dst []byte, req *InferRequest, binary bool) (out []byte, headerLen int, err error) {
	start := len(dst)
	b := append(dst, '{')
	if req.ID != "" {
		b = append(b, `"id":`...)
		b = appendJSONString(b, req.ID)
		b = append(b, ',')
	}
	if len(req.Parameters) > 0 {
		b = append(b, `"parameters":`...)
		b = appendParams(b, req.Parameters, -1)
		b = append(b, ',')
	}
	b = append(b, `"inputs":[`...)
	for i := range req.Inputs {
		if i > 0 {
			b = append(b, ',')
		}
		b, err = appendTensor(b, &req.Inputs[i], binary)
		if err != nil {
			return dst, 0, Errorf(InvalidArgument, "inputs[%d] (%q): %v", i, req.Inputs[i].Name, err)
		}
	}
	b = append(b, ']')
	if len(req.Outputs) > 0 {
		b = append(b, `,"outputs":[`...)
		for i, o := range req.Outputs {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"name":`...)
			b = appendJSONString(b, o.Name)
			if len(o.Parameters) > 0 {
				b = append(b, `,"parameters":`...)
				b = appendParams(b, o.Parameters, -1)
			}
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	b = append(b, '}')
	headerLen = len(b) - start
	if binary {
		for i := range req.Inputs {
			b = append(b, req.Inputs[i].Raw...)
		}
	}
	return b, headerLen, nil
}

// WantsBinaryOutput reports whether req asks for output name in binary form
// (binary tensor data extension). A nil req wants JSON.
func WantsBinaryOutput(req *InferRequest, name string) bool {
	if req == nil {
		return false
	}
	for i := range req.Outputs {
		if req.Outputs[i].Name == name {
			if v, ok := req.Outputs[i].Parameters[ParamBinaryData].(bool); ok {
				return v
			}
			break
		}
	}
	v, _ := req.Parameters[ParamBinaryDataOutput].(bool)
	return v
}

// appendTensor writes one tensor object; with bin its data is announced by
// binary_data_size instead of written.
func appendTensor(b []byte, t *Tensor, bin bool) ([]byte, error) {
	if err := t.Validate(); err != nil {
		return b, err
	}
	b = append(b, `{"name":`...)
	b = appendJSONString(b, t.Name)
	b = append(b, `,"datatype":"`...)
	b = append(b, t.Datatype...)
	b = append(b, `","shape":[`...)
	for i, d := range t.Shape {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, d, 10)
	}
	b = append(b, ']')
	if bin || len(t.Parameters) > 0 {
		size := dropBinarySize // JSON data: a binary_data_size from another form is stale
		if bin {
			size = len(t.Raw)
		}
		b = append(b, `,"parameters":`...)
		b = appendParams(b, t.Parameters, size)
	}
	if bin {
		return append(b, '}'), nil
	}
	b = append(b, `,"data":[`...)
	b, err := appendData(b, t)
	if err != nil {
		return b, err
	}
	return append(b, "]}"...), nil
}

// appendData writes the elements of t (already validated) as a flat list.
func appendData(b []byte, t *Tensor) ([]byte, error) {
	raw := t.Raw
	switch t.Datatype {
	case FP32:
		for i := 0; i+4 <= len(raw); i += 4 {
			if i > 0 {
				b = append(b, ',')
			}
			f := math.Float32frombits(binary.LittleEndian.Uint32(raw[i:]))
			if f != f || f > math.MaxFloat32 || f < -math.MaxFloat32 {
				return b, nonFinite(i / 4)
			}
			b = strconv.AppendFloat(b, float64(f), 'g', -1, 32)
		}
	case FP64:
		for i := 0; i+8 <= len(raw); i += 8 {
			if i > 0 {
				b = append(b, ',')
			}
			f := math.Float64frombits(binary.LittleEndian.Uint64(raw[i:]))
			if math.IsNaN(f) || math.IsInf(f, 0) {
				return b, nonFinite(i / 8)
			}
			b = strconv.AppendFloat(b, f, 'g', -1, 64)
		}
	case FP16:
		for i := 0; i+2 <= len(raw); i += 2 {
			if i > 0 {
				b = append(b, ',')
			}
			h := binary.LittleEndian.Uint16(raw[i:])
			if h&0x7c00 == 0x7c00 {
				return b, nonFinite(i / 2)
			}
			b = strconv.AppendFloat(b, float64(HalfToFloat32(h)), 'g', -1, 32)
		}
	case BOOL:
		for i, v := range raw {
			if i > 0 {
				b = append(b, ',')
			}
			if v != 0 {
				b = append(b, "true"...)
			} else {
				b = append(b, "false"...)
			}
		}
	case UINT8:
		for i, v := range raw {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendUint(b, uint64(v), 10)
		}
	case INT8:
		for i, v := range raw {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendInt(b, int64(int8(v)), 10)
		}
	case UINT16:
		for i := 0; i+2 <= len(raw); i += 2 {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendUint(b, uint64(binary.LittleEndian.Uint16(raw[i:])), 10)
		}
	case INT16:
		for i := 0; i+2 <= len(raw); i += 2 {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendInt(b, int64(int16(binary.LittleEndian.Uint16(raw[i:]))), 10)
		}
	case UINT32:
		for i := 0; i+4 <= len(raw); i += 4 {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendUint(b, uint64(binary.LittleEndian.Uint32(raw[i:])), 10)
		}
	case INT32:
		for i := 0; i+4 <= len(raw); i += 4 {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendInt(b, int64(int32(binary.LittleEndian.Uint32(raw[i:]))), 10)
		}
	case UINT64:
		for i := 0; i+8 <= len(raw); i += 8 {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendUint(b, binary.LittleEndian.Uint64(raw[i:]), 10)
		}
	case INT64:
		for i := 0; i+8 <= len(raw); i += 8 {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendInt(b, int64(binary.LittleEndian.Uint64(raw[i:])), 10)
		}
	case BYTES:
		for off, n := 0, 0; off < len(raw); n++ {
			if n > 0 {
				b = append(b, ',')
			}
			l := int(binary.LittleEndian.Uint32(raw[off:]))
			off += 4
			b = appendJSONBytes(b, raw[off:off+l])
			off += l
		}
	}
	return b, nil
}

func nonFinite(i int) error {
	return Errorf(Internal, "element %d is NaN or infinite, which JSON cannot carry (ask for binary_data or use gRPC)", i)
}

// appendParams writes a parameters object with sorted keys (deterministic
// output). binarySize >= 0 adds binary_data_size.
// dropBinarySize is appendParams's binarySize for a tensor sent as JSON
// data: a binary_data_size parameter is left out (it would contradict the
// data), none written.
const dropBinarySize = -2

// appendParams writes m as a JSON object; binarySize >= 0 writes
// binary_data_size with that value instead of m's, dropBinarySize leaves
// it out, -1 writes m as it is.
func appendParams(b []byte, m map[string]any, binarySize int) []byte {
	keys := make([]string, 0, len(m)+1)
	for k := range m {
		if k == ParamBinaryDataSize && binarySize != -1 {
			continue
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b = append(b, '{')
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, k)
		b = append(b, ':')
		b = appendParamValue(b, m[k])
	}
	if binarySize >= 0 {
		if len(keys) > 0 {
			b = append(b, ',')
		}
		b = append(b, `"`+ParamBinaryDataSize+`":`...)
		b = strconv.AppendInt(b, int64(binarySize), 10)
	}
	return append(b, '}')
}

func appendParamValue(b []byte, v any) []byte {
	switch x := v.(type) {
	case bool:
		return strconv.AppendBool(b, x)
	case string:
		return appendJSONString(b, x)
	case int:
		return strconv.AppendInt(b, int64(x), 10)
	case int32:
		return strconv.AppendInt(b, int64(x), 10)
	case int64:
		return strconv.AppendInt(b, x, 10)
	case uint:
		return strconv.AppendUint(b, uint64(x), 10)
	case uint32:
		return strconv.AppendUint(b, uint64(x), 10)
	case uint64:
		return strconv.AppendUint(b, x, 10)
	case float32:
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return append(b, "null"...)
		}
		return strconv.AppendFloat(b, float64(x), 'g', -1, 32)
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return append(b, "null"...)
		}
		return strconv.AppendFloat(b, x, 'g', -1, 64)
	}
	return appendJSONString(b, toString(v))
}

func toString(v any) string { return fmt.Sprint(v) }

const hexDigits = "0123456789abcdef"

// appendJSONString writes s as a JSON string.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			b = append(b, s[start:i]...)
			b = appendEscape(b, c)
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// appendJSONBytes writes p as a JSON string (invalid UTF-8 becomes U+FFFD;
// use binary data for arbitrary bytes).
func appendJSONBytes(b []byte, p []byte) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(p); {
		c := p[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			b = append(b, p[start:i]...)
			b = appendEscape(b, c)
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRune(p[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, p[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	b = append(b, p[start:]...)
	return append(b, '"')
}

func appendEscape(b []byte, c byte) []byte {
	switch c {
	case '"', '\\':
		return append(b, '\\', c)
	case '\n':
		return append(b, '\\', 'n')
	case '\r':
		return append(b, '\\', 'r')
	case '\t':
		return append(b, '\\', 't')
	}
	return append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
}
