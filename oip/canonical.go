package oip

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"sort"
)

// AppendCanonical appends the canonical form of req to dst. Two requests with
// the same canonical form ask the same question:
//
//   - inputs sorted by name; each as name, datatype, shape, raw bytes (the
//     canonical little-endian form, so JSON vs binary vs gRPC encodings of
//     the same numbers agree), and its parameters except binary_data_size;
//   - requested outputs sorted by name, with their parameters;
//   - request parameters sorted by name, except those ignore names.
//
// The request id and model name/version are not part of it. Parameter
// values are typed: strings, booleans, numbers (a whole number is the same
// whether it came as 3, 3.0 or an int64 parameter) and, for anything else,
// its JSON encoding with sorted keys. Every field is length-prefixed, so no
// two different requests share a form. Duplicate input names are an error.
func AppendCanonical(dst []byte, req *InferRequest, ignore func(string) bool) ([]byte, error) {
	var idxBuf [16]int
	idx := canonOrder(idxBuf[:0], len(req.Inputs), func(i int) string { return req.Inputs[i].Name })
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(idx)))
	for j, i := range idx {
		t := &req.Inputs[i]
		if j > 0 && req.Inputs[idx[j-1]].Name == t.Name {
			return dst, Errorf(InvalidArgument, "input %q appears twice", t.Name)
		}
		dst = canonString(dst, t.Name)
		dst = canonString(dst, string(t.Datatype))
		dst = binary.LittleEndian.AppendUint32(dst, uint32(len(t.Shape)))
		for _, d := range t.Shape {
			dst = binary.LittleEndian.AppendUint64(dst, uint64(d))
		}
		dst = binary.LittleEndian.AppendUint64(dst, uint64(len(t.Raw)))
		dst = append(dst, t.Raw...)
		dst = canonParams(dst, t.Parameters, func(k string) bool { return k == "binary_data_size" })
	}
	idx = canonOrder(idx[:0], len(req.Outputs), func(i int) string { return req.Outputs[i].Name })
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(idx)))
	for _, i := range idx {
		dst = canonString(dst, req.Outputs[i].Name)
		dst = canonParams(dst, req.Outputs[i].Parameters, nil)
	}
	return canonParams(dst, req.Parameters, ignore), nil
}

// canonOrder fills idx with 0..n-1 ordered by name (insertion sort: n is
// small, and it does not allocate for n <= cap(idx)).
func canonOrder(idx []int, n int, name func(int) string) []int {
	for i := 0; i < n; i++ {
		idx = append(idx, i)
		for j := len(idx) - 1; j > 0 && name(idx[j]) < name(idx[j-1]); j-- {
			idx[j], idx[j-1] = idx[j-1], idx[j]
		}
	}
	return idx
}

func canonString(dst []byte, s string) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(s)))
	return append(dst, s...)
}

func canonParams(dst []byte, p map[string]any, ignore func(string) bool) []byte {
	if len(p) == 0 {
		return binary.LittleEndian.AppendUint32(dst, 0)
	}
	keys := make([]string, 0, len(p))
	for k := range p {
		if ignore == nil || !ignore(k) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(keys)))
	for _, k := range keys {
		dst = canonString(dst, k)
		dst = canonValue(dst, p[k])
	}
	return dst
}

func canonValue(dst []byte, v any) []byte {
	switch x := v.(type) {
	case string:
		return canonString(append(dst, 's'), x)
	case bool:
		if x {
			return append(dst, 'b', 1)
		}
		return append(dst, 'b', 0)
	case float64:
		return canonNumber(dst, x)
	case float32:
		return canonNumber(dst, float64(x))
	case int:
		return canonInt(dst, int64(x))
	case int32:
		return canonInt(dst, int64(x))
	case int64:
		return canonInt(dst, x)
	case uint32:
		return canonInt(dst, int64(x))
	case uint64:
		if x <= math.MaxInt64 {
			return canonInt(dst, int64(x))
		}
		return binary.LittleEndian.AppendUint64(append(dst, 'u'), x)
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return canonInt(dst, i)
		}
		if f, err := x.Float64(); err == nil {
			return canonNumber(dst, f)
		}
		return canonString(append(dst, 'n'), string(x))
	case nil:
		return append(dst, '0')
	}
	b, err := json.Marshal(v) // maps: sorted keys
	if err != nil {
		b = []byte(fmt.Sprintf("%#v", v))
	}
	return canonString(append(dst, 'j'), string(b))
}

func canonNumber(dst []byte, f float64) []byte {
	if f == math.Trunc(f) && math.Abs(f) < 1<<63 {
		return canonInt(dst, int64(f))
	}
	return binary.LittleEndian.AppendUint64(append(dst, 'f'), math.Float64bits(f))
}

func canonInt(dst []byte, i int64) []byte {
	return binary.LittleEndian.AppendUint64(append(dst, 'i'), uint64(i))
}
