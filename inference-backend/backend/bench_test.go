package backend_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/inference-backend/backend"
	"github.com/switchyard-dev/switchyard/inference-backend/backendtest"
	"github.com/switchyard-dev/switchyard/inference-backend/demomodels"
	"github.com/switchyard-dev/switchyard/oip"
	"github.com/switchyard-dev/switchyard/oip/client"
)

// Benchmarks (figures and commands in docs/benchmarks-backend.md):
//
//	go test -run '^$' -bench . -benchtime 3s ./inference-backend/backend/
//
// Each reports req/s and the p50/p99 latency of one call, measured by the
// calling goroutines. "tiny" is recommender-v1 (32→64→100, microseconds per
// run: the protocol dominates); "heavy" has the same signature with a
// 16384-wide hidden layer (model compute dominates).

// load calls call b.N times from clients goroutines and reports throughput
// and latency percentiles.
func load(b *testing.B, clients int, call func() error) {
	b.Helper()
	lat := make([][]time.Duration, clients)
	var next atomic.Int64
	var failed atomic.Value
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for c := range clients {
		wg.Go(func() {
			mine := make([]time.Duration, 0, b.N/clients+1)
			for next.Add(1) <= int64(b.N) {
				t0 := time.Now()
				if err := call(); err != nil {
					failed.Store(err)
					return
				}
				mine = append(mine, time.Since(t0))
			}
			lat[c] = mine
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	pct := func(p float64) float64 { return float64(all[int(p*float64(len(all)-1))].Microseconds()) }
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "req/s")
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
}

// benchRepo writes "tiny" (recommender-v1) and "heavy" (hidden 4096), each
// twice: *-batched with dynamic batching, *-single without.
func benchRepo(b *testing.B, delay string) string {
	b.Helper()
	repo := b.TempDir()
	tiny, _ := demomodels.Model(demomodels.V1)
	heavy := demomodels.MLPModel("heavy", demomodels.NewMLP(16384, 9), false)
	for name, model := range map[string][]byte{"tiny": tiny, "heavy": heavy} {
		for _, mode := range []string{"batched", "single"} {
			dir := filepath.Join(repo, name+"-"+mode)
			os.MkdirAll(filepath.Join(dir, "1"), 0o755)
			if err := os.WriteFile(filepath.Join(dir, "1", "model.onnx"), model, 0o644); err != nil {
				b.Fatal(err)
			}
			cfg := "warmup: 2\n"
			if mode == "batched" {
				cfg += "max_batch_size: 64\ndynamic_batching: {max_queue_delay: " + delay + "}\n"
			}
			if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(cfg), 0o644); err != nil {
				b.Fatal(err)
			}
		}
	}
	return repo
}

func oneRow() []oip.Tensor {
	return []oip.Tensor{featuresTensor(demomodels.RandomFeatures(1, 1))}
}

// BenchmarkRecommender compares, at batch 1, ONNX Runtime called in-process
// with the backend called in-process (validation, metrics, no transport) and
// over REST (JSON numbers, binary tensor data) and gRPC.
func BenchmarkRecommender(b *testing.B) {
	repo := benchRepo(b, "0s")
	be := backendtest.Start(b, backendtest.Options{Repository: repo})
	gc, err := client.DialGRPC(be.GRPCAddr)
	if err != nil {
		b.Fatal(err)
	}
	defer gc.Close()
	rj := client.NewHTTP("http://"+be.HTTPAddr, client.HTTPOptions{})
	defer rj.Close()
	rb := client.NewHTTP("http://"+be.HTTPAddr, client.HTTPOptions{Binary: true})
	defer rb.Close()
	ctx := context.Background()
	in := oneRow()

	for _, model := range []string{"tiny", "heavy"} {
		sess, err := backend.NewSession(filepath.Join(repo, model+"-single", "1", "model.onnx"), backend.SessionOptions{IntraOpThreads: 1, InterOpThreads: 1})
		if err != nil {
			b.Fatal(err)
		}
		defer sess.Close()
		name := model + "-single"
		req := &oip.InferRequest{ModelName: name, Inputs: in}
		calls := []struct {
			name string
			call func() error
		}{
			{"inprocess-ort", func() error { _, err := sess.Infer(in); return err }},
			{"inprocess-backend", func() error { _, err := be.Backend.Infer(ctx, req); return err }},
			{"rest-json", func() error { _, err := rj.Infer(ctx, req); return err }},
			{"rest-binary", func() error { _, err := rb.Infer(ctx, req); return err }},
			{"grpc", func() error { _, err := gc.Infer(ctx, req); return err }},
		}
		for _, c := range calls {
			for _, clients := range []int{1, 4} {
				b.Run(fmt.Sprintf("%s/%s/clients=%d", model, c.name, clients), func(b *testing.B) {
					load(b, clients, c.call)
				})
			}
		}
	}
}

// BenchmarkBatching: 32 concurrent gRPC clients sending one row each, with
// dynamic batching off and on, for the tiny and the heavy model; and
// in-process ONNX Runtime with the same 32 goroutines for reference.
func BenchmarkBatching(b *testing.B) {
	for _, delay := range []string{"0s", "500us", "2ms"} {
		repo := benchRepo(b, delay)
		be := backendtest.Start(b, backendtest.Options{Repository: repo})
		gc, err := client.DialGRPC(be.GRPCAddr)
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		in := oneRow()
		for _, model := range []string{"tiny", "heavy"} {
			for _, mode := range []string{"single", "batched"} {
				if mode == "single" && delay != "0s" {
					continue
				}
				req := &oip.InferRequest{ModelName: model + "-" + mode, Inputs: in}
				label := mode
				if mode == "batched" {
					label = "batched-delay=" + delay
				}
				b.Run(fmt.Sprintf("%s/grpc/%s/clients=32", model, label), func(b *testing.B) {
					before := histogram(b, be.Registry, "switchyard_backend_batch_size", req.ModelName)
					runs0, rows0 := before.GetSampleCount(), before.GetSampleSum()
					load(b, 32, func() error { _, err := gc.Infer(ctx, req); return err })
					h := histogram(b, be.Registry, "switchyard_backend_batch_size", req.ModelName)
					b.ReportMetric((h.GetSampleSum()-rows0)/float64(h.GetSampleCount()-runs0), "rows/run")
				})
			}
			if delay == "0s" {
				sess, err := backend.NewSession(filepath.Join(repo, model+"-single", "1", "model.onnx"), backend.SessionOptions{IntraOpThreads: 1, InterOpThreads: 1})
				if err != nil {
					b.Fatal(err)
				}
				b.Run(fmt.Sprintf("%s/inprocess-ort/clients=32", model), func(b *testing.B) {
					load(b, 32, func() error { _, err := sess.Infer(in); return err })
				})
				// In-process at batch sizes like the batcher's: rows/s is
				// the ceiling for batched serving.
				for _, rows := range []int{8, 16} {
					batch := []oip.Tensor{featuresTensor(demomodels.RandomFeatures(2, rows))}
					b.Run(fmt.Sprintf("%s/inprocess-ort-batch=%d/clients=2", model, rows), func(b *testing.B) {
						start := time.Now()
						load(b, 2, func() error { _, err := sess.Infer(batch); return err })
						b.ReportMetric(float64(b.N*rows)/time.Since(start).Seconds(), "rows/s")
					})
				}
				sess.Close()
			}
		}
		gc.Close()
		be.Close()
	}
}
