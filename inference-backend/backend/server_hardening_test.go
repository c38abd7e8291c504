package backend_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/inference-backend/backend"
	"github.com/switchyard-dev/switchyard/inference-backend/backendtest"
	"github.com/switchyard-dev/switchyard/inference-backend/demomodels"
	pb "github.com/switchyard-dev/switchyard/oip/inferencepb"
)

// A REST client that stops sending mid-body is cut off by the read
// timeout; the backend then still serves. (The 10 s client deadline only
// turns a server that never answers into a failure instead of a hang.)
func TestSlowBodyIsBounded(t *testing.T) {
	repo := t.TempDir()
	if err := demomodels.WriteRepository(repo); err != nil {
		t.Fatal(err)
	}
	s, err := backend.NewServer(backend.ServerConfig{
		Backend:  backend.Options{ModelRepository: repo, Version: "test"},
		HTTPAddr: "127.0.0.1:0", ReadTimeout: 300 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(context.Background()) })

	c, err := net.Dial("tcp", s.HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "POST /v2/models/recommender-v1/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"inputs\":")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err == nil {
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode < 400 || resp.StatusCode >= 500 {
			t.Fatalf("slow body answered %d: %s", resp.StatusCode, b)
		}
		_, err = br.ReadByte()
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the backend neither answered nor closed a connection stuck mid-body within 10 s")
	}

	good := body(jsonTensor("features", "FP32", []int{1, 32}, 32))
	code, out := postJSON(t, "http://"+s.HTTPAddr()+"/v2/models/recommender-v1/infer", good)
	if code != 200 {
		t.Fatalf("good request after a slow one: %d %s", code, out)
	}
}

// Odd REST requests: JSON errors with the right status naming the problem.
func TestBackendRESTOddRequests(t *testing.T) {
	be := backendtest.Start(t, backendtest.Options{MaxBodyBytes: maxBody})
	base := "http://" + be.HTTPAddr
	good := body(jsonTensor("features", "FP32", []int{1, 32}, 32))
	cases := []struct {
		name, method, path, body string
		hdr                      map[string]string
		code                     int
		want                     string
	}{
		{"unknown path", "GET", "/v3/x", "", nil, 404, "no such endpoint"},
		{"wrong method", "DELETE", "/v2/models/recommender-v1/infer", "", nil, 405, "not allowed"},
		{"non-UTF-8 model", "POST", "/v2/models/%FF%FE/infer", good, nil, 404, "model"},
		{"traversal model", "POST", "/v2/models/..%2F..%2Fetc%2Fpasswd/infer", good, nil, 404, "model"},
		{"header length garbage", "POST", "/v2/models/recommender-v1/infer", good, map[string]string{"Inference-Header-Content-Length": "-5"}, 400, "Inference-Header-Content-Length"},
		{"header length past the body", "POST", "/v2/models/recommender-v1/infer", good, map[string]string{"Inference-Header-Content-Length": "99999999"}, 400, ""},
		{"header length overflow", "POST", "/v2/models/recommender-v1/infer", good, map[string]string{"Inference-Header-Content-Length": "99999999999999999999999"}, 400, "Inference-Header-Content-Length"},
		{"huge shape", "POST", "/v2/models/recommender-v1/infer", `{"inputs":[{"name":"features","datatype":"FP32","shape":[4611686018427387904,4611686018427387904],"data":[1]}]}`, nil, 400, "shape"},
		{"repository load bad JSON", "POST", "/v2/repository/models/recommender-v1/load", `{"parameters":`, nil, 400, "JSON"},
		{"repository load traversal", "POST", "/v2/repository/models/..%2Fetc/load", ``, nil, 400, "invalid model name"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, base+tc.path, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tc.hdr {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.code {
				t.Fatalf("got %d, want %d: %s", resp.StatusCode, tc.code, b)
			}
			var e struct {
				Error string `json:"error"`
			}
			if err := json.Unmarshal(b, &e); err != nil || e.Error == "" || !strings.Contains(strings.ToLower(e.Error), strings.ToLower(tc.want)) {
				t.Fatalf("want a JSON error naming %q, got %s (%v)", tc.want, b, err)
			}
		})
	}
}

// gRPC requests whose fields disagree with each other.
func TestBackendGRPCInconsistentRequests(t *testing.T) {
	be := backendtest.Start(t, backendtest.Options{MaxBodyBytes: maxBody})
	cc, err := grpc.NewClient(be.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	c := pb.NewGRPCInferenceServiceClient(cc)
	in := &pb.ModelInferRequest_InferInputTensor{Name: "features", Datatype: "FP32", Shape: []int64{1, 32}}
	cases := []struct {
		name string
		req  *pb.ModelInferRequest
		want string
	}{
		{"empty request", &pb.ModelInferRequest{}, ""},
		{"raw count above inputs", &pb.ModelInferRequest{ModelName: "recommender-v1", Inputs: []*pb.ModelInferRequest_InferInputTensor{in}, RawInputContents: [][]byte{make([]byte, 128), make([]byte, 128)}}, "raw_input_contents"},
		{"raw and contents both", &pb.ModelInferRequest{ModelName: "recommender-v1", Inputs: []*pb.ModelInferRequest_InferInputTensor{{Name: "features", Datatype: "FP32", Shape: []int64{1, 32},
			Contents: &pb.InferTensorContents{Fp32Contents: make([]float32, 32)}}}, RawInputContents: [][]byte{make([]byte, 128)}}, "features"},
		{"shape overflowing int64", &pb.ModelInferRequest{ModelName: "recommender-v1", Inputs: []*pb.ModelInferRequest_InferInputTensor{{Name: "features", Datatype: "FP32", Shape: []int64{1 << 62, 1 << 62, 1 << 62}}},
			RawInputContents: [][]byte{make([]byte, 128)}}, "shape"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.ModelInfer(context.Background(), tc.req)
			st, _ := status.FromError(err)
			if st.Code() != codes.InvalidArgument && st.Code() != codes.NotFound {
				t.Fatalf("code %v, want InvalidArgument or NotFound: %v", st.Code(), err)
			}
			if !strings.Contains(strings.ToLower(st.Message()), strings.ToLower(tc.want)) {
				t.Fatalf("message %q does not name %q", st.Message(), tc.want)
			}
		})
	}
}
