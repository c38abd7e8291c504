// Package pbwire reads and splices the OIP v2 ModelInfer messages in their
// protobuf wire form, without decoding them into Go structures: the proxy's
// gRPC pass-through reads what routing needs (model_name, model_version,
// id) and forwards the rest of the bytes as they came.
//
// Check and ReadRequest accept exactly what proto.Unmarshal accepts for
// the message (the same wire-format, UTF-8 and packed-field rules; a known
// field with another wire type is an unknown field, as there), so a message
// passed through is one the decoding path would have taken, and nothing the
// backend's gRPC server cannot decode reaches it. Unknown fields are kept.
package pbwire

import (
	"errors"
	"fmt"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"

	pb "github.com/switchyard-dev/switchyard/oip/inferencepb"
)

// Schema is one message type's fields, indexed by field number, compiled
// from its descriptor.
type Schema struct {
	name   string
	fields []field
}

type field struct {
	name string
	kind protoreflect.Kind
	list bool // repeated: a scalar may come packed
	msg  *Schema
	set  bool
}

// Request and Response are the ModelInferRequest and ModelInferResponse
// schemas.
var (
	Request  = Compile((&pb.ModelInferRequest{}).ProtoReflect().Descriptor())
	Response = Compile((&pb.ModelInferResponse{}).ProtoReflect().Descriptor())
)

// Compile builds the schema of a message type (and of the message types of
// its fields).
func Compile(md protoreflect.MessageDescriptor) *Schema {
	return compile(md, map[protoreflect.FullName]*Schema{})
}

func compile(md protoreflect.MessageDescriptor, seen map[protoreflect.FullName]*Schema) *Schema {
	if s := seen[md.FullName()]; s != nil {
		return s
	}
	s := &Schema{name: string(md.Name())}
	seen[md.FullName()] = s
	fds := md.Fields()
	max := 0
	for i := 0; i < fds.Len(); i++ {
		max = maxInt(max, int(fds.Get(i).Number()))
	}
	s.fields = make([]field, max+1)
	for i := 0; i < fds.Len(); i++ {
		fd := fds.Get(i)
		f := field{name: string(fd.Name()), kind: fd.Kind(), list: fd.IsList(), set: true}
		if fd.IsMap() {
			f.kind, f.list = protoreflect.MessageKind, true
			f.msg = compile(fd.Message(), seen)
		} else if k := fd.Kind(); k == protoreflect.MessageKind || k == protoreflect.GroupKind {
			f.msg = compile(fd.Message(), seen)
		}
		s.fields[fd.Number()] = f
	}
	return s
}

func maxInt(a, b int) int {
	if a > b {
		return a
	}
	return b
}

// Error is a message that cannot be decoded: Path names the field (e.g.
// "inputs[0].contents.fp32_contents", "" for the message itself).
type Error struct {
	Message string // the message type, e.g. "ModelInferRequest"
	Path    string
	Err     error
}

func (e *Error) Error() string {
	if e.Path == "" {
		return fmt.Sprintf("%s: %v", e.Message, e.Err)
	}
	return fmt.Sprintf("%s field %s: %v", e.Message, e.Path, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

var (
	errUTF8   = errors.New("string is not valid UTF-8")
	errPacked = errors.New("packed repeated field is truncated")
)

// Check reports whether b is a message of type s that proto.Unmarshal
// would decode (an *Error naming the first field that is not).
func Check(s *Schema, b []byte) error {
	if path, err := check(s, b, 0); err != nil {
		return &Error{Message: s.name, Path: path, Err: err}
	}
	return nil
}

// maxDepth bounds nesting (the OIP messages nest four deep; unknown groups
// are bounded by protowire itself).
const maxDepth = 32

func check(s *Schema, b []byte, depth int) (string, error) {
	if depth > maxDepth {
		return "", errors.New("messages nested too deep")
	}
	var counts [16]int32 // occurrences of fields 1..15, for the path's index
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return "", protowire.ParseError(n)
		}
		b = b[n:]
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			if f := s.known(num); f != nil {
				return f.name, protowire.ParseError(m)
			}
			return fmt.Sprintf("#%d", num), protowire.ParseError(m)
		}
		if f := s.known(num); f != nil {
			idx := int32(-1)
			if f.list && f.kind == protoreflect.MessageKind && int(num) < len(counts) {
				idx = counts[num]
				counts[num]++
			}
			if path, err := f.check(typ, b[:m], depth); err != nil {
				return joinPath(f.name, idx, path), err
			}
		}
		b = b[m:]
	}
	return "", nil
}

func (s *Schema) known(num protowire.Number) *field {
	if int(num) < len(s.fields) && s.fields[num].set {
		return &s.fields[num]
	}
	return nil
}

func joinPath(name string, idx int32, sub string) string {
	if idx >= 0 {
		name = fmt.Sprintf("%s[%d]", name, idx)
	}
	if sub == "" {
		return name
	}
	return name + "." + sub
}

// check checks one value v (as protowire.ConsumeFieldValue delimits it) of
// field f that came with wire type typ. A wire type the field does not
// take makes it an unknown field (proto.Unmarshal keeps it as one).
func (f *field) check(typ protowire.Type, v []byte, depth int) (string, error) {
	switch f.kind {
	case protoreflect.MessageKind:
		if typ != protowire.BytesType {
			return "", nil
		}
		inner, _ := protowire.ConsumeBytes(v)
		return check(f.msg, inner, depth+1)
	case protoreflect.GroupKind:
		return "", nil // not in the OIP messages; protowire delimited it
	case protoreflect.StringKind:
		if typ == protowire.BytesType {
			if s, _ := protowire.ConsumeBytes(v); !utf8.Valid(s) {
				return "", errUTF8
			}
		}
		return "", nil
	case protoreflect.BytesKind:
		return "", nil
	}
	// A scalar: its own wire type was checked by ConsumeFieldValue; a
	// repeated one may come packed (BytesType), whose content must parse.
	if typ != protowire.BytesType || !f.list {
		return "", nil
	}
	packed, _ := protowire.ConsumeBytes(v)
	switch f.kind {
	case protoreflect.Fixed32Kind, protoreflect.Sfixed32Kind, protoreflect.FloatKind:
		if len(packed)%4 != 0 {
			return "", errPacked
		}
	case protoreflect.Fixed64Kind, protoreflect.Sfixed64Kind, protoreflect.DoubleKind:
		if len(packed)%8 != 0 {
			return "", errPacked
		}
	default: // varints
		for len(packed) > 0 {
			_, n := protowire.ConsumeVarint(packed)
			if n < 0 {
				return "", errPacked
			}
			packed = packed[n:]
		}
	}
	return "", nil
}

// The ModelInferRequest fields routing reads and rewrites.
const (
	fieldModelName    protowire.Number = 1
	fieldModelVersion protowire.Number = 2
	fieldID           protowire.Number = 3
)

// Head is what routing needs from a ModelInferRequest, read from its wire
// form: the values alias the message's bytes. As in proto.Unmarshal, the
// last occurrence of a field wins.
type Head struct {
	Model, Version, ID []byte
	// cuts are the byte ranges of every model_name and model_version field
	// (tag and value), in order: what AppendRequest leaves out.
	cuts  [][2]int
	inner [4][2]int
}

// ReadRequest checks b as a ModelInferRequest (Check) and reads its head.
func ReadRequest(b []byte, h *Head) error {
	*h = Head{}
	h.cuts = h.inner[:0]
	var counts [16]int32
	off := 0
	for off < len(b) {
		start := off
		num, typ, n := protowire.ConsumeTag(b[off:])
		if n < 0 {
			return &Error{Message: Request.name, Err: protowire.ParseError(n)}
		}
		off += n
		m := protowire.ConsumeFieldValue(num, typ, b[off:])
		if m < 0 {
			path := fmt.Sprintf("#%d", num)
			if f := Request.known(num); f != nil {
				path = f.name
			}
			return &Error{Message: Request.name, Path: path, Err: protowire.ParseError(m)}
		}
		v := b[off : off+m]
		off += m
		f := Request.known(num)
		if f == nil {
			continue
		}
		if (num == fieldModelName || num == fieldModelVersion || num == fieldID) && typ == protowire.BytesType {
			s, _ := protowire.ConsumeBytes(v)
			if !utf8.Valid(s) {
				return &Error{Message: Request.name, Path: f.name, Err: errUTF8}
			}
			switch num {
			case fieldModelName:
				h.Model = s
			case fieldModelVersion:
				h.Version = s
			default:
				h.ID = s
			}
			if num != fieldID {
				h.cuts = append(h.cuts, [2]int{start, off})
			}
			continue
		}
		idx := int32(-1)
		if f.list && f.kind == protoreflect.MessageKind && int(num) < len(counts) {
			idx = counts[num]
			counts[num]++
		}
		if path, err := f.check(typ, v, 0); err != nil {
			return &Error{Message: Request.name, Path: joinPath(f.name, idx, path), Err: err}
		}
	}
	return nil
}

// AppendRequest appends to dst the request b (read into h by ReadRequest)
// with model_name and model_version replaced by model and version (left
// out when empty, as proto3 encodes them); every other field, unknown ones
// included, is kept as it came.
func AppendRequest(dst, b []byte, h *Head, model, version string) []byte {
	if model != "" {
		dst = protowire.AppendTag(dst, fieldModelName, protowire.BytesType)
		dst = protowire.AppendString(dst, model)
	}
	if version != "" {
		dst = protowire.AppendTag(dst, fieldModelVersion, protowire.BytesType)
		dst = protowire.AppendString(dst, version)
	}
	prev := 0
	for _, c := range h.cuts {
		dst = append(dst, b[prev:c[0]]...)
		prev = c[1]
	}
	return append(dst, b[prev:]...)
}

// RequestSize is the length AppendRequest's output will have.
func RequestSize(b []byte, h *Head, model, version string) int {
	n := len(b)
	for _, c := range h.cuts {
		n -= c[1] - c[0]
	}
	if model != "" {
		n += protowire.SizeTag(fieldModelName) + protowire.SizeBytes(len(model))
	}
	if version != "" {
		n += protowire.SizeTag(fieldModelVersion) + protowire.SizeBytes(len(version))
	}
	return n
}
