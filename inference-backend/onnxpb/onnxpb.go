// Package onnxpb reads and writes the few ONNX protobuf messages Switchyard
// needs, with protowire and no generated ONNX types (so no second copy of the
// ONNX schema is ever registered in a binary): a ModelProto writer for small
// generated graphs (the demo models), a TensorProto reader and writer (test
// data), and a reader for a model's graph inputs and outputs (signatures).
//
// Field numbers follow onnx/onnx.proto3 (IR version 8).
package onnxpb

import (
	"encoding/binary"
	"fmt"
	"math"

	"google.golang.org/protobuf/encoding/protowire"
)

// ONNX TensorProto.DataType values.
const (
	Float   int32 = 1
	Uint8   int32 = 2
	Int8    int32 = 3
	Uint16  int32 = 4
	Int16   int32 = 5
	Int32   int32 = 6
	Int64   int32 = 7
	String  int32 = 8
	Bool    int32 = 9
	Float16 int32 = 10
	Double  int32 = 11
	Uint32  int32 = 12
	Uint64  int32 = 13
)

// ElemSize is the width in bytes of one element of an ONNX data type, or 0
// for strings and types this package does not handle.
func ElemSize(dt int32) int {
	switch dt {
	case Uint8, Int8, Bool:
		return 1
	case Uint16, Int16, Float16:
		return 2
	case Float, Int32, Uint32:
		return 4
	case Int64, Double, Uint64:
		return 8
	}
	return 0
}

// Tensor is a TensorProto in canonical form: Raw holds the elements row-major
// and little-endian; string tensors hold their elements in Strings instead.
type Tensor struct {
	Name     string
	DataType int32
	Dims     []int64
	Raw      []byte
	Strings  [][]byte
}

// Dim is one dimension of a ValueInfo shape: a fixed Value, or a symbolic
// Param, or neither (unknown).
type Dim struct {
	Value int64
	Param string
	Known bool // Value is set
}

// ValueInfo is a graph input or output: a tensor name, element type and
// (when HasShape) its shape.
type ValueInfo struct {
	Name     string
	ElemType int32
	HasShape bool
	Shape    []Dim
}

// Attr is a node attribute. Set exactly one of the value fields; Type is
// derived from which one.
type Attr struct {
	Name   string
	F      *float32
	I      *int64
	S      []byte
	T      *Tensor
	Floats []float32
	Ints   []int64
}

// Node is a graph node.
type Node struct {
	Name    string
	OpType  string
	Domain  string
	Inputs  []string
	Outputs []string
	Attrs   []Attr
}

// Graph is a GraphProto.
type Graph struct {
	Name         string
	Nodes        []Node
	Initializers []Tensor
	Inputs       []ValueInfo
	Outputs      []ValueInfo
}

// Model is a ModelProto with a single default-domain opset.
type Model struct {
	IRVersion       int64
	Opset           int64
	ProducerName    string
	ProducerVersion string
	DocString       string
	Graph           Graph
}

// Marshal encodes the model as ModelProto bytes.
func (m *Model) Marshal() []byte {
	var b []byte
	b = appendVarintField(b, 1, uint64(m.IRVersion))
	if m.ProducerName != "" {
		b = appendStringField(b, 2, m.ProducerName)
	}
	if m.ProducerVersion != "" {
		b = appendStringField(b, 3, m.ProducerVersion)
	}
	if m.DocString != "" {
		b = appendStringField(b, 6, m.DocString)
	}
	b = appendBytesField(b, 7, m.Graph.marshal())
	var opset []byte
	opset = appendStringField(opset, 1, "")
	opset = appendVarintField(opset, 2, uint64(m.Opset))
	b = appendBytesField(b, 8, opset)
	return b
}

func (g *Graph) marshal() []byte {
	var b []byte
	for i := range g.Nodes {
		b = appendBytesField(b, 1, g.Nodes[i].marshal())
	}
	b = appendStringField(b, 2, g.Name)
	for i := range g.Initializers {
		b = appendBytesField(b, 5, g.Initializers[i].Marshal())
	}
	for i := range g.Inputs {
		b = appendBytesField(b, 11, g.Inputs[i].marshal())
	}
	for i := range g.Outputs {
		b = appendBytesField(b, 12, g.Outputs[i].marshal())
	}
	return b
}

func (n *Node) marshal() []byte {
	var b []byte
	for _, in := range n.Inputs {
		b = appendStringField(b, 1, in)
	}
	for _, out := range n.Outputs {
		b = appendStringField(b, 2, out)
	}
	if n.Name != "" {
		b = appendStringField(b, 3, n.Name)
	}
	b = appendStringField(b, 4, n.OpType)
	for i := range n.Attrs {
		b = appendBytesField(b, 5, n.Attrs[i].marshal())
	}
	if n.Domain != "" {
		b = appendStringField(b, 7, n.Domain)
	}
	return b
}

// AttributeProto.AttributeType values.
const (
	attrFloat  = 1
	attrInt    = 2
	attrString = 3
	attrTensor = 4
	attrFloats = 6
	attrInts   = 7
)

func (a *Attr) marshal() []byte {
	var b []byte
	b = appendStringField(b, 1, a.Name)
	var typ uint64
	switch {
	case a.F != nil:
		b = protowire.AppendTag(b, 2, protowire.Fixed32Type)
		b = protowire.AppendFixed32(b, math.Float32bits(*a.F))
		typ = attrFloat
	case a.I != nil:
		b = appendVarintField(b, 3, uint64(*a.I))
		typ = attrInt
	case a.S != nil:
		b = appendBytesField(b, 4, a.S)
		typ = attrString
	case a.T != nil:
		b = appendBytesField(b, 5, a.T.Marshal())
		typ = attrTensor
	case a.Floats != nil:
		var p []byte
		for _, f := range a.Floats {
			p = protowire.AppendFixed32(p, math.Float32bits(f))
		}
		b = appendBytesField(b, 7, p)
		typ = attrFloats
	case a.Ints != nil:
		var p []byte
		for _, v := range a.Ints {
			p = protowire.AppendVarint(p, uint64(v))
		}
		b = appendBytesField(b, 8, p)
		typ = attrInts
	}
	b = appendVarintField(b, 20, typ)
	return b
}

func (v *ValueInfo) marshal() []byte {
	var tt []byte // TypeProto.Tensor
	tt = appendVarintField(tt, 1, uint64(v.ElemType))
	if v.HasShape {
		var shape []byte
		for _, d := range v.Shape {
			var dim []byte
			switch {
			case d.Known:
				dim = appendVarintField(dim, 1, uint64(d.Value))
			case d.Param != "":
				dim = appendStringField(dim, 2, d.Param)
			}
			shape = appendBytesField(shape, 1, dim)
		}
		tt = protowire.AppendTag(tt, 2, protowire.BytesType)
		tt = protowire.AppendBytes(tt, shape)
	}
	var typ []byte
	typ = appendBytesField(typ, 1, tt)
	var b []byte
	b = appendStringField(b, 1, v.Name)
	b = appendBytesField(b, 2, typ)
	return b
}

// Marshal encodes the tensor as TensorProto bytes (data in raw_data, strings
// in string_data).
func (t *Tensor) Marshal() []byte {
	var b []byte
	if len(t.Dims) > 0 {
		var p []byte
		for _, d := range t.Dims {
			p = protowire.AppendVarint(p, uint64(d))
		}
		b = appendBytesField(b, 1, p)
	}
	b = appendVarintField(b, 2, uint64(t.DataType))
	for _, s := range t.Strings {
		b = appendBytesField(b, 6, s)
	}
	if t.Name != "" {
		b = appendStringField(b, 8, t.Name)
	}
	if t.DataType != String {
		b = appendBytesField(b, 9, t.Raw)
	}
	return b
}

// NumElements is the product of the dims (1 for a scalar).
func (t *Tensor) NumElements() int64 {
	n := int64(1)
	for _, d := range t.Dims {
		n *= d
	}
	return n
}

// ParseTensor decodes TensorProto bytes into canonical form, whichever data
// field (raw_data or the typed repeated fields, packed or not) carries the
// elements.
func ParseTensor(b []byte) (*Tensor, error) {
	t := &Tensor{}
	var (
		raw      []byte
		hasRaw   bool
		i32, i64 []int64
		u64      []uint64
		f32      []float32
		f64      []float64
	)
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, fmt.Errorf("tensor proto: %w", protowire.ParseError(n))
		}
		b = b[n:]
		var err error
		switch {
		case num == 1:
			b, err = consumeInts(b, typ, func(v uint64) { t.Dims = append(t.Dims, int64(v)) })
		case num == 2 && typ == protowire.VarintType:
			var v uint64
			v, n = protowire.ConsumeVarint(b)
			t.DataType = int32(v)
			b, err = advance(b, n)
		case num == 4:
			b, err = consumeFixed32s(b, typ, func(v uint32) { f32 = append(f32, math.Float32frombits(v)) })
		case num == 5:
			b, err = consumeInts(b, typ, func(v uint64) { i32 = append(i32, int64(int32(v))) })
		case num == 6 && typ == protowire.BytesType:
			var v []byte
			v, n = protowire.ConsumeBytes(b)
			t.Strings = append(t.Strings, v)
			b, err = advance(b, n)
		case num == 7:
			b, err = consumeInts(b, typ, func(v uint64) { i64 = append(i64, int64(v)) })
		case num == 8 && typ == protowire.BytesType:
			var v []byte
			v, n = protowire.ConsumeBytes(b)
			t.Name = string(v)
			b, err = advance(b, n)
		case num == 9 && typ == protowire.BytesType:
			raw, n = protowire.ConsumeBytes(b)
			hasRaw = true
			b, err = advance(b, n)
		case num == 10:
			b, err = consumeFixed64s(b, typ, func(v uint64) { f64 = append(f64, math.Float64frombits(v)) })
		case num == 11:
			b, err = consumeInts(b, typ, func(v uint64) { u64 = append(u64, v) })
		case num == 14 && typ == protowire.VarintType:
			var v uint64
			v, n = protowire.ConsumeVarint(b)
			if v != 0 {
				return nil, fmt.Errorf("tensor proto %q: external data is not supported", t.Name)
			}
			b, err = advance(b, n)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
			b, err = advance(b, n)
		}
		if err != nil {
			return nil, fmt.Errorf("tensor proto field %d: %w", num, err)
		}
	}
	if t.DataType == String {
		return t, nil
	}
	size := ElemSize(t.DataType)
	if size == 0 {
		return nil, fmt.Errorf("tensor proto %q: unsupported data type %d", t.Name, t.DataType)
	}
	n := t.NumElements()
	if hasRaw {
		t.Raw = append([]byte(nil), raw...)
	} else {
		out := make([]byte, 0, n*int64(size))
		switch t.DataType {
		case Float:
			for _, v := range f32 {
				out = binary.LittleEndian.AppendUint32(out, math.Float32bits(v))
			}
		case Double:
			for _, v := range f64 {
				out = binary.LittleEndian.AppendUint64(out, math.Float64bits(v))
			}
		case Int64:
			for _, v := range i64 {
				out = binary.LittleEndian.AppendUint64(out, uint64(v))
			}
		case Uint32, Uint64:
			for _, v := range u64 {
				out = appendLE(out, v, size)
			}
		default: // int32_data carries int32, int16, int8, uint16, uint8, bool, float16
			for _, v := range i32 {
				out = appendLE(out, uint64(v), size)
			}
		}
		t.Raw = out
	}
	if int64(len(t.Raw)) != n*int64(size) {
		return nil, fmt.Errorf("tensor proto %q: dims %v need %d bytes, data has %d", t.Name, t.Dims, n*int64(size), len(t.Raw))
	}
	return t, nil
}

func appendLE(b []byte, v uint64, size int) []byte {
	for i := 0; i < size; i++ {
		b = append(b, byte(v>>(8*i)))
	}
	return b
}

// ParseModelIO reads a ModelProto's graph inputs (minus those that are also
// initializers) and outputs.
func ParseModelIO(model []byte) (inputs, outputs []ValueInfo, err error) {
	graph, err := findBytesField(model, 7)
	if err != nil {
		return nil, nil, fmt.Errorf("model proto: %w", err)
	}
	if graph == nil {
		return nil, nil, fmt.Errorf("model proto has no graph")
	}
	inits := map[string]bool{}
	b := graph
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, nil, fmt.Errorf("graph proto: %w", protowire.ParseError(n))
		}
		b = b[n:]
		if typ != protowire.BytesType || (num != 5 && num != 11 && num != 12) {
			n = protowire.ConsumeFieldValue(num, typ, b)
			if b, err = advance(b, n); err != nil {
				return nil, nil, fmt.Errorf("graph proto: %w", err)
			}
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if b, err = advance(b, n); err != nil {
			return nil, nil, fmt.Errorf("graph proto: %w", err)
		}
		switch num {
		case 5:
			name, err := findBytesField(v, 8)
			if err != nil {
				return nil, nil, fmt.Errorf("initializer: %w", err)
			}
			inits[string(name)] = true
		case 11, 12:
			vi, err := parseValueInfo(v)
			if err != nil {
				return nil, nil, err
			}
			if num == 11 {
				inputs = append(inputs, vi)
			} else {
				outputs = append(outputs, vi)
			}
		}
	}
	kept := inputs[:0]
	for _, in := range inputs {
		if !inits[in.Name] {
			kept = append(kept, in)
		}
	}
	return kept, outputs, nil
}

func parseValueInfo(b []byte) (ValueInfo, error) {
	var vi ValueInfo
	name, err := findBytesField(b, 1)
	if err != nil {
		return vi, fmt.Errorf("value info: %w", err)
	}
	vi.Name = string(name)
	typ, err := findBytesField(b, 2)
	if err != nil || typ == nil {
		return vi, err
	}
	tt, err := findBytesField(typ, 1) // tensor_type
	if err != nil || tt == nil {
		return vi, err
	}
	for len(tt) > 0 {
		num, wt, n := protowire.ConsumeTag(tt)
		if n < 0 {
			return vi, fmt.Errorf("value info %q: %w", vi.Name, protowire.ParseError(n))
		}
		tt = tt[n:]
		switch {
		case num == 1 && wt == protowire.VarintType:
			v, n := protowire.ConsumeVarint(tt)
			vi.ElemType = int32(v)
			if tt, err = advance(tt, n); err != nil {
				return vi, err
			}
		case num == 2 && wt == protowire.BytesType:
			shape, n := protowire.ConsumeBytes(tt)
			if tt, err = advance(tt, n); err != nil {
				return vi, err
			}
			vi.HasShape = true
			vi.Shape = []Dim{}
			for len(shape) > 0 {
				num, wt, n := protowire.ConsumeTag(shape)
				if n < 0 {
					return vi, protowire.ParseError(n)
				}
				shape = shape[n:]
				if num != 1 || wt != protowire.BytesType {
					n = protowire.ConsumeFieldValue(num, wt, shape)
					if shape, err = advance(shape, n); err != nil {
						return vi, err
					}
					continue
				}
				dimb, n := protowire.ConsumeBytes(shape)
				if shape, err = advance(shape, n); err != nil {
					return vi, err
				}
				var d Dim
				for len(dimb) > 0 {
					num, wt, n := protowire.ConsumeTag(dimb)
					if n < 0 {
						return vi, protowire.ParseError(n)
					}
					dimb = dimb[n:]
					switch {
					case num == 1 && wt == protowire.VarintType:
						v, n := protowire.ConsumeVarint(dimb)
						d.Value, d.Known = int64(v), true
						dimb, err = advance(dimb, n)
					case num == 2 && wt == protowire.BytesType:
						v, n := protowire.ConsumeBytes(dimb)
						d.Param = string(v)
						dimb, err = advance(dimb, n)
					default:
						n = protowire.ConsumeFieldValue(num, wt, dimb)
						dimb, err = advance(dimb, n)
					}
					if err != nil {
						return vi, err
					}
				}
				vi.Shape = append(vi.Shape, d)
			}
		default:
			n = protowire.ConsumeFieldValue(num, wt, tt)
			if tt, err = advance(tt, n); err != nil {
				return vi, err
			}
		}
	}
	return vi, nil
}

// findBytesField returns the last occurrence of a length-delimited field.
func findBytesField(b []byte, field protowire.Number) ([]byte, error) {
	var out []byte
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		b = b[n:]
		if num == field && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, protowire.ParseError(n)
			}
			out = v
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		b = b[n:]
	}
	return out, nil
}

func advance(b []byte, n int) ([]byte, error) {
	if n < 0 {
		return nil, protowire.ParseError(n)
	}
	return b[n:], nil
}

func consumeInts(b []byte, typ protowire.Type, f func(uint64)) ([]byte, error) {
	switch typ {
	case protowire.VarintType:
		v, n := protowire.ConsumeVarint(b)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		f(v)
		return b[n:], nil
	case protowire.BytesType:
		p, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		for len(p) > 0 {
			v, m := protowire.ConsumeVarint(p)
			if m < 0 {
				return nil, protowire.ParseError(m)
			}
			f(v)
			p = p[m:]
		}
		return b[n:], nil
	}
	return nil, fmt.Errorf("unexpected wire type %d for an integer field", typ)
}

func consumeFixed32s(b []byte, typ protowire.Type, f func(uint32)) ([]byte, error) {
	switch typ {
	case protowire.Fixed32Type:
		v, n := protowire.ConsumeFixed32(b)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		f(v)
		return b[n:], nil
	case protowire.BytesType:
		p, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		if len(p)%4 != 0 {
			return nil, fmt.Errorf("packed fixed32 field of %d bytes", len(p))
		}
		for i := 0; i < len(p); i += 4 {
			f(binary.LittleEndian.Uint32(p[i:]))
		}
		return b[n:], nil
	}
	return nil, fmt.Errorf("unexpected wire type %d for a float field", typ)
}

func consumeFixed64s(b []byte, typ protowire.Type, f func(uint64)) ([]byte, error) {
	switch typ {
	case protowire.Fixed64Type:
		v, n := protowire.ConsumeFixed64(b)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		f(v)
		return b[n:], nil
	case protowire.BytesType:
		p, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		if len(p)%8 != 0 {
			return nil, fmt.Errorf("packed fixed64 field of %d bytes", len(p))
		}
		for i := 0; i < len(p); i += 8 {
			f(binary.LittleEndian.Uint64(p[i:]))
		}
		return b[n:], nil
	}
	return nil, fmt.Errorf("unexpected wire type %d for a double field", typ)
}

func appendVarintField(b []byte, num protowire.Number, v uint64) []byte {
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

func appendStringField(b []byte, num protowire.Number, s string) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func appendBytesField(b []byte, num protowire.Number, v []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}
