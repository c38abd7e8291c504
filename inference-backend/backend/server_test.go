package backend_test

import (
	"context"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/switchyard-dev/switchyard/inference-backend/backendtest"
	"github.com/switchyard-dev/switchyard/inference-backend/demomodels"
	"github.com/switchyard-dev/switchyard/oip"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// sample returns the value of the first /metrics line matching the series
// prefix, or -1.
func sample(text, series string) float64 {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(text)
	if m == nil {
		return -1
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// TestServerEndpointsAndMetrics: health, metadata and readiness over REST
// and gRPC, and the per-model metrics on /metrics after real traffic:
// requests, failures by code, queue vs compute latency, batch size, load,
// warm-up, cold start, first request, ready.
func TestServerEndpointsAndMetrics(t *testing.T) {
	be := backendtest.Start(t, backendtest.Options{})
	base := "http://" + be.HTTPAddr
	for _, path := range []string{"/v2/health/live", "/v2/health/ready", "/v2/models/recommender-v1/ready", "/v2/models/recommender-lite/versions/1/ready"} {
		if code, body := get(t, base+path); code != 200 {
			t.Errorf("GET %s: %d %s", path, code, body)
		}
	}
	if code, body := get(t, base+"/v2"); code != 200 || !strings.Contains(body, "switchyard-backend") || !strings.Contains(body, "model_repository") {
		t.Errorf("server metadata: %d %s", code, body)
	}
	if code, body := get(t, base+"/v2/models/recommender-v3"); code != 200 || !strings.Contains(body, `"shape":[-1,32]`) || !strings.Contains(body, `"platform":"onnxruntime_onnx"`) {
		t.Errorf("model metadata: %d %s", code, body)
	}

	gc := dialGRPC(t, be)
	ctx := context.Background()
	if ok, err := gc.ServerReady(ctx); err != nil || !ok {
		t.Fatalf("grpc server ready: %v %v", ok, err)
	}
	md, err := gc.ModelMetadata(ctx, demomodels.V2, "1")
	if err != nil || len(md.Inputs) != 1 || md.Inputs[0].Datatype != oip.FP32 || md.Outputs[0].Name != "scores" {
		t.Fatalf("grpc model metadata: %+v %v", md, err)
	}
	rows := demomodels.RandomFeatures(4, 3)
	for i := range 3 {
		if _, err := gc.Infer(ctx, &oip.InferRequest{ModelName: demomodels.V1, Inputs: []oip.Tensor{featuresTensor(rows[:i+1])}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := gc.Infer(ctx, &oip.InferRequest{ModelName: demomodels.V1, Inputs: []oip.Tensor{oip.NewTensor("features", []int64{1, 2}, []float32{1, 2})}}); oip.CodeOf(err) != oip.InvalidArgument {
		t.Fatalf("bad request: %v", err)
	}

	code, text := get(t, base+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	l := `{model="recommender-v1",version="1"}`
	checks := map[string]func(float64) bool{
		"switchyard_backend_requests_total" + l: func(v float64) bool { return v == 4 },
		`switchyard_backend_request_failures_total{code="invalid_argument",model="recommender-v1",version="1"}`: func(v float64) bool { return v == 1 },
		"switchyard_backend_queue_seconds_count" + l:                                                            func(v float64) bool { return v == 3 },
		"switchyard_backend_compute_seconds_count" + l:                                                          func(v float64) bool { return v == 3 },
		"switchyard_backend_batch_size_sum" + l:                                                                 func(v float64) bool { return v == 6 },
		"switchyard_backend_model_load_seconds" + l:                                                             func(v float64) bool { return v > 0 },
		"switchyard_backend_model_warmup_seconds" + l:                                                           func(v float64) bool { return v > 0 },
		"switchyard_backend_model_cold_start_seconds" + l:                                                       func(v float64) bool { return v > 0 },
		"switchyard_backend_model_first_request_seconds" + l:                                                    func(v float64) bool { return v > 0 },
		"switchyard_backend_model_ready" + l:                                                                    func(v float64) bool { return v == 1 },
		`switchyard_backend_model_loads_total{model="recommender-v1",result="ok"}`:                              func(v float64) bool { return v == 1 },
	}
	for series, ok := range checks {
		if v := sample(text, series); !ok(v) {
			t.Errorf("%s = %v", series, v)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", text)
	}
}
