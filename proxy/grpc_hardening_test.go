package proxy

import (
	"context"
	"encoding/binary"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/inference-backend/backendtest"
	pb "github.com/switchyard-dev/switchyard/oip/inferencepb"
)

// Adversarial ModelInfer requests through the proxy's gRPC front-end, to an
// HTTP upstream (v1) and a gRPC upstream (v3): each gets the right code and
// a message naming the problem; the proxy keeps serving.
func TestGRPCFrontHardening(t *testing.T) {
	be := backendtest.Start(t, backendtest.Options{})
	p := startProxy(t, Config{Models: []api.Model{demoModel(be, map[string]int{"v1": 100})}, MaxBodyBytes: 64 << 10})
	cc, err := grpc.NewClient(p.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := pb.NewGRPCInferenceServiceClient(cc)

	f32 := func(n int) []byte { return make([]byte, 4*n) }
	in := func(name, dt string, shape ...int64) *pb.ModelInferRequest_InferInputTensor {
		return &pb.ModelInferRequest_InferInputTensor{Name: name, Datatype: dt, Shape: shape}
	}
	req := func(raw [][]byte, inputs ...*pb.ModelInferRequest_InferInputTensor) *pb.ModelInferRequest {
		return &pb.ModelInferRequest{ModelName: "recommender", Inputs: inputs, RawInputContents: raw}
	}
	bytesRaw := binary.LittleEndian.AppendUint32(nil, 1000) // declares 1000 bytes, has none

	cases := []struct {
		name string
		req  *pb.ModelInferRequest
		code codes.Code
		want string
	}{
		{"empty request", &pb.ModelInferRequest{}, codes.NotFound, "known models: recommender"},
		{"unknown model", &pb.ModelInferRequest{ModelName: "../etc/passwd\x00"}, codes.NotFound, "known models: recommender"},
		{"unknown version", &pb.ModelInferRequest{ModelName: "recommender", ModelVersion: "v9"}, codes.NotFound, "v9"},
		{"no inputs", req(nil), codes.InvalidArgument, "input"},
		{"raw count above inputs", req([][]byte{f32(32), f32(32)}, in("features", "FP32", 1, 32)), codes.InvalidArgument, "raw_input_contents"},
		{"no data at all", req(nil, in("features", "FP32", 1, 32)), codes.InvalidArgument, "features"},
		{"huge declared shape", req([][]byte{f32(32)}, in("features", "FP32", 1<<40, 1<<40)), codes.InvalidArgument, "shape"},
		{"shape overflowing int64", req([][]byte{f32(32)}, in("features", "FP32", 1<<62, 1<<62, 1<<62)), codes.InvalidArgument, "shape"},
		{"negative dimension", req([][]byte{f32(32)}, in("features", "FP32", -1, 32)), codes.InvalidArgument, "shape"},
		{"unknown datatype", req([][]byte{f32(32)}, in("features", "FP99", 1, 32)), codes.InvalidArgument, "FP99"},
		{"empty datatype", req([][]byte{f32(32)}, in("features", "", 1, 32)), codes.InvalidArgument, "datatype"},
		{"wrong datatype for the model", req([][]byte{make([]byte, 8*32)}, in("features", "FP64", 1, 32)), codes.InvalidArgument, "FP64"},
		{"raw shorter than shape", req([][]byte{f32(31)}, in("features", "FP32", 1, 32)), codes.InvalidArgument, "bytes"},
		{"wrong shape for the model", req([][]byte{f32(3)}, in("features", "FP32", 1, 3)), codes.InvalidArgument, "features"},
		{"unknown input name", req([][]byte{f32(32)}, in("nope", "FP32", 1, 32)), codes.InvalidArgument, "nope"},
		{"duplicate input", req([][]byte{f32(32), f32(32)}, in("features", "FP32", 1, 32), in("features", "FP32", 1, 32)), codes.InvalidArgument, "features"},
		{"contents of the wrong type", req(nil, &pb.ModelInferRequest_InferInputTensor{Name: "features", Datatype: "FP32", Shape: []int64{1, 2},
			Contents: &pb.InferTensorContents{IntContents: []int32{1, 2}}}), codes.InvalidArgument, "features"},
		{"contents count wrong", req(nil, &pb.ModelInferRequest_InferInputTensor{Name: "features", Datatype: "FP32", Shape: []int64{1, 32},
			Contents: &pb.InferTensorContents{Fp32Contents: []float32{1}}}), codes.InvalidArgument, "features"},
		{"truncated BYTES element", req([][]byte{bytesRaw}, in("features", "BYTES", 1)), codes.InvalidArgument, "BYTES"},
		{"unknown requested output", &pb.ModelInferRequest{ModelName: "recommender", Inputs: []*pb.ModelInferRequest_InferInputTensor{in("features", "FP32", 1, 32)},
			RawInputContents: [][]byte{f32(32)}, Outputs: []*pb.ModelInferRequest_InferRequestedOutputTensor{{Name: "nope"}}}, codes.InvalidArgument, "nope"},
		{"over the size limit", req([][]byte{f32(32 << 10)}, in("features", "FP32", 1, 32<<10)), codes.ResourceExhausted, "larger than max"},
	}
	for _, variant := range []string{"v1", "v3"} {
		for _, tc := range cases {
			t.Run(variant+"/"+tc.name, func(t *testing.T) {
				ctx := metadata.AppendToOutgoingContext(context.Background(), "x-switchyard-variant", variant)
				_, err := client.ModelInfer(ctx, tc.req)
				st, _ := status.FromError(err)
				if st.Code() != tc.code {
					t.Fatalf("code %v, want %v: %v", st.Code(), tc.code, err)
				}
				if !strings.Contains(strings.ToLower(st.Message()), strings.ToLower(tc.want)) {
					t.Fatalf("message %q does not name %q", st.Message(), tc.want)
				}
			})
		}
	}

	t.Run("metadata and readiness of unknown models", func(t *testing.T) {
		_, err := client.ModelMetadata(context.Background(), &pb.ModelMetadataRequest{Name: "a/../ünïcode"})
		if st, _ := status.FromError(err); st.Code() != codes.NotFound || !strings.Contains(st.Message(), "recommender") {
			t.Fatalf("metadata: %v", err)
		}
		// Triton's answer for an unknown model or version (tritonclient's
		// is_model_ready expects it): OK, ready false (issue 17).
		r, err := client.ModelReady(context.Background(), &pb.ModelReadyRequest{Name: "recommender", Version: "v9"})
		if err != nil || r.GetReady() {
			t.Fatalf("ready of an unknown version: %v, %v; want OK, ready false", r, err)
		}
	})

	// The proxy still answers a good request.
	good := req([][]byte{f32(32)}, in("features", "FP32", 1, 32))
	if _, err := client.ModelInfer(context.Background(), good); err != nil {
		t.Fatalf("good request after bad ones: %v", err)
	}
}
