package backend_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchyard-dev/switchyard/inference-backend/backend"
	"github.com/switchyard-dev/switchyard/inference-backend/backendtest"
	"github.com/switchyard-dev/switchyard/inference-backend/demomodels"
	"github.com/switchyard-dev/switchyard/oip"
	"github.com/switchyard-dev/switchyard/oip/client"
)

// The CUDA execution provider needs a GPU, the CUDA libraries and a CUDA
// build of ONNX Runtime as SWITCHYARD_ORT_LIB. On such a machine set
// SWITCHYARD_TEST_CUDA=1 (bench/gpu/check.sh does all of it); elsewhere
// these skip and TestCUDAFallback (the other side of the same option) runs.
const envTestCUDA = "SWITCHYARD_TEST_CUDA"

func requireCUDA(tb testing.TB) {
	tb.Helper()
	if os.Getenv(envTestCUDA) == "" {
		tb.Skip("no GPU here: set " + envTestCUDA + "=1 on a machine with CUDA and a CUDA build of ONNX Runtime")
	}
}

// providerOf is the provider label of a model's (only) loaded version in
// switchyard_backend_model_execution_provider; "" if it has none.
func providerOf(tb testing.TB, reg *prometheus.Registry, model string) string {
	tb.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "switchyard_backend_model_execution_provider" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["model"] == model && m.GetGauge().GetValue() == 1 {
				return labels["provider"]
			}
		}
	}
	return ""
}

// lockedBuffer is a log sink the backend's goroutines may write to while
// the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// gpuTolerance: cuBLAS may compute FP32 GEMMs with TF32 tensor cores
// (10-bit mantissa), so answers differ from the float32 reference in the
// third or fourth significant digit; far from anything a wrong kernel,
// wrong weights or a mixed-up row would give.
func gpuClose(got, want float32) bool {
	if math.IsNaN(float64(want)) {
		return math.IsNaN(float64(got))
	}
	return math.Abs(float64(got-want)) <= 2e-3+5e-3*math.Abs(float64(want))
}

// checkRows compares a [rows, Items] answer with the demo model's reference
// (recommender-v3: NaN rows where its rule says so).
func checkRows(model string, rows [][]float32, resp *oip.InferResponse) (maxDiff float64, err error) {
	w, err := demomodels.Weights(model)
	if err != nil {
		return 0, err
	}
	if len(resp.Outputs) != 1 {
		return 0, fmt.Errorf("%d outputs", len(resp.Outputs))
	}
	if s := resp.Outputs[0].Shape; len(s) != 2 || s[0] != int64(len(rows)) || s[1] != demomodels.Items {
		return 0, fmt.Errorf("shape %v for %d rows", s, len(rows))
	}
	got := oip.Values[float32](resp.Outputs[0].Raw)
	for r, row := range rows {
		want := w.Eval(row)
		if model == demomodels.V3 && demomodels.NaNRule(row) {
			for i := range want {
				want[i] = float32(math.NaN())
			}
		}
		for i, x := range want {
			g := got[r*demomodels.Items+i]
			if !gpuClose(g, x) {
				return 0, fmt.Errorf("%s row %d item %d: %v, want %v", model, r, i, g, x)
			}
			if !math.IsNaN(float64(x)) {
				maxDiff = max(maxDiff, math.Abs(float64(g-x)))
			}
		}
	}
	return maxDiff, nil
}

// TestCUDAExecutionProvider: with execution_provider cuda every demo model
// version loads on the GPU (no fallback warning; the provider metric says
// cuda), answers over gRPC and REST match the reference MLPs (v3's NaN rows
// included), and dynamic batching joins concurrent requests on the GPU
// with every row still getting its own answer.
func TestCUDAExecutionProvider(t *testing.T) {
	requireCUDA(t)
	var logs lockedBuffer
	be := backendtest.Start(t, backendtest.Options{ExecutionProvider: "cuda",
		Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	if strings.Contains(logs.String(), "CUDA execution provider unavailable") {
		t.Fatalf("fell back to CPU:\n%s", logs.String())
	}
	for _, name := range demomodels.Names {
		if p := providerOf(t, be.Registry, name); p != "cuda" {
			t.Errorf("%s runs on %q", name, p)
		}
	}
	if !strings.Contains(logs.String(), `"provider":"cuda"`) || strings.Contains(logs.String(), `"provider":"cpu"`) {
		t.Errorf("loaded versions do not all report provider cuda:\n%s", logs.String())
	}

	gc := dialGRPC(t, be)
	// REST with binary tensor data: recommender-v3's NaN scores are valid
	// answers, which JSON numbers cannot carry (the server says so, 400).
	hc := client.NewHTTP("http://"+be.HTTPAddr, client.HTTPOptions{Binary: true})
	defer hc.Close()
	ctx := context.Background()
	rows := demomodels.RandomFeatures(7, 48) // v3: about one row in eight is NaN
	for _, name := range demomodels.Names {
		for tr, cl := range map[string]client.Client{"grpc": gc, "rest-binary": hc} {
			resp, err := cl.Infer(ctx, &oip.InferRequest{ModelName: name, Inputs: []oip.Tensor{featuresTensor(rows)}})
			if err != nil {
				t.Fatalf("%s over %s: %v", name, tr, err)
			}
			d, err := checkRows(name, rows, resp)
			if err != nil {
				t.Errorf("over %s: %v", tr, err)
			}
			t.Logf("%s over %s: largest difference from the float32 reference %.2g", name, tr, d)
		}
	}

	// Dynamic batching (the demo config: max_batch_size 64, 200 µs delay).
	const clients, perClient = 32, 8
	errs := make(chan error, clients)
	var wg sync.WaitGroup
	for c := range clients {
		wg.Go(func() {
			var cl client.Client = gc
			if c%2 == 1 {
				cl = hc
			}
			for k := range perClient {
				i := (c*perClient + k) % len(rows)
				resp, err := cl.Infer(ctx, &oip.InferRequest{ModelName: demomodels.V1, Inputs: []oip.Tensor{featuresTensor(rows[i : i+1])}})
				if err == nil {
					_, err = checkRows(demomodels.V1, rows[i:i+1], resp)
				}
				if err != nil {
					errs <- fmt.Errorf("client %d request %d: %w", c, k, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	h := histogram(t, be.Registry, "switchyard_backend_batch_size", demomodels.V1)
	t.Logf("batching on the GPU: %d runs, %v rows", h.GetSampleCount(), h.GetSampleSum())
	if h.GetSampleSum() <= float64(h.GetSampleCount()) {
		t.Errorf("no run joined requests: %d runs for %v rows", h.GetSampleCount(), h.GetSampleSum())
	}
}

// BenchmarkExecutionProvider: the ranker model (32→2048→2048→2048→100)
// in-process on CPU and on CUDA at several batch sizes (rows/s; one
// goroutine). The CUDA half runs only where requireCUDA passes.
//
//	SWITCHYARD_TEST_CUDA=1 go test -run '^$' -bench ExecutionProvider -benchtime 2s ./inference-backend/backend/
func BenchmarkExecutionProvider(b *testing.B) {
	dir := b.TempDir()
	path := filepath.Join(dir, "ranker.onnx")
	if err := os.WriteFile(path, demomodels.DeepModel("ranker", rankerHidden, 11), 0o644); err != nil {
		b.Fatal(err)
	}
	for _, provider := range []string{"cpu", "cuda"} {
		b.Run(provider, func(b *testing.B) {
			if provider == "cuda" {
				requireCUDA(b)
			}
			sess, err := backend.NewSession(path, backend.SessionOptions{Provider: provider})
			if err != nil {
				b.Fatal(err)
			}
			defer sess.Close()
			if sess.Provider() != provider {
				b.Fatalf("session runs on %s, want %s", sess.Provider(), provider)
			}
			for _, rows := range []int{1, 32, 256} {
				in := []oip.Tensor{featuresTensor(demomodels.RandomFeatures(3, rows))}
				if _, err := sess.Infer(in); err != nil { // first run: kernels, allocations
					b.Fatal(err)
				}
				b.Run(fmt.Sprintf("batch=%d", rows), func(b *testing.B) {
					load(b, 1, func() error { _, err := sess.Infer(in); return err })
					b.ReportMetric(float64(rows*b.N)/b.Elapsed().Seconds(), "rows/s")
				})
			}
		})
	}
}

// BenchmarkBatchingCUDA: the ranker model on the GPU served over gRPC to 32
// and 128 concurrent one-row clients, dynamic batching off and on (up to
// 256 rows, 1 ms), then in-process CUDA at the batch sizes the batcher
// formed: what dynamic batching buys on a GPU, and what the serving path
// keeps of it.
//
//	SWITCHYARD_TEST_CUDA=1 go test -run '^$' -bench BatchingCUDA -benchtime 20000x ./inference-backend/backend/
func BenchmarkBatchingCUDA(b *testing.B) {
	requireCUDA(b)
	repo := b.TempDir()
	model := demomodels.DeepModel("ranker", rankerHidden, 11)
	configs := map[string]string{
		"off": "warmup: 2\nmax_batch_size: 256\n",
		"on":  "warmup: 2\nmax_batch_size: 256\ninstance_count: 2\ndynamic_batching: {max_queue_delay: 1ms}\n",
		// a batch leaves as soon as it holds 32 or 64 rows
		"on-preferred": "warmup: 2\nmax_batch_size: 256\ninstance_count: 2\ndynamic_batching: {max_queue_delay: 1ms, preferred_batch_sizes: [32, 64]}\n",
	}
	for name, cfg := range configs {
		dir := filepath.Join(repo, "ranker-"+name)
		if err := os.MkdirAll(filepath.Join(dir, "1"), 0o755); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "1", "model.onnx"), model, 0o644); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(cfg), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	be := backendtest.Start(b, backendtest.Options{Repository: repo, ExecutionProvider: "cuda"})
	for name := range configs {
		if p := providerOf(b, be.Registry, "ranker-"+name); p != "cuda" {
			b.Fatalf("ranker-%s runs on %q", name, p)
		}
	}
	gc := dialGRPC(b, be)
	ctx := context.Background()
	in := oneRow()
	for _, clients := range []int{32, 128} {
		for _, name := range []string{"off", "on", "on-preferred"} {
			req := &oip.InferRequest{ModelName: "ranker-" + name, Inputs: in}
			b.Run(fmt.Sprintf("grpc/%s/clients=%d", name, clients), func(b *testing.B) {
				before := histogram(b, be.Registry, "switchyard_backend_batch_size", req.ModelName)
				runs0, rows0 := before.GetSampleCount(), before.GetSampleSum()
				cpu0 := processCPU()
				load(b, clients, func() error { _, err := gc.Infer(ctx, req); return err })
				b.ReportMetric(float64(processCPU()-cpu0)/1e3/float64(b.N), "cpu-µs/req")
				h := histogram(b, be.Registry, "switchyard_backend_batch_size", req.ModelName)
				b.ReportMetric((h.GetSampleSum()-rows0)/float64(h.GetSampleCount()-runs0), "rows/run")
			})
		}
	}
	sess, err := backend.NewSession(filepath.Join(repo, "ranker-off", "1", "model.onnx"), backend.SessionOptions{Provider: "cuda"})
	if err != nil {
		b.Fatal(err)
	}
	defer sess.Close()
	if sess.Provider() != "cuda" {
		b.Fatalf("in-process session runs on %s", sess.Provider())
	}
	for _, rows := range []int{1, 16, 32, 64, 128} {
		batch := []oip.Tensor{featuresTensor(demomodels.RandomFeatures(2, rows))}
		b.Run(fmt.Sprintf("inprocess-cuda/batch=%d", rows), func(b *testing.B) {
			load(b, 2, func() error { _, err := sess.Infer(batch); return err })
			b.ReportMetric(float64(rows*b.N)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}
