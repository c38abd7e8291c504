package backend_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
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
	gc := dialGRPC(b, be)
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

// rankerHidden are the hidden widths of the "ranker" benchmark model: a
// ranking MLP (32→2048→2048→2048→100, 33 MB of weights) whose batch-1 run
// streams every weight from memory for one row, the case dynamic batching
// exists for.
var rankerHidden = []int{2048, 2048, 2048}

// batchingCase is one server configuration of BenchmarkBatching.
type batchingCase struct {
	name      string
	batching  bool
	delay     string
	instances int
	intra     int
	spinning  bool
}

func (c batchingCase) configYAML() string {
	cfg := fmt.Sprintf("warmup: 2\nmax_batch_size: 64\nintra_op_threads: %d\nallow_spinning: %v\n", c.intra, c.spinning)
	if c.batching {
		cfg += fmt.Sprintf("instance_count: %d\ndynamic_batching: {max_queue_delay: %s, preferred_batch_sizes: [%d]}\n", c.instances, c.delay, 32/c.instances)
	}
	return cfg
}

// BenchmarkBatching: 32 concurrent clients sending one row each to the
// ranker model, dynamic batching off and on (several thread/instance
// layouts), over gRPC and REST with binary tensor data; then in-process
// ONNX Runtime at batch 1 (32 goroutines) and at the batch sizes the
// batcher formed, with the same session options: the ceiling for serving.
// Each case reports req/s, p50/p99, rows per ONNX Runtime run, and the
// process CPU per request (client and server share the process and the
// cores).
//
//	go test -run '^$' -bench BenchmarkBatching -benchtime 4000x ./inference-backend/backend/
func BenchmarkBatching(b *testing.B) {
	cases := []batchingCase{
		{name: "off", intra: 1, spinning: true},                                         // ONNX Runtime's defaults
		{name: "on-inst1-intra2", batching: true, delay: "2ms", instances: 1, intra: 2}, // spinning off
		{name: "on-inst2-intra1", batching: true, delay: "4ms", instances: 2, intra: 1},
	}
	repo := b.TempDir()
	model := demomodels.DeepModel("ranker", rankerHidden, 11)
	for _, c := range cases {
		dir := filepath.Join(repo, "ranker-"+c.name)
		os.MkdirAll(filepath.Join(dir, "1"), 0o755)
		if err := os.WriteFile(filepath.Join(dir, "1", "model.onnx"), model, 0o644); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(c.configYAML()), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	be := backendtest.Start(b, backendtest.Options{Repository: repo})
	gc := dialGRPC(b, be)
	rb := client.NewHTTP("http://"+be.HTTPAddr, client.HTTPOptions{Binary: true})
	defer rb.Close()
	ctx := context.Background()
	in := oneRow()
	for _, c := range cases {
		for _, transport := range []string{"grpc", "rest-binary"} {
			req := &oip.InferRequest{ModelName: "ranker-" + c.name, Inputs: in}
			call := func() error { _, err := gc.Infer(ctx, req); return err }
			if transport == "rest-binary" {
				call = func() error { _, err := rb.Infer(ctx, req); return err }
			}
			b.Run(fmt.Sprintf("ranker/%s/%s/clients=32", transport, c.name), func(b *testing.B) {
				before := histogram(b, be.Registry, "switchyard_backend_batch_size", req.ModelName)
				runs0, rows0 := before.GetSampleCount(), before.GetSampleSum()
				cpu0 := processCPU()
				load(b, 32, call)
				b.ReportMetric(float64(processCPU()-cpu0)/float64(time.Microsecond)/float64(b.N), "cpu-µs/req")
				h := histogram(b, be.Registry, "switchyard_backend_batch_size", req.ModelName)
				b.ReportMetric((h.GetSampleSum()-rows0)/float64(h.GetSampleCount()-runs0), "rows/run")
			})
		}
	}
	// In-process references with the layouts above.
	path := filepath.Join(repo, "ranker-off", "1", "model.onnx")
	type ref struct {
		name            string
		goroutines, row int
		opts            backend.SessionOptions
	}
	refs := []ref{{"batch=1/32x-intra1", 32, 1, backend.SessionOptions{IntraOpThreads: 1, InterOpThreads: 1}}}
	for _, rows := range []int{8, 16, 32} {
		refs = append(refs,
			ref{fmt.Sprintf("batch=%d/1x-intra2", rows), 1, rows, backend.SessionOptions{IntraOpThreads: 2, InterOpThreads: 1, NoSpinning: true}},
			ref{fmt.Sprintf("batch=%d/2x-intra1", rows), 2, rows, backend.SessionOptions{IntraOpThreads: 1, InterOpThreads: 1, NoSpinning: true}})
	}
	for _, r := range refs {
		sess, err := backend.NewSession(path, r.opts)
		if err != nil {
			b.Fatal(err)
		}
		batch := []oip.Tensor{featuresTensor(demomodels.RandomFeatures(2, r.row))}
		b.Run("ranker/inprocess-ort/"+r.name, func(b *testing.B) {
			start := time.Now()
			load(b, r.goroutines, func() error { _, err := sess.Infer(batch); return err })
			b.ReportMetric(float64(b.N*r.row)/time.Since(start).Seconds(), "rows/s")
		})
		sess.Close()
	}
}

// processCPU is the CPU time (user + system) this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
