package backend_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/inference-backend/backendtest"
	"github.com/switchyard-dev/switchyard/oip"
	pb "github.com/switchyard-dev/switchyard/oip/inferencepb"
)

const maxBody = 1 << 20 // the test backend's body limit

func jsonTensor(name, dt string, shape []int, n int) map[string]any {
	data := make([]float64, n)
	for i := range data {
		data[i] = float64(i%7) / 10
		if strings.Contains(dt, "INT") {
			data[i] = float64(i % 7)
		}
	}
	return map[string]any{"name": name, "datatype": dt, "shape": shape, "data": data}
}

func body(inputs ...map[string]any) string {
	b, _ := json.Marshal(map[string]any{"inputs": inputs})
	return string(b)
}

func postJSON(t *testing.T, url, b string) (int, string) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(out)
}

// TestBadInputREST: every malformed request gets the right 4xx and a message
// naming the problem.
func TestBadInputREST(t *testing.T) {
	be := backendtest.Start(t, backendtest.Options{MaxBodyBytes: maxBody})
	base := "http://" + be.HTTPAddr
	v1 := base + "/v2/models/recommender-v1/infer"
	good := jsonTensor("features", "FP32", []int{1, 32}, 32)
	cases := []struct {
		name, url, body string
		status          int
		want            []string // substrings of the error message
	}{
		{"wrong dtype", v1, body(jsonTensor("features", "INT64", []int{1, 32}, 32)), 400, []string{`"features"`, "INT64", "FP32"}},
		{"unknown dtype", v1, body(jsonTensor("features", "FLOAT32", []int{1, 32}, 32)), 400, []string{"FLOAT32"}},
		{"wrong dim", v1, body(jsonTensor("features", "FP32", []int{1, 31}, 31)), 400, []string{`"features"`, "dimension 1 must be 32"}},
		{"wrong rank", v1, body(jsonTensor("features", "FP32", []int{32}, 32)), 400, []string{`"features"`, "rank 1", "rank 2"}},
		{"negative dim", v1, body(jsonTensor("features", "FP32", []int{-1, 32}, 32)), 400, []string{`inputs[0] ("features").shape`, ">= 0"}},
		{"missing input", v1, `{"inputs":[]}`, 400, []string{"missing input", `"features"`}},
		{"extra input", v1, body(good, jsonTensor("extra", "FP32", []int{1}, 1)), 400, []string{`"extra"`, "no input"}},
		{"duplicate input", v1, body(good, good), 400, []string{`"features"`, "duplicate"}},
		{"data shorter than shape", v1, body(jsonTensor("features", "FP32", []int{2, 32}, 32)), 400, []string{`inputs[0] ("features").data`, "64", "32"}},
		{"data longer than shape", v1, body(jsonTensor("features", "FP32", []int{1, 32}, 33)), 400, []string{`inputs[0] ("features").data`, "33"}},
		{"malformed json", v1, `{"inputs": [{"name": "features",`, 400, nil},
		{"not json", v1, `features=1`, 400, nil},
		{"over max batch size", v1, body(jsonTensor("features", "FP32", []int{65, 32}, 65*32)), 400, []string{"65", "max_batch_size 64"}},
		{"unknown output", v1, `{"inputs":[` + mustJSON(good) + `],"outputs":[{"name":"nope"}]}`, 400, []string{`"nope"`, "no output"}},
		{"unknown model", base + "/v2/models/nope/infer", body(good), 404, []string{`"nope"`}},
		{"unknown version", base + "/v2/models/recommender-v1/versions/7/infer", body(good), 404, []string{`"7"`, "served versions: 1"}},
		{"unknown model metadata", base + "/v2/models/nope", "", 404, []string{`"nope"`}},
		{"oversized body", v1, `{"inputs":[{"name":"features","datatype":"FP32","shape":[1,32],"data":[` + strings.Repeat("0.5,", maxBody/4) + `0]}]}`, 413, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var code int
			var msg string
			if c.body == "" {
				resp, err := http.Get(c.url)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				code, msg = resp.StatusCode, string(b)
			} else {
				code, msg = postJSON(t, c.url, c.body)
			}
			if code != c.status {
				t.Fatalf("status %d, want %d (body %s)", code, c.status, clipS(msg))
			}
			var e struct{ Error string }
			if err := json.Unmarshal([]byte(msg), &e); err != nil || e.Error == "" {
				t.Fatalf("error body %q is not {\"error\": ...}", clipS(msg))
			}
			for _, w := range c.want {
				if !strings.Contains(e.Error, w) {
					t.Errorf("error %q does not mention %q", e.Error, w)
				}
			}
		})
	}
	// The server is still fine afterwards.
	if code, msg := postJSON(t, v1, body(good)); code != 200 {
		t.Fatalf("good request after bad ones: %d %s", code, msg)
	}
}

// TestBadInputGRPC: the same violations over gRPC get InvalidArgument /
// NotFound with a message naming the problem.
func TestBadInputGRPC(t *testing.T) {
	be := backendtest.Start(t, backendtest.Options{MaxBodyBytes: maxBody})
	gc := dialGRPC(t, be)
	ctx := context.Background()
	feat := func(shape []int64, n int) oip.Tensor {
		return oip.NewTensor("features", shape, make([]float32, n))
	}
	cases := []struct {
		name string
		req  *pb.ModelInferRequest
		code codes.Code
		want []string
	}{
		{"wrong dtype", req("recommender-v1", oip.NewTensor("features", []int64{1, 32}, make([]int64, 32))), codes.InvalidArgument, []string{`"features"`, "INT64", "FP32"}},
		{"wrong dim", req("recommender-v1", feat([]int64{1, 31}, 31)), codes.InvalidArgument, []string{"dimension 1 must be 32"}},
		{"wrong rank", req("recommender-v1", feat([]int64{1, 1, 32}, 32)), codes.InvalidArgument, []string{"rank 3"}},
		{"missing input", req("recommender-v1"), codes.InvalidArgument, []string{"features"}},
		{"extra input", req("recommender-v1", feat([]int64{1, 32}, 32), oip.NewTensor("extra", []int64{1}, []float32{1})), codes.InvalidArgument, []string{`"extra"`}},
		{"data length != shape", req("recommender-v1", oip.Tensor{Name: "features", Datatype: oip.FP32, Shape: []int64{2, 32}, Raw: make([]byte, 4*32)}), codes.InvalidArgument, []string{"features"}},
		{"unknown model", req("nope", feat([]int64{1, 32}, 32)), codes.NotFound, []string{`"nope"`}},
		{"unknown version", func() *pb.ModelInferRequest {
			r := req("recommender-v1", feat([]int64{1, 32}, 32))
			r.ModelVersion = "9"
			return r
		}(), codes.NotFound, []string{`"9"`}},
		{"oversized message", req("recommender-v1", feat([]int64{64, 32 * 200}, 64*32*200)), codes.ResourceExhausted, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := gc.Raw().ModelInfer(ctx, c.req)
			st, _ := status.FromError(err)
			if st.Code() != c.code {
				t.Fatalf("code %v, want %v (%v)", st.Code(), c.code, err)
			}
			for _, w := range c.want {
				if !strings.Contains(st.Message(), w) {
					t.Errorf("message %q does not mention %q", st.Message(), w)
				}
			}
		})
	}
	if _, err := gc.Infer(ctx, &oip.InferRequest{ModelName: "recommender-v1", Inputs: []oip.Tensor{feat([]int64{1, 32}, 32)}}); err != nil {
		t.Fatalf("good request after bad ones: %v", err)
	}
}

func req(model string, inputs ...oip.Tensor) *pb.ModelInferRequest {
	return oip.InferRequestToProto(&oip.InferRequest{ModelName: model, Inputs: inputs})
}

// TestMutatedBodiesNeverPanic sends a bounded number of randomly corrupted
// request bodies: each gets a 2xx or 4xx answer, never a 5xx or a dropped
// connection, and the server keeps serving.
func TestMutatedBodiesNeverPanic(t *testing.T) {
	be := backendtest.Start(t, backendtest.Options{MaxBodyBytes: maxBody})
	url := "http://" + be.HTTPAddr + "/v2/models/recommender-v1/infer"
	seed := []byte(`{"id":"x","inputs":[{"name":"features","datatype":"FP32","shape":[2,32],"data":[` +
		strings.TrimSuffix(strings.Repeat("0.25,-1,", 32), ",") + `]}],"outputs":[{"name":"scores"}]}`)
	r := rand.New(rand.NewPCG(1, 2))
	n := 400
	if testing.Short() {
		n = 100
	}
	for i := range n {
		b := bytes.Clone(seed)
		for range 1 + r.IntN(4) {
			switch r.IntN(3) {
			case 0:
				const chars = "{}[]\",:-0123456789e.aZ \x00"
				b[r.IntN(len(b))] = chars[r.IntN(len(chars))]
			case 1:
				k := r.IntN(len(b))
				b = append(b[:k], b[min(len(b), k+1+r.IntN(8)):]...)
			case 2:
				k := r.IntN(len(b))
				b = append(b[:k], append([]byte(`[1e308,"x",-99999999999,`), b[k:]...)...)
			}
		}
		resp, err := http.Post(url, "application/json", bytes.NewReader(b))
		if err != nil {
			t.Fatalf("request %d: %v (body %q)", i, err, b)
		}
		out, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode >= 500 {
			t.Fatalf("request %d: status %d %s for body %q", i, resp.StatusCode, out, b)
		}
	}
	code, msg := postJSON(t, url, string(seed))
	if code != 200 {
		t.Fatalf("seed request: %d %s", code, msg)
	}
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func clipS(s string) string {
	if len(s) > 300 {
		return s[:300] + fmt.Sprintf("... (%d bytes)", len(s))
	}
	return s
}
