package backend_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/switchyard-dev/switchyard/inference-backend/backendtest"
	"github.com/switchyard-dev/switchyard/inference-backend/demomodels"
	"github.com/switchyard-dev/switchyard/oip"
	"github.com/switchyard-dev/switchyard/oip/client"
)

// writeModelAs writes demo model demo as repo/<name>/<version>/model.onnx
// with the given config.yaml ("" for none).
func writeModelAs(t testing.TB, repo, demo, name, version, config string) {
	t.Helper()
	b, err := demomodels.Model(demo)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(repo, name, version)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "model.onnx"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	if config != "" {
		if err := os.WriteFile(filepath.Join(repo, name, "config.yaml"), []byte(config), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// dialGRPC connects to the backend's gRPC listener; the connection is
// closed when the test ends.
func dialGRPC(tb testing.TB, be *backendtest.Running) *client.GRPCClient {
	tb.Helper()
	gc, err := client.DialGRPC(be.GRPCAddr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { gc.Close() })
	return gc
}

func featuresTensor(rows [][]float32) oip.Tensor {
	flat := make([]float32, 0, len(rows)*demomodels.Features)
	for _, r := range rows {
		flat = append(flat, r...)
	}
	return oip.NewTensor(demomodels.InputName, []int64{int64(len(rows)), demomodels.Features}, flat)
}

func scores(t testing.TB, resp *oip.InferResponse) []float32 {
	t.Helper()
	if len(resp.Outputs) != 1 || resp.Outputs[0].Name != demomodels.OutputName || resp.Outputs[0].Datatype != oip.FP32 {
		t.Fatalf("unexpected outputs %+v", resp.Outputs)
	}
	return oip.Values[float32](resp.Outputs[0].Raw)
}

// histogram finds a histogram series in the registry.
func histogram(t testing.TB, reg *prometheus.Registry, name, model string) *dto.Histogram {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "model" && l.GetValue() == model {
					return m.GetHistogram()
				}
			}
		}
	}
	t.Fatalf("no %s{model=%q}", name, model)
	return nil
}

// closeEnough requires batched and unbatched scores to be bit for bit
// identical: every row of a joined batch must get exactly the answer it gets
// alone (ONNX Runtime's GEMM computes each row independently of the others
// here; should a kernel change break that, this test says so).
func closeEnough(a, b []float32) error {
	if len(a) != len(b) {
		return fmt.Errorf("%d values vs %d", len(a), len(b))
	}
	for i := range a {
		if a[i] != b[i] {
			return fmt.Errorf("element %d: %v vs %v", i, a[i], b[i])
		}
	}
	return nil
}

// TestBatchingJoinsConcurrentRequests: with max_batch_size 8 and a long
// queue delay, eight concurrent one-row requests are run as one batch of 8
// (the batch fills, so nothing depends on timing), and each caller gets
// exactly the answer an unbatched model gives for its row.
func TestBatchingJoinsConcurrentRequests(t *testing.T) {
	repo := t.TempDir()
	writeModelAs(t, repo, demomodels.V1, "rec-batched", "1", "max_batch_size: 8\ndynamic_batching: {max_queue_delay: 10s}\nwarmup: 0\n")
	writeModelAs(t, repo, demomodels.V1, "rec-single", "1", "")
	be := backendtest.Start(t, backendtest.Options{Repository: repo})
	gc := dialGRPC(t, be)
	ctx := context.Background()

	rows := demomodels.RandomFeatures(11, 8)
	got := make([][]float32, len(rows))
	errs := make([]error, len(rows))
	var wg sync.WaitGroup
	for i := range rows {
		wg.Go(func() {
			resp, err := gc.Infer(ctx, &oip.InferRequest{ModelName: "rec-batched", Inputs: []oip.Tensor{featuresTensor(rows[i : i+1])}})
			if err != nil {
				errs[i] = err
				return
			}
			got[i] = oip.Values[float32](resp.Outputs[0].Raw)
		})
	}
	wg.Wait()
	for i := range rows {
		if errs[i] != nil {
			t.Fatalf("request %d: %v", i, errs[i])
		}
		resp, err := gc.Infer(ctx, &oip.InferRequest{ModelName: "rec-single", Inputs: []oip.Tensor{featuresTensor(rows[i : i+1])}})
		if err != nil {
			t.Fatal(err)
		}
		if err := closeEnough(got[i], scores(t, resp)); err != nil {
			t.Errorf("row %d: batched and unbatched answers differ: %v", i, err)
		}
	}
	h := histogram(t, be.Registry, "switchyard_backend_batch_size", "rec-batched")
	if h.GetSampleCount() != 1 || h.GetSampleSum() != 8 {
		t.Fatalf("batch size histogram: %d runs, %v rows; want one run of 8", h.GetSampleCount(), h.GetSampleSum())
	}
}

// TestBatchingUnderConcurrency: 32 clients send requests of 1 to 4 rows;
// batches join and split them, and every answer matches the unbatched model
// row by row, over REST and gRPC.
func TestBatchingUnderConcurrency(t *testing.T) {
	repo := t.TempDir()
	writeModelAs(t, repo, demomodels.V1, "rec-batched", "1", "max_batch_size: 16\ndynamic_batching: {max_queue_delay: 2ms, preferred_batch_sizes: [16]}\n")
	writeModelAs(t, repo, demomodels.V1, "rec-instances", "1", "max_batch_size: 16\ninstance_count: 3\nallow_spinning: false\ndynamic_batching: {max_queue_delay: 1ms}\n")
	writeModelAs(t, repo, demomodels.V1, "rec-single", "1", "")
	be := backendtest.Start(t, backendtest.Options{Repository: repo})
	gc := dialGRPC(t, be)
	hc := client.NewHTTP("http://"+be.HTTPAddr, client.HTTPOptions{Binary: true})
	defer hc.Close()
	ctx := context.Background()
	// Reference: one row at a time, unbatched.
	all := demomodels.RandomFeatures(21, 64)
	ref := make([][]float32, len(all))
	for i := range all {
		resp, err := gc.Infer(ctx, &oip.InferRequest{ModelName: "rec-single", Inputs: []oip.Tensor{featuresTensor(all[i : i+1])}})
		if err != nil {
			t.Fatal(err)
		}
		ref[i] = scores(t, resp)
	}

	for _, model := range []string{"rec-batched", "rec-instances"} {
		t.Run(model, func(t *testing.T) { checkBatchedAnswers(t, be, gc, hc, model, all, ref) })
	}
}

// checkBatchedAnswers sends 1–4 rows from each of 32 concurrent clients
// (gRPC and REST binary) to a batched model and checks every answer against
// the unbatched reference.
func checkBatchedAnswers(t *testing.T, be *backendtest.Running, gc, hc client.Client, model string, all, ref [][]float32) {
	ctx := context.Background()
	const clients = 32
	perClient := 12
	if testing.Short() {
		perClient = 4
	}
	errs := make(chan error, clients)
	var wg sync.WaitGroup
	for c := range clients {
		wg.Go(func() {
			var cl client.Client = gc
			if c%2 == 1 {
				cl = hc
			}
			for k := range perClient {
				n := 1 + (c+k)%4
				start := (c*7 + k*13) % (len(all) - n)
				resp, err := cl.Infer(ctx, &oip.InferRequest{ModelName: model, Inputs: []oip.Tensor{featuresTensor(all[start : start+n])}})
				if err != nil {
					errs <- fmt.Errorf("client %d request %d: %w", c, k, err)
					return
				}
				if s := resp.Outputs[0].Shape; len(s) != 2 || s[0] != int64(n) || s[1] != demomodels.Items {
					errs <- fmt.Errorf("client %d request %d: shape %v for %d rows", c, k, s, n)
					return
				}
				got := oip.Values[float32](resp.Outputs[0].Raw)
				for r := range n {
					if err := closeEnough(got[r*demomodels.Items:(r+1)*demomodels.Items], ref[start+r]); err != nil {
						errs <- fmt.Errorf("client %d request %d row %d: %w", c, k, r, err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	h := histogram(t, be.Registry, "switchyard_backend_batch_size", model)
	t.Logf("%d runs for %d requests (%v rows)", h.GetSampleCount(), clients*perClient, h.GetSampleSum())
}

// TestInFlightGauge: requests held in a batch that is still filling count
// as in flight; once the batch runs and answers, the gauge is back to 0.
func TestInFlightGauge(t *testing.T) {
	repo := t.TempDir()
	writeModelAs(t, repo, demomodels.V1, "rec-held", "1", "max_batch_size: 4\ndynamic_batching: {max_queue_delay: 10s}\nwarmup: 0\n")
	be := backendtest.Start(t, backendtest.Options{Repository: repo})
	inflight := func() float64 {
		return testutil.ToFloat64(be.Backend.Metrics().InFlight.WithLabelValues("rec-held", "1"))
	}
	ctx := context.Background()
	rows := demomodels.RandomFeatures(5, 4)
	var wg sync.WaitGroup
	send := func(i int) {
		wg.Go(func() {
			if _, err := be.Backend.Infer(ctx, &oip.InferRequest{ModelName: "rec-held", Inputs: []oip.Tensor{featuresTensor(rows[i : i+1])}}); err != nil {
				t.Error(err)
			}
		})
	}
	for i := range 3 {
		send(i)
	}
	deadline := time.Now().Add(10 * time.Second)
	for inflight() != 3 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if got := inflight(); got != 3 {
		t.Fatalf("in flight while the batch fills: %v, want 3", got)
	}
	send(3) // the fourth row fills the batch: it runs at once
	wg.Wait()
	if got := inflight(); got != 0 {
		t.Fatalf("in flight after the answers: %v, want 0", got)
	}
}
