package oip

import (
	"encoding/json"
	"math/rand/v2"
	"strconv"
	"testing"

	"google.golang.org/protobuf/proto"

	pb "github.com/switchyard-dev/switchyard/oip/inferencepb"
)

func benchFloats(n int) []float32 {
	r := rand.New(rand.NewPCG(1, 2))
	v := make([]float32, n)
	for i := range v {
		v[i] = r.Float32()*2 - 1
	}
	return v
}

// recommenderRequestJSON is a [1,32] FP32 request as a Python client writes
// it (float32 values printed as shortest float32 strings).
func recommenderRequestJSON() []byte {
	b := []byte(`{"id":"bench","inputs":[{"name":"features","shape":[1,32],"datatype":"FP32","data":[`)
	for i, f := range benchFloats(32) {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendFloat(b, float64(f), 'g', -1, 32)
	}
	return append(b, "]}]}"...)
}

func BenchmarkDecodeRequestJSON_FP32_1x32(b *testing.B) {
	body := recommenderRequestJSON()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeInferRequest(body, 0); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeRequestEncodingJSON_FP32_1x32 is the reflection baseline:
// encoding/json into a plain struct (no validation, no raw conversion).
func BenchmarkDecodeRequestEncodingJSON_FP32_1x32(b *testing.B) {
	body := recommenderRequestJSON()
	type input struct {
		Name     string    `json:"name"`
		Shape    []int64   `json:"shape"`
		Datatype string    `json:"datatype"`
		Data     []float32 `json:"data"`
	}
	var v struct {
		ID     string  `json:"id"`
		Inputs []input `json:"inputs"`
	}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if err := json.Unmarshal(body, &v); err != nil {
			b.Fatal(err)
		}
	}
}

func benchResponse() *InferResponse {
	return &InferResponse{ModelName: "recommender", ModelVersion: "1", ID: "bench",
		Outputs: []Tensor{NewTensor("scores", []int64{1, 100}, benchFloats(100))}}
}

func BenchmarkEncodeResponseJSON_FP32_1x100(b *testing.B) {
	resp := benchResponse()
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	for b.Loop() {
		out, _, err := AppendInferResponse(buf[:0], resp, nil)
		if err != nil {
			b.Fatal(err)
		}
		buf = out
	}
	b.SetBytes(int64(len(buf)))
}

func BenchmarkEncodeResponseEncodingJSON_FP32_1x100(b *testing.B) {
	type output struct {
		Name     string    `json:"name"`
		Datatype string    `json:"datatype"`
		Shape    []int64   `json:"shape"`
		Data     []float32 `json:"data"`
	}
	v := struct {
		ModelName    string   `json:"model_name"`
		ModelVersion string   `json:"model_version"`
		ID           string   `json:"id"`
		Outputs      []output `json:"outputs"`
	}{"recommender", "1", "bench", []output{{"scores", "FP32", []int64{1, 100}, benchFloats(100)}}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := json.Marshal(&v); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkInferRequestFromProto_FP32_1x32(b *testing.B) {
	wire, err := proto.Marshal(InferRequestToProto(&InferRequest{ModelName: "recommender",
		Inputs: []Tensor{NewTensor("features", []int64{1, 32}, benchFloats(32))}}))
	if err != nil {
		b.Fatal(err)
	}
	b.Run("raw", func(b *testing.B) {
		var m pb.ModelInferRequest
		if err := proto.Unmarshal(wire, &m); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := InferRequestFromProto(&m); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("typed", func(b *testing.B) {
		m := &pb.ModelInferRequest{ModelName: "recommender", Inputs: []*pb.ModelInferRequest_InferInputTensor{
			{Name: "features", Datatype: "FP32", Shape: []int64{1, 32}, Contents: &pb.InferTensorContents{Fp32Contents: benchFloats(32)}}}}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := InferRequestFromProto(m); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("unmarshal+convert", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var m pb.ModelInferRequest
			if err := proto.Unmarshal(wire, &m); err != nil {
				b.Fatal(err)
			}
			if _, err := InferRequestFromProto(&m); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkInferResponseToProto_FP32_1x100(b *testing.B) {
	resp := benchResponse()
	b.Run("convert", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = InferResponseToProto(resp)
		}
	})
	b.Run("convert+marshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := proto.Marshal(InferResponseToProto(resp)); err != nil {
				b.Fatal(err)
			}
		}
	})
}
