package oip

import (
	"encoding/binary"
	"fmt"
	"math"
	"strconv"

	pb "github.com/switchyard-dev/switchyard/oip/inferencepb"
)

// This file converts between the gRPC messages (package inferencepb) and the
// transport-neutral types. Tensor data arrives either typed (contents) or raw
// (raw_input_contents / raw_output_contents); it always leaves raw. Raw
// entries of a message are shared, not copied: the message must not be
// modified while the converted value is in use.

// InferRequestFromProto converts a ModelInferRequest, decoding typed contents
// of every datatype (FP16 only raw) and checking every tensor's shape against
// its data. Errors are InvalidArgument and name the input.
func InferRequestFromProto(m *pb.ModelInferRequest) (*InferRequest, error) {
	req := &InferRequest{
		ModelName:    m.GetModelName(),
		ModelVersion: m.GetModelVersion(),
		ID:           m.GetId(),
		Parameters:   paramsFromProto(m.GetParameters()),
	}
	if len(m.RawInputContents) > 0 && len(m.RawInputContents) != len(m.Inputs) {
		return nil, Errorf(InvalidArgument, "raw_input_contents has %d entries for %d inputs", len(m.RawInputContents), len(m.Inputs))
	}
	req.Inputs = make([]Tensor, len(m.Inputs))
	for i, in := range m.Inputs {
		t := &req.Inputs[i]
		t.Name = in.GetName()
		t.Shape = in.GetShape()
		t.Parameters = paramsFromProto(in.GetParameters())
		path := "inputs[" + strconv.Itoa(i) + "]"
		if t.Name == "" {
			return nil, Errorf(InvalidArgument, "%s.name: missing", path)
		}
		dt, err := ParseDatatype(in.GetDatatype())
		if err != nil {
			return nil, Errorf(InvalidArgument, "%s (%q).datatype: %v", path, t.Name, err)
		}
		t.Datatype = dt
		if len(m.RawInputContents) > 0 {
			if in.Contents != nil {
				return nil, Errorf(InvalidArgument, "%s (%q): contents set while raw_input_contents is used", path, t.Name)
			}
			t.Raw = m.RawInputContents[i]
		} else {
			raw, err := contentsToRaw(dt, in.Contents)
			if err != nil {
				return nil, Errorf(InvalidArgument, "%s (%q).contents: %v", path, t.Name, err)
			}
			t.Raw = raw
		}
		if err := t.Validate(); err != nil {
			return nil, Errorf(InvalidArgument, "%s: %v", path, err)
		}
	}
	if len(m.Outputs) > 0 {
		req.Outputs = make([]RequestedOutput, len(m.Outputs))
		for i, o := range m.Outputs {
			if o.GetName() == "" {
				return nil, Errorf(InvalidArgument, "outputs[%d].name: missing", i)
			}
			req.Outputs[i] = RequestedOutput{Name: o.GetName(), Parameters: paramsFromProto(o.GetParameters())}
		}
	}
	return req, nil
}

// InferRequestToProto converts a request; tensor data goes in
// raw_input_contents (shared with the tensors, not copied).
func InferRequestToProto(r *InferRequest) *pb.ModelInferRequest {
	m := &pb.ModelInferRequest{
		ModelName:        r.ModelName,
		ModelVersion:     r.ModelVersion,
		Id:               r.ID,
		Parameters:       paramsToProto(r.Parameters),
		Inputs:           make([]*pb.ModelInferRequest_InferInputTensor, len(r.Inputs)),
		RawInputContents: make([][]byte, len(r.Inputs)),
	}
	for i := range r.Inputs {
		t := &r.Inputs[i]
		m.Inputs[i] = &pb.ModelInferRequest_InferInputTensor{
			Name: t.Name, Datatype: string(t.Datatype), Shape: t.Shape, Parameters: paramsToProto(t.Parameters),
		}
		m.RawInputContents[i] = nonNil(t.Raw)
	}
	for _, o := range r.Outputs {
		m.Outputs = append(m.Outputs, &pb.ModelInferRequest_InferRequestedOutputTensor{Name: o.Name, Parameters: paramsToProto(o.Parameters)})
	}
	return m
}

// InferResponseToProto converts a response; tensor data goes in
// raw_output_contents (shared with the tensors, not copied).
func InferResponseToProto(r *InferResponse) *pb.ModelInferResponse {
	m := &pb.ModelInferResponse{
		ModelName:         r.ModelName,
		ModelVersion:      r.ModelVersion,
		Id:                r.ID,
		Parameters:        paramsToProto(r.Parameters),
		Outputs:           make([]*pb.ModelInferResponse_InferOutputTensor, len(r.Outputs)),
		RawOutputContents: make([][]byte, len(r.Outputs)),
	}
	for i := range r.Outputs {
		t := &r.Outputs[i]
		m.Outputs[i] = &pb.ModelInferResponse_InferOutputTensor{
			Name: t.Name, Datatype: string(t.Datatype), Shape: t.Shape, Parameters: paramsToProto(t.Parameters),
		}
		m.RawOutputContents[i] = nonNil(t.Raw)
	}
	return m
}

// InferResponseFromProto converts a ModelInferResponse, typed or raw, and
// checks each output's shape against its data. Errors are InvalidArgument
// and name the output.
func InferResponseFromProto(m *pb.ModelInferResponse) (*InferResponse, error) {
	resp := &InferResponse{
		ModelName:    m.GetModelName(),
		ModelVersion: m.GetModelVersion(),
		ID:           m.GetId(),
		Parameters:   paramsFromProto(m.GetParameters()),
		Outputs:      make([]Tensor, len(m.Outputs)),
	}
	if len(m.RawOutputContents) > 0 && len(m.RawOutputContents) != len(m.Outputs) {
		return nil, Errorf(InvalidArgument, "raw_output_contents has %d entries for %d outputs", len(m.RawOutputContents), len(m.Outputs))
	}
	for i, o := range m.Outputs {
		t := &resp.Outputs[i]
		t.Name = o.GetName()
		t.Shape = o.GetShape()
		t.Parameters = paramsFromProto(o.GetParameters())
		path := "outputs[" + strconv.Itoa(i) + "]"
		dt, err := ParseDatatype(o.GetDatatype())
		if err != nil {
			return nil, Errorf(InvalidArgument, "%s (%q).datatype: %v", path, t.Name, err)
		}
		t.Datatype = dt
		if len(m.RawOutputContents) > 0 {
			t.Raw = m.RawOutputContents[i]
		} else {
			raw, err := contentsToRaw(dt, o.Contents)
			if err != nil {
				return nil, Errorf(InvalidArgument, "%s (%q).contents: %v", path, t.Name, err)
			}
			t.Raw = raw
		}
		if err := t.Validate(); err != nil {
			return nil, Errorf(InvalidArgument, "%s: %v", path, err)
		}
	}
	return resp, nil
}

// TensorContents converts a tensor's raw data into typed InferTensorContents
// (for peers that want typed contents). FP16 has no typed field and returns
// an error.
func TensorContents(t *Tensor) (*pb.InferTensorContents, error) {
	c := &pb.InferTensorContents{}
	raw := t.Raw
	switch t.Datatype {
	case BOOL:
		c.BoolContents = make([]bool, len(raw))
		for i, b := range raw {
			c.BoolContents[i] = b != 0
		}
	case INT8:
		for _, v := range Values[int8](raw) {
			c.IntContents = append(c.IntContents, int32(v))
		}
	case INT16:
		for _, v := range Values[int16](raw) {
			c.IntContents = append(c.IntContents, int32(v))
		}
	case INT32:
		c.IntContents = Values[int32](raw)
	case INT64:
		c.Int64Contents = Values[int64](raw)
	case UINT8:
		for _, v := range raw {
			c.UintContents = append(c.UintContents, uint32(v))
		}
	case UINT16:
		for _, v := range Values[uint16](raw) {
			c.UintContents = append(c.UintContents, uint32(v))
		}
	case UINT32:
		c.UintContents = Values[uint32](raw)
	case UINT64:
		c.Uint64Contents = Values[uint64](raw)
	case FP32:
		c.Fp32Contents = Values[float32](raw)
	case FP64:
		c.Fp64Contents = Values[float64](raw)
	case BYTES:
		elems, err := t.BytesElements()
		if err != nil {
			return nil, err
		}
		c.BytesContents = elems
	default:
		return nil, fmt.Errorf("tensor %q: %s has no typed contents field; use raw contents", t.Name, t.Datatype)
	}
	return c, nil
}

// contentsToRaw turns typed contents into canonical raw bytes. Only the field
// matching dt may be set; values are range-checked for narrow integer types.
func contentsToRaw(dt Datatype, c *pb.InferTensorContents) ([]byte, error) {
	if c == nil {
		return nil, nil
	}
	want := contentsField(dt)
	for _, f := range []struct {
		name string
		n    int
	}{
		{"bool_contents", len(c.BoolContents)}, {"int_contents", len(c.IntContents)},
		{"int64_contents", len(c.Int64Contents)}, {"uint_contents", len(c.UintContents)},
		{"uint64_contents", len(c.Uint64Contents)}, {"fp32_contents", len(c.Fp32Contents)},
		{"fp64_contents", len(c.Fp64Contents)}, {"bytes_contents", len(c.BytesContents)},
	} {
		if f.n > 0 && f.name != want {
			if want == "" {
				return nil, fmt.Errorf("%s data must travel as raw contents, found %s", dt, f.name)
			}
			return nil, fmt.Errorf("%s data belongs in %s, found %s", dt, want, f.name)
		}
	}
	switch dt {
	case BOOL:
		raw := make([]byte, len(c.BoolContents))
		for i, b := range c.BoolContents {
			if b {
				raw[i] = 1
			}
		}
		return raw, nil
	case INT8, INT16, INT32:
		lo, hi := intRange(dt)
		sz := dt.Size()
		raw := make([]byte, len(c.IntContents)*sz)
		for i, v := range c.IntContents {
			if int64(v) < lo || int64(v) > hi {
				return nil, fmt.Errorf("element %d: %d is out of range for %s", i, v, dt)
			}
			putUint(raw[i*sz:], sz, uint64(v))
		}
		return raw, nil
	case UINT8, UINT16, UINT32:
		_, hi := uintRange(dt)
		sz := dt.Size()
		raw := make([]byte, len(c.UintContents)*sz)
		for i, v := range c.UintContents {
			if uint64(v) > hi {
				return nil, fmt.Errorf("element %d: %d is out of range for %s", i, v, dt)
			}
			putUint(raw[i*sz:], sz, uint64(v))
		}
		return raw, nil
	case INT64:
		return append([]byte(nil), asBytes(c.Int64Contents)...), nil
	case UINT64:
		return append([]byte(nil), asBytes(c.Uint64Contents)...), nil
	case FP32:
		return append([]byte(nil), asBytes(c.Fp32Contents)...), nil
	case FP64:
		return append([]byte(nil), asBytes(c.Fp64Contents)...), nil
	case BYTES:
		n := 0
		for _, e := range c.BytesContents {
			n += 4 + len(e)
		}
		raw := make([]byte, 0, n)
		for _, e := range c.BytesContents {
			raw = AppendBytesElement(raw, e)
		}
		return raw, nil
	}
	return nil, nil
}

func contentsField(dt Datatype) string {
	switch dt {
	case BOOL:
		return "bool_contents"
	case INT8, INT16, INT32:
		return "int_contents"
	case INT64:
		return "int64_contents"
	case UINT8, UINT16, UINT32:
		return "uint_contents"
	case UINT64:
		return "uint64_contents"
	case FP32:
		return "fp32_contents"
	case FP64:
		return "fp64_contents"
	case BYTES:
		return "bytes_contents"
	}
	return "" // FP16: raw only
}

// intRange is the value range of a signed integer datatype.
func intRange(dt Datatype) (lo, hi int64) {
	switch dt {
	case INT8:
		return math.MinInt8, math.MaxInt8
	case INT16:
		return math.MinInt16, math.MaxInt16
	case INT32:
		return math.MinInt32, math.MaxInt32
	}
	return math.MinInt64, math.MaxInt64
}

// uintRange is the value range of an unsigned integer datatype.
func uintRange(dt Datatype) (lo, hi uint64) {
	switch dt {
	case UINT8:
		return 0, math.MaxUint8
	case UINT16:
		return 0, math.MaxUint16
	case UINT32:
		return 0, math.MaxUint32
	}
	return 0, math.MaxUint64
}

func putUint(b []byte, size int, v uint64) {
	switch size {
	case 1:
		b[0] = byte(v)
	case 2:
		binary.LittleEndian.PutUint16(b, uint16(v))
	case 4:
		binary.LittleEndian.PutUint32(b, uint32(v))
	case 8:
		binary.LittleEndian.PutUint64(b, v)
	}
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// paramsFromProto converts parameters to Go values: bool, int64, string,
// float64 or uint64.
func paramsFromProto(m map[string]*pb.InferParameter) map[string]any {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]any, len(m))
	for k, p := range m {
		switch v := p.GetParameterChoice().(type) {
		case *pb.InferParameter_BoolParam:
			out[k] = v.BoolParam
		case *pb.InferParameter_Int64Param:
			out[k] = v.Int64Param
		case *pb.InferParameter_StringParam:
			out[k] = v.StringParam
		case *pb.InferParameter_DoubleParam:
			out[k] = v.DoubleParam
		case *pb.InferParameter_Uint64Param:
			out[k] = v.Uint64Param
		}
	}
	return out
}

// paramsToProto converts parameters; Go integer and float kinds map onto
// int64/uint64/double, anything else onto its fmt %v string.
func paramsToProto(m map[string]any) map[string]*pb.InferParameter {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]*pb.InferParameter, len(m))
	for k, v := range m {
		out[k] = paramToProto(v)
	}
	return out
}

func paramToProto(v any) *pb.InferParameter {
	p := &pb.InferParameter{}
	switch x := v.(type) {
	case bool:
		p.ParameterChoice = &pb.InferParameter_BoolParam{BoolParam: x}
	case string:
		p.ParameterChoice = &pb.InferParameter_StringParam{StringParam: x}
	case int:
		p.ParameterChoice = &pb.InferParameter_Int64Param{Int64Param: int64(x)}
	case int32:
		p.ParameterChoice = &pb.InferParameter_Int64Param{Int64Param: int64(x)}
	case int64:
		p.ParameterChoice = &pb.InferParameter_Int64Param{Int64Param: x}
	case uint32:
		p.ParameterChoice = &pb.InferParameter_Int64Param{Int64Param: int64(x)}
	case uint:
		p.ParameterChoice = &pb.InferParameter_Uint64Param{Uint64Param: uint64(x)}
	case uint64:
		p.ParameterChoice = &pb.InferParameter_Uint64Param{Uint64Param: x}
	case float32:
		p.ParameterChoice = &pb.InferParameter_DoubleParam{DoubleParam: float64(x)}
	case float64:
		p.ParameterChoice = &pb.InferParameter_DoubleParam{DoubleParam: x}
	default:
		p.ParameterChoice = &pb.InferParameter_StringParam{StringParam: fmt.Sprint(x)}
	}
	return p
}

// ModelMetadataToProto converts model metadata.
func ModelMetadataToProto(md *ModelMetadata) *pb.ModelMetadataResponse {
	return &pb.ModelMetadataResponse{
		Name: md.Name, Versions: md.Versions, Platform: md.Platform,
		Inputs: tensorMetaToProto(md.Inputs), Outputs: tensorMetaToProto(md.Outputs),
	}
}

// ModelMetadataFromProto converts model metadata.
func ModelMetadataFromProto(m *pb.ModelMetadataResponse) *ModelMetadata {
	return &ModelMetadata{
		Name: m.GetName(), Versions: m.GetVersions(), Platform: m.GetPlatform(),
		Inputs: tensorMetaFromProto(m.GetInputs()), Outputs: tensorMetaFromProto(m.GetOutputs()),
	}
}

func tensorMetaToProto(ts []TensorMetadata) []*pb.ModelMetadataResponse_TensorMetadata {
	out := make([]*pb.ModelMetadataResponse_TensorMetadata, len(ts))
	for i, t := range ts {
		out[i] = &pb.ModelMetadataResponse_TensorMetadata{Name: t.Name, Datatype: string(t.Datatype), Shape: t.Shape}
	}
	return out
}

func tensorMetaFromProto(ts []*pb.ModelMetadataResponse_TensorMetadata) []TensorMetadata {
	out := make([]TensorMetadata, len(ts))
	for i, t := range ts {
		out[i] = TensorMetadata{Name: t.GetName(), Datatype: Datatype(t.GetDatatype()), Shape: t.GetShape()}
	}
	return out
}

// ServerMetadataToProto converts server metadata.
func ServerMetadataToProto(md ServerMetadata) *pb.ServerMetadataResponse {
	return &pb.ServerMetadataResponse{Name: md.Name, Version: md.Version, Extensions: md.Extensions}
}

// ServerMetadataFromProto converts server metadata.
func ServerMetadataFromProto(m *pb.ServerMetadataResponse) ServerMetadata {
	return ServerMetadata{Name: m.GetName(), Version: m.GetVersion(), Extensions: m.GetExtensions()}
}

// RepositoryIndexToProto converts a repository index.
func RepositoryIndexToProto(ms []RepositoryModel) *pb.RepositoryIndexResponse {
	out := &pb.RepositoryIndexResponse{Models: make([]*pb.RepositoryIndexResponse_ModelIndex, len(ms))}
	for i, m := range ms {
		out.Models[i] = &pb.RepositoryIndexResponse_ModelIndex{Name: m.Name, Version: m.Version, State: m.State, Reason: m.Reason}
	}
	return out
}

// RepositoryIndexFromProto converts a repository index.
func RepositoryIndexFromProto(m *pb.RepositoryIndexResponse) []RepositoryModel {
	out := make([]RepositoryModel, len(m.GetModels()))
	for i, e := range m.GetModels() {
		out[i] = RepositoryModel{Name: e.GetName(), Version: e.GetVersion(), State: e.GetState(), Reason: e.GetReason()}
	}
	return out
}
