package backend_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchyard-dev/switchyard/inference-backend/backendtest"
	"github.com/switchyard-dev/switchyard/inference-backend/demomodels"
	"github.com/switchyard-dev/switchyard/oip"
	"github.com/switchyard-dev/switchyard/oip/client"
)

// metricValue reads a counter or gauge series by model and version.
func metricValue(t testing.TB, reg *prometheus.Registry, name, model, version string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if (l.GetName() == "model" && l.GetValue() != model) || (l.GetName() == "version" && l.GetValue() != version) {
					continue series
				}
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			}
		}
	}
	return math.NaN()
}

// TestLoadNewVersionUnderTraffic: clients call the model's default version
// without pause while the repository gains version 2 and then version 3
// (each loaded through the repository API), the model is reloaded in place,
// and another model is unloaded and loaded again. No request fails, and every
// answer is exactly the one its reported version gives.
func TestLoadNewVersionUnderTraffic(t *testing.T) {
	repo := t.TempDir()
	writeModelAs(t, repo, demomodels.V1, "rec", "1", "max_batch_size: 16\ndynamic_batching: {max_queue_delay: 1ms}\n")
	writeModelAs(t, repo, demomodels.V1, "other", "1", "")
	be := backendtest.Start(t, backendtest.Options{Repository: repo})
	gc := dialGRPC(t, be)
	hc := client.NewHTTP("http://"+be.HTTPAddr, client.HTTPOptions{})
	defer hc.Close()
	ctx := context.Background()

	// Expected scores per version, from the Go reference of each MLP.
	weights := map[string]*demomodels.MLP{}
	for v, demo := range map[string]string{"1": demomodels.V1, "2": demomodels.V2, "3": demomodels.Lite} {
		weights[v], _ = demomodels.Weights(demo)
	}
	rows := demomodels.RandomFeatures(5, 16)

	var (
		done     atomic.Bool
		ok       atomic.Int64
		mu       sync.Mutex
		seen     = map[string]int{}
		failures []error
	)
	const clients = 8
	maxPerClient := 3000 // bound in count; the deadline below bounds time
	deadline := time.Now().Add(30 * time.Second)
	var wg sync.WaitGroup
	for c := range clients {
		wg.Go(func() {
			var cl client.Client = gc
			if c%2 == 1 {
				cl = hc
			}
			for k := 0; k < maxPerClient && !done.Load() && time.Now().Before(deadline); k++ {
				row := rows[(c+k)%len(rows)]
				resp, err := cl.Infer(ctx, &oip.InferRequest{ModelName: "rec", Inputs: []oip.Tensor{featuresTensor([][]float32{row})}})
				if err == nil {
					err = checkScores(resp, weights, row)
				}
				mu.Lock()
				if err != nil {
					failures = append(failures, fmt.Errorf("client %d request %d: %w", c, k, err))
				} else {
					seen[resp.ModelVersion]++
				}
				mu.Unlock()
				if err != nil {
					return
				}
				ok.Add(1)
			}
		})
	}
	// waitFor lets at least n more requests succeed (a count, not a time).
	waitFor := func(n int64) {
		target := ok.Load() + n
		for ok.Load() < target && time.Now().Before(deadline) {
			mu.Lock()
			failed := len(failures) > 0
			mu.Unlock()
			if failed {
				return
			}
			time.Sleep(time.Millisecond)
		}
	}
	step := func(what string, f func() error) {
		waitFor(50)
		if err := f(); err != nil {
			t.Errorf("%s: %v", what, err)
		}
	}
	step("load version 2", func() error {
		writeModelAs(t, repo, demomodels.V2, "rec", "2", "")
		return hc.LoadModel(ctx, "rec")
	})
	step("load version 3", func() error {
		writeModelAs(t, repo, demomodels.Lite, "rec", "3", "")
		return gc.LoadModel(ctx, "rec")
	})
	step("reload version 3", func() error { return hc.LoadModel(ctx, "rec") })
	for i := range 3 {
		step(fmt.Sprintf("unload other #%d", i), func() error { return hc.UnloadModel(ctx, "other") })
		step(fmt.Sprintf("load other #%d", i), func() error { return gc.LoadModel(ctx, "other") })
	}
	waitFor(50)
	done.Store(true)
	wg.Wait()

	for _, err := range failures {
		t.Error(err)
	}
	t.Logf("answers by version: %v", seen)
	for _, v := range []string{"1", "2", "3"} {
		if seen[v] == 0 {
			t.Errorf("no answer from version %s (seen %v)", v, seen)
		}
	}
	md, err := gc.ModelMetadata(ctx, "rec", "")
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(md.Versions) != "[3]" {
		t.Errorf("served versions %v, want [3]", md.Versions)
	}
	if _, err := gc.Infer(ctx, &oip.InferRequest{ModelName: "rec", ModelVersion: "1", Inputs: []oip.Tensor{featuresTensor(rows[:1])}}); oip.CodeOf(err) != oip.NotFound {
		t.Errorf("version 1 after it was replaced: %v, want NotFound", err)
	}
	if got := metricValue(t, be.Registry, "switchyard_backend_model_ready", "rec", "1"); got != 0 {
		t.Errorf("ready gauge of replaced version 1 = %v, want 0", got)
	}
	if got := metricValue(t, be.Registry, "switchyard_backend_model_ready", "rec", "3"); got != 1 {
		t.Errorf("ready gauge of version 3 = %v, want 1", got)
	}
}

func checkScores(resp *oip.InferResponse, weights map[string]*demomodels.MLP, row []float32) error {
	m := weights[resp.ModelVersion]
	if m == nil {
		return fmt.Errorf("answer from unexpected version %q", resp.ModelVersion)
	}
	if len(resp.Outputs) != 1 {
		return fmt.Errorf("%d outputs", len(resp.Outputs))
	}
	got := oip.Values[float32](resp.Outputs[0].Raw)
	want := m.Eval(row)
	if len(got) != len(want) {
		return fmt.Errorf("%d scores", len(got))
	}
	for i := range want {
		if math.Abs(float64(got[i]-want[i])) > 1e-4 {
			return fmt.Errorf("version %s item %d: %v, want %v", resp.ModelVersion, i, got[i], want[i])
		}
	}
	return nil
}

// TestUnloadDrainsInFlight: requests already inside the backend (here,
// waiting in a batch) finish successfully when their model is unloaded;
// requests after the unload get NotFound.
func TestUnloadDrainsInFlight(t *testing.T) {
	repo := t.TempDir()
	writeModelAs(t, repo, demomodels.V1, "slow", "1", "max_batch_size: 8\ndynamic_batching: {max_queue_delay: 300ms}\nwarmup: 0\n")
	be := backendtest.Start(t, backendtest.Options{Repository: repo})
	gc := dialGRPC(t, be)
	ctx := context.Background()
	rows := demomodels.RandomFeatures(9, 3)

	errs := make(chan error, len(rows))
	for i := range rows {
		go func() {
			_, err := gc.Infer(ctx, &oip.InferRequest{ModelName: "slow", Inputs: []oip.Tensor{featuresTensor(rows[i : i+1])}})
			errs <- err
		}()
	}
	// The request counter rises when a request has been accepted by a
	// version (and counted in flight on it).
	for deadline := time.Now().Add(10 * time.Second); metricValue(t, be.Registry, "switchyard_backend_requests_total", "slow", "1") < float64(len(rows)); {
		if time.Now().After(deadline) {
			t.Fatal("requests never reached the backend")
		}
		time.Sleep(time.Millisecond)
	}
	if err := be.Backend.UnloadModel(ctx, "slow"); err != nil {
		t.Fatal(err)
	}
	for range rows {
		if err := <-errs; err != nil {
			t.Errorf("request in flight during unload failed: %v", err)
		}
	}
	_, err := gc.Infer(ctx, &oip.InferRequest{ModelName: "slow", Inputs: []oip.Tensor{featuresTensor(rows[:1])}})
	var oe *oip.Error
	if !errors.As(err, &oe) || oe.Code != oip.NotFound {
		t.Fatalf("request after unload: %v, want NotFound", err)
	}
	ready, err := gc.ModelReady(ctx, "slow", "")
	if err != nil || ready {
		t.Fatalf("model ready after unload: %v %v", ready, err)
	}
	idx, err := gc.RepositoryIndex(ctx, false)
	if err != nil || len(idx) != 1 || idx[0].State != "UNAVAILABLE" || idx[0].Reason != "unloaded" {
		t.Fatalf("index after unload: %+v %v", idx, err)
	}
	if err := gc.LoadModel(ctx, "slow"); err != nil {
		t.Fatal(err)
	}
	if ready, err := gc.ModelReady(ctx, "slow", "1"); err != nil || !ready {
		t.Fatalf("model ready after load: %v %v", ready, err)
	}
}
