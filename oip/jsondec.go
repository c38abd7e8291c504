package oip

import (
	"encoding/binary"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Binary tensor data extension: a body may carry a JSON header followed by
// raw tensor data. The header length travels in this HTTP header; a tensor
// whose data is binary has the parameter binary_data_size instead of "data".
const (
	HeaderContentLength = "Inference-Header-Content-Length"
	ParamBinaryDataSize = "binary_data_size"
	// ParamBinaryData on a requested output asks for that output in binary.
	ParamBinaryData = "binary_data"
	// ParamBinaryDataOutput on a request asks for every output in binary.
	ParamBinaryDataOutput = "binary_data_output"
)

// DecodeInferRequest parses a REST inference request body. headerLen is the
// value of the Inference-Header-Content-Length header (binary tensor data
// extension), or 0 when the whole body is JSON. Model name and version come
// from the URL and are left empty. The result never aliases body, so the
// caller may reuse it at once. Every problem is an InvalidArgument *Error
// naming the field, e.g. "inputs[0].shape: ...".
func DecodeInferRequest(body []byte, headerLen int) (*InferRequest, error) {
	js, bin, err := splitBinary(body, headerLen)
	if err != nil {
		return nil, err
	}
	s := &scanner{b: js}
	req := &InferRequest{}
	seenInputs := false
	err = s.object("request", func(key []byte) error {
		switch string(key) {
		case "id":
			if s.null() {
				return nil
			}
			v, err := s.str("id")
			req.ID = v
			return err
		case "parameters":
			p, err := s.params("parameters")
			req.Parameters = p
			return err
		case "inputs":
			seenInputs = true
			return s.array("inputs", func(i int) error {
				req.Inputs = append(req.Inputs, Tensor{})
				return s.tensor(&req.Inputs[i], "inputs", i)
			})
		case "outputs":
			if s.null() {
				return nil
			}
			return s.array("outputs", func(i int) error {
				path := "outputs[" + strconv.Itoa(i) + "]"
				var o RequestedOutput
				seenName := false
				err := s.object(path, func(key []byte) error {
					switch string(key) {
					case "name":
						seenName = true
						v, err := s.str(path + ".name")
						o.Name = v
						return err
					case "parameters":
						p, err := s.params(path + ".parameters")
						o.Parameters = p
						return err
					}
					return s.skip()
				})
				if err != nil {
					return err
				}
				if !seenName || o.Name == "" {
					return Errorf(InvalidArgument, "%s.name: missing", path)
				}
				req.Outputs = append(req.Outputs, o)
				return nil
			})
		}
		return s.skip()
	})
	if err != nil {
		return nil, err
	}
	if err := s.end(); err != nil {
		return nil, err
	}
	if !seenInputs {
		return nil, Errorf(InvalidArgument, "inputs: missing")
	}
	for i := range req.Inputs {
		for j := 0; j < i; j++ {
			if req.Inputs[j].Name == req.Inputs[i].Name {
				return nil, Errorf(InvalidArgument, "inputs[%d].name: duplicate input %q", i, req.Inputs[i].Name)
			}
		}
	}
	if err := takeBinary(req.Inputs, "inputs", bin); err != nil {
		return nil, err
	}
	return req, nil
}

// DecodeInferResponse parses a REST inference response body (headerLen as
// for DecodeInferRequest). It accepts NaN and ±Infinity tokens in float data,
// which some servers write although JSON has no such numbers.
func DecodeInferResponse(body []byte, headerLen int) (*InferResponse, error) {
	js, bin, err := splitBinary(body, headerLen)
	if err != nil {
		return nil, err
	}
	s := &scanner{b: js, lenient: true}
	resp := &InferResponse{}
	err = s.object("response", func(key []byte) error {
		var err error
		switch string(key) {
		case "model_name":
			resp.ModelName, err = s.optStr("model_name")
		case "model_version":
			resp.ModelVersion, err = s.optStr("model_version")
		case "id":
			resp.ID, err = s.optStr("id")
		case "parameters":
			resp.Parameters, err = s.params("parameters")
		case "outputs":
			err = s.array("outputs", func(i int) error {
				resp.Outputs = append(resp.Outputs, Tensor{})
				return s.tensor(&resp.Outputs[i], "outputs", i)
			})
		default:
			err = s.skip()
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if err := s.end(); err != nil {
		return nil, err
	}
	if err := takeBinary(resp.Outputs, "outputs", bin); err != nil {
		return nil, err
	}
	return resp, nil
}

func (s *scanner) optStr(path string) (string, error) {
	if s.null() {
		return "", nil
	}
	return s.str(path)
}

func splitBinary(body []byte, headerLen int) (js, bin []byte, err error) {
	if headerLen <= 0 || headerLen == len(body) {
		return body, nil, nil
	}
	if headerLen > len(body) {
		return nil, nil, Errorf(InvalidArgument, "%s is %d but the body has only %d bytes", HeaderContentLength, headerLen, len(body))
	}
	return body[:headerLen], body[headerLen:], nil
}

// takeBinary fills, in order, the tensors whose data is binary (Raw nil and
// a binary_data_size parameter) from bin. The parameter is removed.
func takeBinary(ts []Tensor, kind string, bin []byte) error {
	off := 0
	for i := range ts {
		t := &ts[i]
		v, ok := t.Parameters[ParamBinaryDataSize]
		if !ok {
			continue
		}
		n, isInt := paramInt(v)
		if !isInt || n < 0 {
			return Errorf(InvalidArgument, "%s[%d].parameters.%s: must be a non-negative integer", kind, i, ParamBinaryDataSize)
		}
		delete(t.Parameters, ParamBinaryDataSize)
		if len(t.Parameters) == 0 {
			t.Parameters = nil
		}
		if n > int64(len(bin)-off) {
			return Errorf(InvalidArgument, "%s[%d].parameters.%s: %d bytes wanted, %d bytes of binary data left", kind, i, ParamBinaryDataSize, n, len(bin)-off)
		}
		t.Raw = append(make([]byte, 0, n), bin[off:off+int(n)]...)
		off += int(n)
		if err := t.Validate(); err != nil {
			return Errorf(InvalidArgument, "%s[%d]: %v", kind, i, err)
		}
	}
	if off != len(bin) {
		return Errorf(InvalidArgument, "binary data: %d bytes follow the JSON header but the tensors take %d", len(bin), off)
	}
	return nil
}

func paramInt(v any) (int64, bool) {
	switch x := v.(type) {
	case int64:
		return x, true
	case uint64:
		if x <= math.MaxInt64 {
			return int64(x), true
		}
	case float64:
		if x == math.Trunc(x) && math.Abs(x) < 1<<53 {
			return int64(x), true
		}
	}
	return 0, false
}

// params reads a parameters object: values are strings, booleans and
// numbers (int64 for integer literals, uint64 beyond int64, else float64).
func (s *scanner) params(path string) (map[string]any, error) {
	if s.null() {
		return nil, nil
	}
	var m map[string]any
	err := s.object(path, func(key []byte) error {
		if m == nil {
			m = make(map[string]any, 2)
		}
		k := string(key)
		switch c := s.peek(); {
		case c == '"':
			v, err := s.str(path)
			m[k] = v
			return err
		case c == 't' && s.literal("true"):
			m[k] = true
		case c == 'f' && s.literal("false"):
			m[k] = false
		case c == '-' || (c >= '0' && c <= '9'):
			save := s.i
			tok, isInt, ok := s.number()
			if !ok {
				return Errorf(InvalidArgument, "%s.%s: malformed number", path, k)
			}
			if isInt {
				if v, err := strconv.ParseInt(string(tok), 10, 64); err == nil {
					m[k] = v
					return nil
				}
				if v, err := strconv.ParseUint(string(tok), 10, 64); err == nil {
					m[k] = v
					return nil
				}
			}
			s.i = save
			f, msg := s.float(64)
			if msg != "" {
				return Errorf(InvalidArgument, "%s.%s: %s", path, k, msg)
			}
			m[k] = f
		default:
			return Errorf(InvalidArgument, "%s.%s: must be a string, number or boolean", path, k)
		}
		return nil
	})
	return m, err
}

// tensor reads one input or output tensor object into t. Once the tensor's
// name is known, errors name it too: `inputs[0] ("features").data: ...`.
func (s *scanner) tensor(t *Tensor, kind string, i int) error {
	err := s.tensorFields(t, kind, i)
	if e, ok := err.(*Error); ok && t.Name != "" {
		path := kind + "[" + strconv.Itoa(i) + "]"
		if strings.HasPrefix(e.Msg, path) && !strings.HasPrefix(e.Msg, path+".name") {
			e.Msg = path + " (" + strconv.Quote(t.Name) + ")" + e.Msg[len(path):]
		}
	}
	return err
}

func (s *scanner) tensorFields(t *Tensor, kind string, i int) error {
	path := kind + "[" + strconv.Itoa(i) + "]"
	var seenName, seenShape, seenType bool
	dataAt := -1
	err := s.object(path, func(key []byte) error {
		switch string(key) {
		case "name":
			seenName = true
			v, err := s.strField(path, ".name")
			t.Name = v
			return err
		case "datatype":
			seenType = true
			if s.peek() == '"' {
				at := s.i
				if b, ok := s.plainString(); ok {
					if dt, ok := datatypeNamed(b); ok {
						t.Datatype = dt
						return nil
					}
				}
				s.i = at // not a datatype: the error below names it
			}
			v, err := s.strField(path, ".datatype")
			if err != nil {
				return err
			}
			dt, err := ParseDatatype(v)
			if err != nil {
				return Errorf(InvalidArgument, "%s.datatype: %v", path, err)
			}
			t.Datatype = dt
			return nil
		case "shape":
			seenShape = true
			t.Shape = make([]int64, 0, 4)
			err := s.arrayField(path, ".shape", func(j int) error {
				neg, mag, msg := s.integer()
				switch {
				case msg != "":
					return Errorf(InvalidArgument, "%s.shape[%d]: %s", path, j, msg)
				case neg && mag != 0:
					return Errorf(InvalidArgument, "%s.shape[%d]: -%d; dimensions must be >= 0", path, j, mag)
				case mag > math.MaxInt64:
					return Errorf(InvalidArgument, "%s.shape[%d]: %d is out of range", path, j, mag)
				}
				t.Shape = append(t.Shape, int64(mag))
				return nil
			})
			if err != nil {
				return err
			}
			if _, err := NumElements(t.Shape); err != nil {
				return Errorf(InvalidArgument, "%s.shape: %v", path, err)
			}
			return nil
		case "parameters":
			p, err := s.params(path + ".parameters")
			t.Parameters = p
			return err
		case "data":
			if dataAt >= 0 {
				return Errorf(InvalidArgument, "%s.data: given twice", path)
			}
			dataAt = s.i
			if seenType && seenShape {
				return s.data(t, path)
			}
			return s.skip() // parsed once datatype and shape are known
		}
		return s.skip()
	})
	if err != nil {
		return err
	}
	switch {
	case !seenName || t.Name == "":
		return Errorf(InvalidArgument, "%s.name: missing", path)
	case !seenType:
		return Errorf(InvalidArgument, "%s.datatype: missing", path)
	case !seenShape:
		return Errorf(InvalidArgument, "%s.shape: missing", path)
	}
	_, binary := t.Parameters[ParamBinaryDataSize]
	switch {
	case binary && dataAt >= 0:
		return Errorf(InvalidArgument, "%s: both data and parameters.%s given", path, ParamBinaryDataSize)
	case binary:
		return nil
	case dataAt < 0:
		return Errorf(InvalidArgument, "%s.data: missing", path)
	}
	if t.Raw == nil {
		end := s.i
		s.i = dataAt
		if err := s.data(t, path); err != nil {
			return err
		}
		s.i = end
	}
	return nil
}

// data reads a tensor's data array, flat or nested row-major, into t.Raw and
// checks it against t.Shape.
func (s *scanner) data(t *Tensor, path string) error {
	n, _ := NumElements(t.Shape)
	p := dataParser{s: s, dt: t.Datatype, path: path, leaf: -1}
	if sz := t.Datatype.Size(); sz > 0 {
		// Preallocate, but never more than the body could hold (each
		// element takes at least two bytes of JSON).
		if lim := int64(len(s.b)/2 + 1); n > lim {
			n = lim
		}
		p.raw = make([]byte, 0, n*int64(sz))
	}
	if s.peek() != '[' {
		return Errorf(InvalidArgument, "%s.data: must be an array", path)
	}
	if raw, ok := s.flatFloats(p.raw, t.Datatype, n); ok {
		t.Raw = raw
		return nil
	}
	if err := p.array(0); err != nil {
		return err
	}
	if p.raw == nil {
		p.raw = []byte{}
	}
	t.Raw = p.raw
	want, _ := NumElements(t.Shape)
	if p.depth > 1 {
		if p.leaf >= 0 && p.leaf != p.depth-1 {
			return Errorf(InvalidArgument, "%s.data: arrays and values mixed at one level", path)
		}
		match := len(t.Shape) == p.depth
		for d := 0; match && d < p.depth; d++ {
			match = int64(p.lens[d]) == t.Shape[d]
		}
		if !match {
			return Errorf(InvalidArgument, "%s.data: nested array of dims %v does not match shape %v", path, slices.Clone(p.lens[:p.depth]), t.Shape)
		}
	}
	if int64(p.count) != want {
		return Errorf(InvalidArgument, "%s.data: shape %v needs %d elements, data has %d", path, t.Shape, want, p.count)
	}
	return nil
}

// flatFloats is the fast path of data for the common case: a flat array
// of exactly want plain numbers (FP32 or FP64) that the fast float
// conversion takes. It appends them to raw; for anything else (nesting,
// another count, NaN, a number strconv must convert, bad syntax) it
// reports false with the scanner unmoved, and the general parser reads the
// array (and names any problem).
func (s *scanner) flatFloats(raw []byte, dt Datatype, want int64) ([]byte, bool) {
	if (dt != FP32 && dt != FP64) || want == 0 {
		return nil, false
	}
	bits := 32
	if dt == FP64 {
		bits = 64
	}
	start := s.i
	s.i++ // '['
	var count int64
	for {
		s.ws()
		f, n, ok := scanFastFloat(s.b[s.i:], bits)
		if !ok || count == want {
			break
		}
		s.i += n
		count++
		if bits == 32 {
			raw = binary.LittleEndian.AppendUint32(raw, math.Float32bits(float32(f)))
		} else {
			raw = binary.LittleEndian.AppendUint64(raw, math.Float64bits(f))
		}
		switch s.peek() {
		case ',':
			s.i++
			continue
		case ']':
			if count == want {
				s.i++
				return raw, true
			}
		}
		break
	}
	s.i = start
	return nil, false
}

type dataParser struct {
	s     *scanner
	dt    Datatype
	path  string
	raw   []byte
	count int
	depth int             // nesting depth seen (1 = flat)
	leaf  int             // depth whose arrays hold values, -1 until known
	lens  [maxNesting]int // array length per depth
	set   [maxNesting]bool
	idx   [maxNesting]int // index path of the current element, for errors
}

func (p *dataParser) where(depth int) string {
	b := append([]byte(p.path), ".data"...)
	for d := 0; d <= depth; d++ {
		b = append(b, '[')
		b = strconv.AppendInt(b, int64(p.idx[d]), 10)
		b = append(b, ']')
	}
	return string(b)
}

func (p *dataParser) array(depth int) error {
	s := p.s
	if depth >= maxNesting {
		return Errorf(InvalidArgument, "%s.data: nested more than %d deep", p.path, maxNesting)
	}
	if depth+1 > p.depth {
		p.depth = depth + 1
	}
	s.i++ // '['
	n := 0
	if s.peek() == ']' {
		s.i++
	} else {
		for {
			p.idx[depth] = n
			c := s.peek()
			if c == '[' {
				if p.leaf == depth {
					return Errorf(InvalidArgument, "%s: arrays and values mixed at one level", p.where(depth))
				}
				if err := p.array(depth + 1); err != nil {
					return err
				}
			} else {
				if p.leaf < 0 {
					p.leaf = depth
				} else if p.leaf != depth {
					return Errorf(InvalidArgument, "%s: arrays and values mixed at one level", p.where(depth))
				}
				if msg := p.value(); msg != "" {
					return Errorf(InvalidArgument, "%s: %s", p.where(depth), msg)
				}
				p.count++
			}
			n++
			c = s.peek()
			if c == ',' {
				s.i++
				continue
			}
			if c == ']' {
				s.i++
				break
			}
			return s.syntax("expected ',' or ']' in data array")
		}
	}
	if !p.set[depth] {
		p.set[depth] = true
		p.lens[depth] = n
	} else if p.lens[depth] != n {
		return Errorf(InvalidArgument, "%s: ragged nested array (length %d, earlier %d)", p.where(depth-1), n, p.lens[depth])
	}
	if p.leaf >= 0 && p.leaf < depth {
		return Errorf(InvalidArgument, "%s: arrays and values mixed at one level", p.where(p.leaf))
	}
	return nil
}

// value reads one element and appends it to raw; it returns a message on
// failure.
func (p *dataParser) value() string {
	s := p.s
	switch p.dt {
	case FP32:
		f, msg := s.float(32)
		if msg != "" {
			return msg
		}
		p.raw = binary.LittleEndian.AppendUint32(p.raw, math.Float32bits(float32(f)))
	case FP64:
		f, msg := s.float(64)
		if msg != "" {
			return msg
		}
		p.raw = binary.LittleEndian.AppendUint64(p.raw, math.Float64bits(f))
	case FP16:
		f, msg := s.float(32)
		if msg != "" {
			return msg
		}
		h := Float32ToHalf(float32(f))
		if h&0x7c00 == 0x7c00 && !math.IsInf(f, 0) && !math.IsNaN(f) {
			return strconv.FormatFloat(f, 'g', -1, 32) + " is out of range for FP16"
		}
		p.raw = binary.LittleEndian.AppendUint16(p.raw, h)
	case BOOL:
		switch {
		case s.literal("true"):
			p.raw = append(p.raw, 1)
		case s.literal("false"):
			p.raw = append(p.raw, 0)
		default:
			return s.badValue("true or false")
		}
	case BYTES:
		if s.i >= len(s.b) || s.b[s.i] != '"' {
			return s.badValue("a string")
		}
		at := len(p.raw)
		p.raw = append(p.raw, 0, 0, 0, 0)
		var err error
		p.raw, err = s.appendString(p.raw)
		if err != nil {
			return err.Error()
		}
		binary.LittleEndian.PutUint32(p.raw[at:], uint32(len(p.raw)-at-4))
	case INT8, INT16, INT32, INT64:
		neg, mag, msg := s.integer()
		if msg != "" {
			return msg
		}
		lo, hi := intRange(p.dt)
		var v int64
		if neg {
			if mag > uint64(-(lo+1))+1 {
				return "-" + strconv.FormatUint(mag, 10) + " is out of range for " + string(p.dt)
			}
			v = int64(-mag)
		} else {
			if mag > uint64(hi) {
				return strconv.FormatUint(mag, 10) + " is out of range for " + string(p.dt)
			}
			v = int64(mag)
		}
		p.raw = appendUint(p.raw, p.dt.Size(), uint64(v))
	case UINT8, UINT16, UINT32, UINT64:
		neg, mag, msg := s.integer()
		if msg != "" {
			return msg
		}
		_, hi := uintRange(p.dt)
		if (neg && mag != 0) || mag > hi {
			sign := ""
			if neg {
				sign = "-"
			}
			return sign + strconv.FormatUint(mag, 10) + " is out of range for " + string(p.dt)
		}
		p.raw = appendUint(p.raw, p.dt.Size(), mag)
	}
	return ""
}

// datatypeNamed is the datatype named by b, without allocating.
func datatypeNamed(b []byte) (Datatype, bool) {
	switch string(b) {
	case "BOOL":
		return BOOL, true
	case "UINT8":
		return UINT8, true
	case "UINT16":
		return UINT16, true
	case "UINT32":
		return UINT32, true
	case "UINT64":
		return UINT64, true
	case "INT8":
		return INT8, true
	case "INT16":
		return INT16, true
	case "INT32":
		return INT32, true
	case "INT64":
		return INT64, true
	case "FP16":
		return FP16, true
	case "FP32":
		return FP32, true
	case "FP64":
		return FP64, true
	case "BYTES":
		return BYTES, true
	}
	return "", false
}

func appendUint(b []byte, size int, v uint64) []byte {
	switch size {
	case 1:
		return append(b, byte(v))
	case 2:
		return binary.LittleEndian.AppendUint16(b, uint16(v))
	case 4:
		return binary.LittleEndian.AppendUint32(b, uint32(v))
	}
	return binary.LittleEndian.AppendUint64(b, v)
}
