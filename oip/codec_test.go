package oip

import (
	"bytes"
	"encoding/json"
	"math"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/protobuf/proto"

	pb "github.com/switchyard-dev/switchyard/oip/inferencepb"
)

// sampleTensors holds one [2,3] tensor of every datatype with values at the
// edges of each type's range.
func sampleTensors() []Tensor {
	shape := []int64{2, 3}
	half := func(fs ...float32) Tensor {
		raw := make([]byte, 0, 2*len(fs))
		for _, f := range fs {
			h := Float32ToHalf(f)
			raw = append(raw, byte(h), byte(h>>8))
		}
		return Tensor{Name: "fp16", Datatype: FP16, Shape: shape, Raw: raw}
	}
	return []Tensor{
		NewTensor("bool", shape, []bool{true, false, true, true, false, false}),
		NewTensor("uint8", shape, []uint8{0, 1, 2, 127, 128, 255}),
		NewTensor("uint16", shape, []uint16{0, 1, 300, 32767, 32768, 65535}),
		NewTensor("uint32", shape, []uint32{0, 1, 70000, 1 << 31, 1<<32 - 2, math.MaxUint32}),
		NewTensor("uint64", shape, []uint64{0, 1, 1 << 40, 1 << 63, math.MaxUint64 - 1, math.MaxUint64}),
		NewTensor("int8", shape, []int8{-128, -1, 0, 1, 100, 127}),
		NewTensor("int16", shape, []int16{-32768, -1, 0, 1, 1000, 32767}),
		NewTensor("int32", shape, []int32{math.MinInt32, -1, 0, 1, 123456, math.MaxInt32}),
		NewTensor("int64", shape, []int64{math.MinInt64, -1, 0, 1, 1 << 53, math.MaxInt64}),
		half(0, -1.5, 0.333251953125, 65504, -65504, 6.1035156e-05),
		NewTensor("fp32", shape, []float32{0, -1.5, 0.1, 3.4028235e38, -1.17549435e-38, 1.0000001}),
		NewTensor("fp64", shape, []float64{0, -1.5, 0.1, math.MaxFloat64, math.SmallestNonzeroFloat64, 1.0000000000000002}),
		NewBytesTensor("bytes", shape, [][]byte{[]byte("a"), {}, []byte("quote\" back\\ nl\n"), []byte("ünïcødé ☃"), []byte("\x01ctl"), []byte("x")}),
	}
}

var cmpTensor = cmpopts.EquateEmpty()

func TestJSONRoundTripEveryDatatype(t *testing.T) {
	for _, tensor := range sampleTensors() {
		t.Run(string(tensor.Datatype), func(t *testing.T) {
			for _, binary := range []bool{false, true} {
				req := &InferRequest{ID: "r1", Inputs: []Tensor{tensor}, Parameters: map[string]any{"p": int64(3)}}
				body, hl, err := AppendInferRequest(nil, req, binary)
				if err != nil {
					t.Fatal(err)
				}
				if !binary {
					if hl != len(body) {
						t.Fatalf("headerLen %d, body %d", hl, len(body))
					}
					if !json.Valid(body) {
						t.Fatalf("not valid JSON: %s", body)
					}
				}
				got, err := DecodeInferRequest(body, hl)
				if err != nil {
					t.Fatalf("binary=%v: decode %s: %v", binary, body, err)
				}
				if diff := cmp.Diff(req, got, cmpTensor); diff != "" {
					t.Errorf("binary=%v: request round trip (-want +got):\n%s", binary, diff)
				}

				resp := &InferResponse{ModelName: "m", ModelVersion: "2", ID: "r1", Outputs: []Tensor{tensor}}
				var asker *InferRequest
				if binary {
					asker = &InferRequest{Parameters: map[string]any{ParamBinaryDataOutput: true}}
				}
				body, hl, err = AppendInferResponse(nil, resp, asker)
				if err != nil {
					t.Fatal(err)
				}
				if (hl != len(body)) != binary {
					t.Fatalf("binary=%v: headerLen %d of %d", binary, hl, len(body))
				}
				gotResp, err := DecodeInferResponse(body, hl)
				if err != nil {
					t.Fatalf("decode response %s: %v", body, err)
				}
				if diff := cmp.Diff(resp, gotResp, cmpTensor); diff != "" {
					t.Errorf("binary=%v: response round trip (-want +got):\n%s", binary, diff)
				}
			}
		})
	}
}

func TestProtoRoundTripEveryDatatype(t *testing.T) {
	for _, tensor := range sampleTensors() {
		t.Run(string(tensor.Datatype), func(t *testing.T) {
			req := &InferRequest{ModelName: "m", ModelVersion: "1", ID: "x", Inputs: []Tensor{tensor},
				Outputs:    []RequestedOutput{{Name: "o", Parameters: map[string]any{"binary_data": true}}},
				Parameters: map[string]any{"b": true, "i": int64(-2), "s": "v", "d": 0.5, "u": uint64(math.MaxUint64)}}
			// raw contents, through the wire format
			wire, err := proto.Marshal(InferRequestToProto(req))
			if err != nil {
				t.Fatal(err)
			}
			var m pb.ModelInferRequest
			if err := proto.Unmarshal(wire, &m); err != nil {
				t.Fatal(err)
			}
			got, err := InferRequestFromProto(&m)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(req, got, cmpTensor); diff != "" {
				t.Errorf("raw request round trip (-want +got):\n%s", diff)
			}

			// typed contents (every datatype but FP16)
			typed := InferRequestToProto(req)
			c, err := TensorContents(&tensor)
			if tensor.Datatype == FP16 {
				if err == nil {
					t.Fatal("FP16 typed contents: want error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			typed.RawInputContents = nil
			typed.Inputs[0].Contents = c
			got, err = InferRequestFromProto(typed)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(req, got, cmpTensor); diff != "" {
				t.Errorf("typed request round trip (-want +got):\n%s", diff)
			}

			resp := &InferResponse{ModelName: "m", ModelVersion: "1", Outputs: []Tensor{tensor}}
			mr := InferResponseToProto(resp)
			if len(mr.RawOutputContents) != 1 || mr.Outputs[0].Contents != nil {
				t.Fatal("responses must use raw_output_contents")
			}
			gotResp, err := InferResponseFromProto(mr)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(resp, gotResp, cmpTensor); diff != "" {
				t.Errorf("response round trip (-want +got):\n%s", diff)
			}
			mr.RawOutputContents = nil
			mr.Outputs[0].Contents = c
			gotResp, err = InferResponseFromProto(mr)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(resp, gotResp, cmpTensor); diff != "" {
				t.Errorf("typed response round trip (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecodeNestedData(t *testing.T) {
	tests := map[string]struct {
		body string
		want Tensor
	}{
		"flat": {`{"inputs":[{"name":"x","shape":[2,2],"datatype":"INT32","data":[1,2,3,4]}]}`,
			NewTensor("x", []int64{2, 2}, []int32{1, 2, 3, 4})},
		"nested": {`{"inputs":[{"name":"x","shape":[2,2],"datatype":"INT32","data":[[1,2],[3,4]]}]}`,
			NewTensor("x", []int64{2, 2}, []int32{1, 2, 3, 4})},
		"nested3": {`{"inputs":[{"name":"x","shape":[1,2,2],"datatype":"FP32","data":[[[1.5,2],[3,4e-2]]]}]}`,
			NewTensor("x", []int64{1, 2, 2}, []float32{1.5, 2, 3, 0.04})},
		"data before shape and datatype": {`{"inputs":[{"data":[[true],[false]],"name":"x","datatype":"BOOL","shape":[2,1]}]}`,
			NewTensor("x", []int64{2, 1}, []bool{true, false})},
		"scalar": {`{"inputs":[{"name":"x","shape":[],"datatype":"INT64","data":[-7]}]}`,
			NewTensor("x", []int64{}, []int64{-7})},
		"empty": {`{"inputs":[{"name":"x","shape":[0,3],"datatype":"FP32","data":[]}]}`,
			Tensor{Name: "x", Datatype: FP32, Shape: []int64{0, 3}, Raw: []byte{}}},
		"whitespace and escapes": {" {\n \"inputs\" : [ { \"name\" : \"x\\u00e9\" , \"shape\" : [ 2 ] , \"datatype\" : \"BYTES\" , \"data\" : [ \"a\\tb\" , \"\\ud83d\\ude00\" ] } ] } \n",
			NewBytesTensor("xé", []int64{2}, [][]byte{[]byte("a\tb"), []byte("😀")})},
		"unknown fields skipped": {`{"extra":{"a":[1,{"b":null}]},"inputs":[{"name":"x","shape":[1],"datatype":"UINT8","data":[255],"more":"x"}]}`,
			NewTensor("x", []int64{1}, []uint8{255})},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := DecodeInferRequest([]byte(tc.body), 0)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff([]Tensor{tc.want}, got.Inputs, cmpTensor); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecodeRequestParametersAndOutputs(t *testing.T) {
	body := `{"id":"abc","parameters":{"s":"v","b":false,"i":-3,"u":18446744073709551615,"f":1.5},
	  "inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1],"parameters":{"content_type":"np"}}],
	  "outputs":[{"name":"y","parameters":{"binary_data":true}},{"name":"z"}]}`
	got, err := DecodeInferRequest([]byte(body), 0)
	if err != nil {
		t.Fatal(err)
	}
	want := &InferRequest{ID: "abc",
		Parameters: map[string]any{"s": "v", "b": false, "i": int64(-3), "u": uint64(math.MaxUint64), "f": 1.5},
		Inputs:     []Tensor{{Name: "x", Datatype: FP32, Shape: []int64{1}, Raw: NewTensor("", nil, []float32{1}).Raw, Parameters: map[string]any{"content_type": "np"}}},
		Outputs:    []RequestedOutput{{Name: "y", Parameters: map[string]any{"binary_data": true}}, {Name: "z"}},
	}
	if diff := cmp.Diff(want, got, cmpTensor); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if !WantsBinaryOutput(got, "y") || WantsBinaryOutput(got, "z") {
		t.Error("WantsBinaryOutput: y binary, z JSON expected")
	}
}

func TestDecodeRequestBadInput(t *testing.T) {
	in := func(fields string) string { return `{"inputs":[{` + fields + `}]}` }
	tests := map[string]struct {
		body    string
		wantMsg string // substring of the error
	}{
		"empty body":               {``, "malformed JSON"},
		"malformed JSON":           {`{"inputs":[`, "malformed JSON"},
		"trailing garbage":         {`{"inputs":[]} x`, "malformed JSON"},
		"not an object":            {`[1]`, "request: must be an object"},
		"missing inputs":           {`{"id":"a"}`, "inputs: missing"},
		"inputs not array":         {`{"inputs":{}}`, "inputs: must be an array"},
		"id not string":            {`{"id":5,"inputs":[]}`, "id: must be a string"},
		"missing name":             {in(`"shape":[1],"datatype":"FP32","data":[1]`), "inputs[0].name: missing"},
		"missing shape":            {in(`"name":"x","datatype":"FP32","data":[1]`), "inputs[0] (\"x\").shape: missing"},
		"missing datatype":         {in(`"name":"x","shape":[1],"data":[1]`), "inputs[0] (\"x\").datatype: missing"},
		"missing data":             {in(`"name":"x","shape":[1],"datatype":"FP32"`), "inputs[0] (\"x\").data: missing"},
		"wrong dtype name":         {in(`"name":"x","shape":[1],"datatype":"FLOAT32","data":[1]`), `inputs[0] ("x").datatype: unknown datatype "FLOAT32"`},
		"dtype not string":         {in(`"name":"x","shape":[1],"datatype":7,"data":[1]`), "inputs[0] (\"x\").datatype: must be a string"},
		"negative dim":             {in(`"name":"x","shape":[1,-2],"datatype":"FP32","data":[1]`), "inputs[0] (\"x\").shape[1]: -2; dimensions must be >= 0"},
		"fractional dim":           {in(`"name":"x","shape":[1.5],"datatype":"FP32","data":[1]`), "inputs[0] (\"x\").shape[0]: 1.5 is not an integer"},
		"string dim":               {in(`"name":"x","shape":["1"],"datatype":"FP32","data":[1]`), "inputs[0] (\"x\").shape[0]: expected an integer, found a string"},
		"huge shape":               {in(`"name":"x","shape":[100000,100000,100000],"datatype":"FP32","data":[1]`), "inputs[0] (\"x\").shape: shape"},
		"too few elements":         {in(`"name":"x","shape":[2,2],"datatype":"FP32","data":[1,2,3]`), "inputs[0] (\"x\").data: shape [2 2] needs 4 elements, data has 3"},
		"too many elements":        {in(`"name":"x","shape":[1],"datatype":"FP32","data":[1,2]`), "inputs[0] (\"x\").data: shape [1] needs 1 elements, data has 2"},
		"nested dims mismatch":     {in(`"name":"x","shape":[3,2],"datatype":"FP32","data":[[1,2,3],[4,5,6]]`), "does not match shape [3 2]"},
		"ragged":                   {in(`"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,2],[3]]`), "ragged"},
		"mixed levels":             {in(`"name":"x","shape":[2],"datatype":"FP32","data":[1,[2]]`), "mixed"},
		"mixed levels 2":           {in(`"name":"x","shape":[2],"datatype":"FP32","data":[[1],2]`), "mixed"},
		"data not array":           {in(`"name":"x","shape":[1],"datatype":"FP32","data":1`), "inputs[0] (\"x\").data: must be an array"},
		"uint8 out of range":       {in(`"name":"x","shape":[2],"datatype":"UINT8","data":[1,256]`), "inputs[0] (\"x\").data[1]: 256 is out of range for UINT8"},
		"uint negative":            {in(`"name":"x","shape":[1],"datatype":"UINT32","data":[-1]`), "inputs[0] (\"x\").data[0]: -1 is out of range for UINT32"},
		"int8 out of range":        {in(`"name":"x","shape":[1,2],"datatype":"INT8","data":[[1,-129]]`), "inputs[0] (\"x\").data[0][1]: -129 is out of range for INT8"},
		"int64 out of range":       {in(`"name":"x","shape":[1],"datatype":"INT64","data":[9223372036854775808]`), "out of range for INT64"},
		"uint64 overflow":          {in(`"name":"x","shape":[1],"datatype":"UINT64","data":[18446744073709551616]`), "out of range"},
		"int not integer":          {in(`"name":"x","shape":[1],"datatype":"INT32","data":[1.5]`), "inputs[0] (\"x\").data[0]: 1.5 is not an integer"},
		"fp32 overflow":            {in(`"name":"x","shape":[1],"datatype":"FP32","data":[1e39]`), "1e39 is out of range for FP32"},
		"fp16 overflow":            {in(`"name":"x","shape":[1],"datatype":"FP16","data":[70000]`), "out of range for FP16"},
		"NaN rejected":             {in(`"name":"x","shape":[1],"datatype":"FP32","data":[NaN]`), "inputs[0] (\"x\").data[0]: expected a number"},
		"Infinity rejected":        {in(`"name":"x","shape":[1],"datatype":"FP64","data":[Infinity]`), "expected a number"},
		"string as number":         {in(`"name":"x","shape":[1],"datatype":"FP32","data":["1"]`), "expected a number, found a string"},
		"bool as number":           {in(`"name":"x","shape":[1],"datatype":"FP32","data":[true]`), "expected a number, found a boolean"},
		"number as bool":           {in(`"name":"x","shape":[1],"datatype":"BOOL","data":[1]`), "expected true or false"},
		"number as bytes":          {in(`"name":"x","shape":[1],"datatype":"BYTES","data":[1]`), "expected a string"},
		"null element":             {in(`"name":"x","shape":[1],"datatype":"INT32","data":[null]`), "found null"},
		"leading zero":             {in(`"name":"x","shape":[1],"datatype":"INT32","data":[01]`), "malformed JSON"},
		"plus sign":                {in(`"name":"x","shape":[1],"datatype":"FP32","data":[+1]`), "expected a number"},
		"duplicate input":          {`{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]},{"name":"x","shape":[1],"datatype":"FP32","data":[1]}]}`, `inputs[1].name: duplicate input "x"`},
		"output without name":      {`{"inputs":[],"outputs":[{}]}`, "outputs[0].name: missing"},
		"param object":             {`{"inputs":[],"parameters":{"a":{}}}`, "parameters.a: must be a string, number or boolean"},
		"data and binary":          {in(`"name":"x","shape":[1],"datatype":"FP32","data":[1],"parameters":{"binary_data_size":4}`), "both data and"},
		"binary short":             {in(`"name":"x","shape":[1],"datatype":"FP32","parameters":{"binary_data_size":4}`), "binary_data_size: 4 bytes wanted, 0 bytes"},
		"control char in string":   {"{\"inputs\":[],\"id\":\"a\x01\"}", "control character"},
		"deep nesting":             {`{"x":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `,"inputs":[]}`, "nesting too deep"},
		"deep data nesting":        {in(`"name":"x","shape":[1],"datatype":"FP32","data":` + strings.Repeat("[", 100) + "1" + strings.Repeat("]", 100)), "nested more than"},
		"unterminated string":      {`{"inputs":[],"id":"abc`, "malformed JSON"},
		"bad escape":               {`{"inputs":[],"id":"\q"}`, "bad escape"},
		"missing colon":            {`{"inputs" []}`, "expected ':'"},
		"bad literal":              {in(`"name":"x","shape":[1],"datatype":"BOOL","data":[tru]`), "expected true or false"},
		"shape not array":          {in(`"name":"x","shape":1,"datatype":"FP32","data":[1]`), "inputs[0] (\"x\").shape: must be an array"},
		"data given twice":         {in(`"name":"x","shape":[1],"datatype":"FP32","data":[1],"data":[2]`), "inputs[0] (\"x\").data: given twice"},
		"second input bad":         {`{"inputs":[{"name":"a","shape":[1],"datatype":"FP32","data":[1]},{"name":"b","shape":[1],"datatype":"INT16","data":[40000]}]}`, "inputs[1] (\"b\").data[0]: 40000 is out of range for INT16"},
		"empty name":               {in(`"name":"","shape":[1],"datatype":"FP32","data":[1]`), "inputs[0].name: missing"},
		"float fraction malformed": {in(`"name":"x","shape":[1],"datatype":"FP32","data":[1.]`), "expected a number"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := DecodeInferRequest([]byte(tc.body), 0)
			if err == nil {
				t.Fatalf("want error containing %q, got none", tc.wantMsg)
			}
			if CodeOf(err) != InvalidArgument {
				t.Errorf("code %v, want InvalidArgument", CodeOf(err))
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("error %q does not contain %q", err, tc.wantMsg)
			}
		})
	}
}

func TestBinaryExtensionMixed(t *testing.T) {
	// One input in JSON, one binary, as Triton clients send them.
	a := NewTensor("a", []int64{2}, []float32{1, 2})
	bt := NewTensor("b", []int64{3}, []int16{-1, 0, 1})
	hdr := `{"inputs":[{"name":"a","shape":[2],"datatype":"FP32","data":[1,2]},` +
		`{"name":"b","shape":[3],"datatype":"INT16","parameters":{"binary_data_size":6}}],` +
		`"outputs":[{"name":"y","parameters":{"binary_data":true}}]}`
	body := append([]byte(hdr), bt.Raw...)
	got, err := DecodeInferRequest(body, len(hdr))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]Tensor{a, bt}, got.Inputs, cmpTensor); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	// Decoded data never aliases the body.
	body[len(body)-1] ^= 0xff
	if !bytes.Equal(got.Inputs[1].Raw, bt.Raw) {
		t.Error("decoded binary data aliases the body")
	}
	// Leftover binary data is an error.
	if _, err := DecodeInferRequest(append([]byte(hdr), append(bt.Raw, 0)...), len(hdr)); err == nil || !strings.Contains(err.Error(), "binary data: 7 bytes") {
		t.Errorf("leftover: got %v", err)
	}
	if _, err := DecodeInferRequest([]byte(hdr), len(hdr)+10); err == nil || CodeOf(err) != InvalidArgument {
		t.Errorf("header length beyond body: got %v", err)
	}
	// The response answers y in binary and z in JSON.
	y := NewTensor("y", []int64{2}, []float32{0.5, -0.25})
	z := NewTensor("z", []int64{1}, []int64{7})
	out, hl, err := AppendInferResponse(nil, &InferResponse{ModelName: "m", Outputs: []Tensor{y, z}}, got)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out[hl:], y.Raw) {
		t.Errorf("binary part %x, want %x", out[hl:], y.Raw)
	}
	if !json.Valid(out[:hl]) || !bytes.Contains(out[:hl], []byte(`"binary_data_size":8`)) || !bytes.Contains(out[:hl], []byte(`"data":[7]`)) {
		t.Errorf("header %s", out[:hl])
	}
}

func TestEncodeResponseFormat(t *testing.T) {
	resp := &InferResponse{ModelName: "m", ModelVersion: "1", ID: "q\"1",
		Outputs: []Tensor{NewTensor("y", []int64{1, 3}, []float32{0.1, 1e-7, 3e38})}}
	out, _, err := AppendInferResponse([]byte("prefix"), resp, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := `prefix{"model_name":"m","model_version":"1","id":"q\"1","outputs":[{"name":"y","datatype":"FP32","shape":[1,3],"data":[0.1,1e-07,3e+38]}]}`
	if string(out) != want {
		t.Errorf("got  %s\nwant %s", out, want)
	}
	// encoding/json agrees it is JSON, and the float32 values round-trip.
	var v struct {
		Outputs []struct{ Data []float32 }
	}
	if err := json.Unmarshal(out[len("prefix"):], &v); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]float32{0.1, 1e-7, 3e38}, v.Outputs[0].Data); diff != "" {
		t.Error(diff)
	}
}

func TestEncodeResponseNaN(t *testing.T) {
	resp := &InferResponse{ModelName: "m", Outputs: []Tensor{NewTensor("y", []int64{2}, []float32{1, float32(math.NaN())})}}
	_, _, err := AppendInferResponse(nil, resp, nil)
	if err == nil || CodeOf(err) != Internal || !strings.Contains(err.Error(), `outputs[0] ("y"): element 1 is NaN`) {
		t.Fatalf("got %v", err)
	}
	// Binary output carries NaN fine.
	out, hl, err := AppendInferResponse(nil, resp, &InferRequest{Parameters: map[string]any{ParamBinaryDataOutput: true}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeInferResponse(out, hl)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Outputs[0].HasNaNOrInf() {
		t.Error("NaN lost")
	}
	// Responses from other servers that write NaN tokens are read.
	got, err = DecodeInferResponse([]byte(`{"model_name":"m","outputs":[{"name":"y","shape":[3],"datatype":"FP32","data":[NaN,Infinity,-Infinity]}]}`), 0)
	if err != nil {
		t.Fatal(err)
	}
	f := View[float32](got.Outputs[0].Raw)
	if !math.IsNaN(float64(f[0])) || !math.IsInf(float64(f[1]), 1) || !math.IsInf(float64(f[2]), -1) {
		t.Errorf("got %v", f)
	}
}

func TestEncodeRejectsInvalidTensor(t *testing.T) {
	bad := Tensor{Name: "y", Datatype: FP32, Shape: []int64{2}, Raw: make([]byte, 4)}
	if _, _, err := AppendInferResponse(nil, &InferResponse{Outputs: []Tensor{bad}}, nil); err == nil || !strings.Contains(err.Error(), `tensor "y"`) {
		t.Errorf("response: got %v", err)
	}
	if _, _, err := AppendInferRequest(nil, &InferRequest{Inputs: []Tensor{bad}}, false); err == nil || CodeOf(err) != InvalidArgument {
		t.Errorf("request: got %v", err)
	}
}

func TestProtoBadInput(t *testing.T) {
	fp := func(shape []int64, c *pb.InferTensorContents) *pb.ModelInferRequest {
		return &pb.ModelInferRequest{ModelName: "m", Inputs: []*pb.ModelInferRequest_InferInputTensor{{Name: "x", Datatype: "FP32", Shape: shape, Contents: c}}}
	}
	tests := map[string]struct {
		m       *pb.ModelInferRequest
		wantMsg string
	}{
		"length mismatch": {fp([]int64{3}, &pb.InferTensorContents{Fp32Contents: []float32{1, 2}}), `inputs[0]: tensor "x": shape [3] of FP32 needs 12 bytes`},
		"wrong field":     {fp([]int64{1}, &pb.InferTensorContents{IntContents: []int32{1}}), `inputs[0] ("x").contents: FP32 data belongs in fp32_contents, found int_contents`},
		"bad dtype": {&pb.ModelInferRequest{Inputs: []*pb.ModelInferRequest_InferInputTensor{{Name: "x", Datatype: "float"}}},
			`inputs[0] ("x").datatype: unknown datatype "float"`},
		"no name": {&pb.ModelInferRequest{Inputs: []*pb.ModelInferRequest_InferInputTensor{{Datatype: "FP32"}}}, "inputs[0].name: missing"},
		"raw count": {&pb.ModelInferRequest{Inputs: []*pb.ModelInferRequest_InferInputTensor{{Name: "x", Datatype: "FP32", Shape: []int64{1}}},
			RawInputContents: [][]byte{{0, 0, 0, 0}, {}}}, "raw_input_contents has 2 entries for 1 inputs"},
		"raw and typed": {&pb.ModelInferRequest{Inputs: []*pb.ModelInferRequest_InferInputTensor{{Name: "x", Datatype: "FP32", Shape: []int64{1}, Contents: &pb.InferTensorContents{}}},
			RawInputContents: [][]byte{{0, 0, 0, 0}}}, "contents set while raw_input_contents is used"},
		"raw short": {&pb.ModelInferRequest{Inputs: []*pb.ModelInferRequest_InferInputTensor{{Name: "x", Datatype: "INT64", Shape: []int64{2}}},
			RawInputContents: [][]byte{make([]byte, 15)}}, `tensor "x": shape [2] of INT64 needs 16 bytes (2 elements), data has 15 bytes`},
		"int8 range": {&pb.ModelInferRequest{Inputs: []*pb.ModelInferRequest_InferInputTensor{{Name: "x", Datatype: "INT8", Shape: []int64{1}, Contents: &pb.InferTensorContents{IntContents: []int32{200}}}}},
			"element 0: 200 is out of range for INT8"},
		"uint16 range": {&pb.ModelInferRequest{Inputs: []*pb.ModelInferRequest_InferInputTensor{{Name: "x", Datatype: "UINT16", Shape: []int64{1}, Contents: &pb.InferTensorContents{UintContents: []uint32{70000}}}}},
			"70000 is out of range for UINT16"},
		"fp16 typed": {&pb.ModelInferRequest{Inputs: []*pb.ModelInferRequest_InferInputTensor{{Name: "x", Datatype: "FP16", Shape: []int64{1}, Contents: &pb.InferTensorContents{Fp32Contents: []float32{1}}}}},
			"FP16 data must travel as raw contents"},
		"bytes truncated": {&pb.ModelInferRequest{Inputs: []*pb.ModelInferRequest_InferInputTensor{{Name: "x", Datatype: "BYTES", Shape: []int64{1}}},
			RawInputContents: [][]byte{{5, 0, 0, 0, 'a'}}}, "BYTES element 0 declares 5 bytes"},
		"negative dim":   {&pb.ModelInferRequest{Inputs: []*pb.ModelInferRequest_InferInputTensor{{Name: "x", Datatype: "FP32", Shape: []int64{-1}}}}, "shape[0] is -1"},
		"output no name": {&pb.ModelInferRequest{Outputs: []*pb.ModelInferRequest_InferRequestedOutputTensor{{}}}, "outputs[0].name: missing"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := InferRequestFromProto(tc.m)
			if err == nil {
				t.Fatalf("want error containing %q", tc.wantMsg)
			}
			if CodeOf(err) != InvalidArgument || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("got %v (code %v), want InvalidArgument containing %q", err, CodeOf(err), tc.wantMsg)
			}
		})
	}
}

func TestMetadataProtoRoundTrip(t *testing.T) {
	md := &ModelMetadata{Name: "m", Versions: []string{"1", "2"}, Platform: "onnxruntime_onnx",
		Inputs:  []TensorMetadata{{Name: "x", Datatype: FP32, Shape: []int64{-1, 32}}},
		Outputs: []TensorMetadata{{Name: "y", Datatype: INT64, Shape: []int64{-1}}}}
	if diff := cmp.Diff(md, ModelMetadataFromProto(ModelMetadataToProto(md))); diff != "" {
		t.Error(diff)
	}
	sm := ServerMetadata{Name: "s", Version: "1", Extensions: []string{"model_repository"}}
	if diff := cmp.Diff(sm, ServerMetadataFromProto(ServerMetadataToProto(sm))); diff != "" {
		t.Error(diff)
	}
	idx := []RepositoryModel{{Name: "a", Version: "1", State: "READY"}, {Name: "b", State: "UNAVAILABLE", Reason: "unloaded"}}
	if diff := cmp.Diff(idx, RepositoryIndexFromProto(RepositoryIndexToProto(idx))); diff != "" {
		t.Error(diff)
	}
}
