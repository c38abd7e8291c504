package backend_test

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/inference-backend/backendtest"
	"github.com/switchyard-dev/switchyard/inference-backend/demomodels"
	"github.com/switchyard-dev/switchyard/oip"
	"github.com/switchyard-dev/switchyard/oip/compress"
	pb "github.com/switchyard-dev/switchyard/oip/inferencepb"
)

// rawGRPC is the generated client on the backend's gRPC port (closed at
// test end), for the messages oip/client does not wrap.
func rawGRPC(t *testing.T, be *backendtest.Running) pb.GRPCInferenceServiceClient {
	t.Helper()
	cc, err := grpc.NewClient(be.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return pb.NewGRPCInferenceServiceClient(cc)
}

// tritonRepo serves the demo model twice: batched (dynamic batching, no
// queue delay, so requests sent one after another run one by one) and
// not batched.
func tritonRepo(t *testing.T) *backendtest.Running {
	repo := t.TempDir()
	writeModelAs(t, repo, demomodels.V1, "rec-batched", "1",
		"max_batch_size: 8\ndynamic_batching: {max_queue_delay: 0s, preferred_batch_sizes: [4, 8]}\ninstance_count: 2\nwarmup: 0\n")
	writeModelAs(t, repo, demomodels.V1, "rec-single", "1", "warmup: 0\n")
	return backendtest.Start(t, backendtest.Options{Repository: repo})
}

// TestModelReadyUnknownModel: Triton's answers — gRPC OK with ready false
// for an unknown model or version; REST keeps 404 (tritonclient's HTTP
// is_model_ready reads any non-200 as not ready; Triton itself answers 400).
func TestModelReadyUnknownModel(t *testing.T) {
	be := backendtest.Start(t, backendtest.Options{})
	g := rawGRPC(t, be)
	ctx := context.Background()
	for _, c := range []struct{ name, version string }{{"nope", ""}, {"nope", "1"}, {demomodels.V1, "9"}} {
		r, err := g.ModelReady(ctx, &pb.ModelReadyRequest{Name: c.name, Version: c.version})
		if err != nil || r.GetReady() {
			t.Errorf("gRPC ModelReady(%q, %q) = %v, %v; want ready false, OK", c.name, c.version, r, err)
		}
	}
	if r, err := g.ModelReady(ctx, &pb.ModelReadyRequest{Name: demomodels.V1}); err != nil || !r.GetReady() {
		t.Errorf("gRPC ModelReady(%s) = %v, %v", demomodels.V1, r, err)
	}
	if _, err := g.ModelReady(ctx, &pb.ModelReadyRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("gRPC ModelReady without a name: %v", err)
	}
	base := "http://" + be.HTTPAddr
	if code, body := get(t, base+"/v2/models/nope/ready"); code != 404 || !strings.Contains(body, `unknown model \"nope\"`) {
		t.Errorf("REST ready of an unknown model: %d %s", code, body)
	}
	if code, body := get(t, base+"/v2/models/"+demomodels.V1+"/versions/9/ready"); code != 404 || !strings.Contains(body, `no version \"9\"`) {
		t.Errorf("REST ready of an unknown version: %d %s", code, body)
	}
}

// TestModelConfig: REST and gRPC give the same Triton configuration, built
// from config.yaml and the ONNX graph.
func TestModelConfig(t *testing.T) {
	be := tritonRepo(t)
	g := rawGRPC(t, be)
	ctx := context.Background()
	base := "http://" + be.HTTPAddr

	code, body := get(t, base+"/v2/models/rec-batched/config")
	if code != 200 {
		t.Fatalf("REST config: %d %s", code, body)
	}
	var rest oip.ModelConfig
	if err := json.Unmarshal([]byte(body), &rest); err != nil {
		t.Fatalf("REST config %s: %v", body, err)
	}
	for _, want := range []string{`"platform":"onnxruntime_onnx"`, `"max_batch_size":8`, `"data_type":"TYPE_FP32"`, `"dims":[32]`,
		`"preferred_batch_size":[4,8]`, `"max_queue_delay_microseconds":0`, `"kind":"KIND_CPU"`, `"count":2`, `"latest":{"num_versions":1}`} {
		if !strings.Contains(body, want) {
			t.Errorf("REST config lacks %s: %s", want, body)
		}
	}
	r, err := g.ModelConfig(ctx, &pb.ModelConfigRequest{Name: "rec-batched", Version: "1"})
	if err != nil {
		t.Fatal(err)
	}
	c := r.GetConfig()
	if c.GetName() != "rec-batched" || c.GetMaxBatchSize() != 8 || c.GetPlatform() != "onnxruntime_onnx" ||
		len(c.GetInput()) != 1 || c.GetInput()[0].GetName() != "features" || c.GetInput()[0].GetDataType() != pb.DataType_TYPE_FP32 ||
		len(c.GetInput()[0].GetDims()) != 1 || c.GetInput()[0].GetDims()[0] != demomodels.Features ||
		c.GetDynamicBatching() == nil || len(c.GetDynamicBatching().GetPreferredBatchSize()) != 2 ||
		len(c.GetInstanceGroup()) != 1 || c.GetInstanceGroup()[0].GetCount() != 2 || c.GetInstanceGroup()[0].GetKind() != pb.ModelInstanceGroup_KIND_CPU {
		t.Errorf("gRPC config: %v", c)
	}
	if got := oip.ModelConfigFromProto(c); got.Name != rest.Name || len(got.Output) != len(rest.Output) || got.Output[0].Name != rest.Output[0].Name ||
		len(got.Output[0].Dims) != len(rest.Output[0].Dims) {
		t.Errorf("gRPC and REST configs differ: %+v vs %+v", got, rest)
	}

	// Not batched: dims are the full shapes, no dynamic batching.
	code, body = get(t, base+"/v2/models/rec-single/versions/1/config")
	if code != 200 || !strings.Contains(body, `"max_batch_size":0`) || !strings.Contains(body, `"dims":[-1,32]`) || strings.Contains(body, "dynamic_batching") {
		t.Errorf("REST config (not batched): %d %s", code, body)
	}

	// Unknown model and version: 404 / NOT_FOUND naming them.
	if code, body := get(t, base+"/v2/models/nope/config"); code != 404 || !strings.Contains(body, "nope") {
		t.Errorf("REST config of an unknown model: %d %s", code, body)
	}
	if code, body := get(t, base+"/v2/models/rec-single/versions/7/config"); code != 404 || !strings.Contains(body, `no version \"7\"`) {
		t.Errorf("REST config of an unknown version: %d %s", code, body)
	}
	if _, err := g.ModelConfig(ctx, &pb.ModelConfigRequest{Name: "nope"}); status.Code(err) != codes.NotFound || !strings.Contains(err.Error(), "nope") {
		t.Errorf("gRPC config of an unknown model: %v", err)
	}
	if _, err := g.ModelConfig(ctx, &pb.ModelConfigRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("gRPC config without a name: %v", err)
	}
}

// TestModelStatistics: counts after real requests, the same over REST and
// gRPC, per model and version, with Triton's field names.
func TestModelStatistics(t *testing.T) {
	be := tritonRepo(t)
	g := rawGRPC(t, be)
	gc := dialGRPC(t, be)
	ctx := context.Background()
	base := "http://" + be.HTTPAddr

	rows := demomodels.RandomFeatures(6, 5)
	for _, n := range []int{1, 2, 3} { // one after another: three runs of 1, 2, 3 rows
		if _, err := gc.Infer(ctx, &oip.InferRequest{ModelName: "rec-batched", Inputs: []oip.Tensor{featuresTensor(rows[:n])}}); err != nil {
			t.Fatal(err)
		}
	}
	bad := oip.NewTensor("features", []int64{1, 2}, []float32{1, 2})
	if _, err := gc.Infer(ctx, &oip.InferRequest{ModelName: "rec-batched", Inputs: []oip.Tensor{bad}}); oip.CodeOf(err) != oip.InvalidArgument {
		t.Fatalf("bad request: %v", err)
	}
	if _, err := gc.Infer(ctx, &oip.InferRequest{ModelName: "rec-single", Inputs: []oip.Tensor{featuresTensor(rows[:2])}}); err != nil {
		t.Fatal(err)
	}

	r, err := g.ModelStatistics(ctx, &pb.ModelStatisticsRequest{Name: "rec-batched", Version: "1"})
	if err != nil || len(r.GetModelStats()) != 1 {
		t.Fatalf("gRPC statistics: %v %v", r, err)
	}
	s := r.GetModelStats()[0]
	is := s.GetInferenceStats()
	if s.GetName() != "rec-batched" || s.GetVersion() != "1" || s.GetInferenceCount() != 6 || s.GetExecutionCount() != 3 || s.GetLastInference() == 0 ||
		is.GetSuccess().GetCount() != 3 || is.GetSuccess().GetNs() == 0 || is.GetFail().GetCount() != 1 ||
		is.GetQueue().GetCount() != 3 || is.GetComputeInfer().GetCount() != 3 || is.GetComputeInput().GetCount() != 3 || is.GetComputeOutput().GetCount() != 3 ||
		len(s.GetBatchStats()) != 3 || s.GetBatchStats()[2].GetBatchSize() != 3 || s.GetBatchStats()[2].GetComputeInfer().GetCount() != 1 {
		t.Errorf("gRPC statistics of rec-batched: %v", s)
	}

	code, body := get(t, base+"/v2/models/rec-batched/stats")
	var rest struct {
		ModelStats []oip.ModelStatistics `json:"model_stats"`
	}
	if code != 200 || json.Unmarshal([]byte(body), &rest) != nil || len(rest.ModelStats) != 1 {
		t.Fatalf("REST statistics: %d %s", code, body)
	}
	if got, want := rest.ModelStats[0], oip.ModelStatisticsFromProto(r)[0]; got.InferenceCount != want.InferenceCount ||
		got.ExecutionCount != want.ExecutionCount || got.InferenceStats.Fail != want.InferenceStats.Fail || len(got.BatchStats) != 3 {
		t.Errorf("REST %+v vs gRPC %+v", got, want)
	}
	for _, want := range []string{`"inference_count":6`, `"execution_count":3`, `"inference_stats":{"success":{"count":3,`, `"fail":{"count":1,`, `"compute_infer":{"count":3,`, `"batch_stats":[{"batch_size":1,`} {
		if !strings.Contains(body, want) {
			t.Errorf("REST statistics lack %s: %s", want, body)
		}
	}

	// Not batched: one inference per request whatever its rows (Triton).
	code, body = get(t, base+"/v2/models/rec-single/versions/1/stats")
	if code != 200 || !strings.Contains(body, `"inference_count":1,"execution_count":1`) {
		t.Errorf("REST statistics of rec-single: %d %s", code, body)
	}
	// Every model.
	code, body = get(t, base+"/v2/models/stats")
	if code != 200 || !strings.Contains(body, `"name":"rec-batched"`) || !strings.Contains(body, `"name":"rec-single"`) {
		t.Errorf("REST statistics of every model: %d %s", code, body)
	}
	if all, err := g.ModelStatistics(ctx, &pb.ModelStatisticsRequest{}); err != nil || len(all.GetModelStats()) != 2 {
		t.Errorf("gRPC statistics of every model: %v %v", all, err)
	}

	// Unknown model and version; a version without a model.
	if code, body := get(t, base+"/v2/models/nope/stats"); code != 404 || !strings.Contains(body, "nope") {
		t.Errorf("REST statistics of an unknown model: %d %s", code, body)
	}
	if _, err := g.ModelStatistics(ctx, &pb.ModelStatisticsRequest{Name: "rec-single", Version: "4"}); status.Code(err) != codes.NotFound || !strings.Contains(err.Error(), `no version "4"`) {
		t.Errorf("gRPC statistics of an unknown version: %v", err)
	}
	if _, err := g.ModelStatistics(ctx, &pb.ModelStatisticsRequest{Version: "1"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("gRPC statistics of a version without a model: %v", err)
	}
}

// TestModelStreamInfer: each message of the stream is answered with its id,
// a bad one with error_message, and the stream goes on.
func TestModelStreamInfer(t *testing.T) {
	be := tritonRepo(t)
	g := rawGRPC(t, be)
	stream, err := g.ModelStreamInfer(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	good := oip.InferRequestToProto(&oip.InferRequest{ModelName: "rec-batched", Inputs: []oip.Tensor{featuresTensor(demomodels.RandomFeatures(9, 2))}})
	for _, id := range []string{"a", "b", "c"} {
		m := &pb.ModelInferRequest{ModelName: good.ModelName, Id: id, Inputs: good.Inputs, RawInputContents: good.RawInputContents}
		if id == "b" {
			m.Inputs = []*pb.ModelInferRequest_InferInputTensor{{Name: "features", Datatype: "FP32", Shape: []int64{1, 2}}}
			m.RawInputContents = [][]byte{make([]byte, 8)}
		}
		if err := stream.Send(m); err != nil {
			t.Fatal(err)
		}
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	got := map[string]*pb.ModelStreamInferResponse{}
	for range 3 {
		r, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		got[r.GetInferResponse().GetId()] = r
	}
	if _, err := stream.Recv(); err == nil {
		t.Error("stream did not end after the last answer")
	}
	for _, id := range []string{"a", "c"} {
		if r := got[id]; r == nil || r.GetErrorMessage() != "" || len(r.GetInferResponse().GetRawOutputContents()) != 1 {
			t.Errorf("answer %s: %v", id, r)
		}
	}
	if r := got["b"]; r == nil || !strings.Contains(r.GetErrorMessage(), "features") || r.GetInferResponse().GetModelName() != "rec-batched" {
		t.Errorf("answer b: %v", r)
	}
}

// TestCompression: REST bodies in gzip, zlib-wrapped and raw deflate; the
// limit applies to the decompressed size (a zip bomb is 413 naming it);
// gzip answers when asked; gRPC with grpc-encoding deflate.
func TestCompression(t *testing.T) {
	repo := t.TempDir()
	writeModelAs(t, repo, demomodels.V1, "rec-single", "1", "warmup: 0\n")
	be := backendtest.Start(t, backendtest.Options{Repository: repo, MaxBodyBytes: 1 << 20})
	url := "http://" + be.HTTPAddr + "/v2/models/rec-single/infer"
	flat := make([]float32, 0, 64*demomodels.Features)
	for _, r := range demomodels.RandomFeatures(4, 64) {
		flat = append(flat, r...)
	}
	plain := []byte(mustJSON(map[string]any{"inputs": []any{map[string]any{"name": "features", "datatype": "FP32", "shape": []int{64, demomodels.Features}, "data": flat}}}))
	var gz, zl, raw bytes.Buffer
	gw := gzip.NewWriter(&gz)
	gw.Write(plain)
	gw.Close()
	zw := zlib.NewWriter(&zl)
	zw.Write(plain)
	zw.Close()
	fw, _ := flate.NewWriter(&raw, flate.DefaultCompression)
	fw.Write(plain)
	fw.Close()
	var bomb bytes.Buffer
	bw := gzip.NewWriter(&bomb)
	bw.Write(make([]byte, 3<<20))
	bw.Close()

	hc := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	post := func(body []byte, enc, accept string) (int, http.Header, []byte) {
		t.Helper()
		req, _ := http.NewRequest("POST", url, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if enc != "" {
			req.Header.Set("Content-Encoding", enc)
		}
		if accept != "" {
			req.Header.Set("Accept-Encoding", accept)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, b
	}
	code, _, want := post(plain, "", "")
	if code != 200 {
		t.Fatalf("plain: %d %s", code, want)
	}
	for _, c := range []struct {
		name, enc string
		body      []byte
	}{{"gzip", "gzip", gz.Bytes()}, {"zlib deflate", "deflate", zl.Bytes()}, {"raw deflate", "Deflate", raw.Bytes()}} {
		if code, _, b := post(c.body, c.enc, ""); code != 200 || !bytes.Equal(b, want) {
			t.Errorf("%s: %d %s", c.name, code, clipS(string(b)))
		}
	}
	if code, _, b := post(bomb.Bytes(), "gzip", ""); code != 413 || !strings.Contains(string(b), "1048576") {
		t.Errorf("zip bomb: %d %s", code, b)
	}
	if code, _, b := post([]byte("not gzip at all"), "gzip", ""); code != 400 || !strings.Contains(string(b), "gzip") {
		t.Errorf("corrupt gzip: %d %s", code, b)
	}
	if code, _, b := post(plain, "br", ""); code != 400 || !strings.Contains(string(b), `Content-Encoding \"br\" is not supported`) {
		t.Errorf("unknown coding: %d %s", code, b)
	}
	code, hdr, b := post(plain, "", "gzip, deflate")
	if code != 200 || hdr.Get("Content-Encoding") != "gzip" {
		t.Fatalf("Accept-Encoding gzip: %d %v", code, hdr)
	}
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := io.ReadAll(zr); !bytes.Equal(got, want) {
		t.Errorf("gzip answer differs from the plain one: %s", clipS(string(got)))
	}
	if _, hdr, _ := post(plain, "", "gzip;q=0"); hdr.Get("Content-Encoding") != "" {
		t.Errorf("gzip;q=0 got Content-Encoding %q", hdr.Get("Content-Encoding"))
	}

	g := rawGRPC(t, be)
	m := oip.InferRequestToProto(&oip.InferRequest{ModelName: "rec-single", Inputs: []oip.Tensor{featuresTensor(demomodels.RandomFeatures(5, 3))}})
	for _, name := range []string{compress.Deflate, "gzip"} {
		if _, err := g.ModelInfer(context.Background(), m, grpc.UseCompressor(name)); err != nil {
			t.Errorf("gRPC with grpc-encoding %s: %v", name, err)
		}
	}
}
