// Command ranker supports the dynamic-batching benchmark
// (bench/backend/batching.sh): it writes the "ranker" benchmark model into a
// model repository, and it measures in-process ONNX Runtime on that model at
// a given batch size and thread layout — the ceiling the served model is
// compared with.
//
//	ranker write -repo DIR -config 'max_batch_size: 64'
//	ranker inprocess -model DIR/ranker/1/model.onnx -rows 16 -goroutines 2 -intra 1 -nospin -duration 5s
//
// The ranker is a ranking MLP with the demo recommender's signature
// (features FP32 [N,32] → scores FP32 [N,100]) and hidden widths
// 2048-2048-2048 (33 MB of weights): at batch 1 every row streams all the
// weights from memory, a joined batch streams them once.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/switchyard-dev/switchyard/inference-backend/backend"
	"github.com/switchyard-dev/switchyard/inference-backend/demomodels"
	"github.com/switchyard-dev/switchyard/oip"
)

// Hidden are the ranker's hidden widths.
var Hidden = []int{2048, 2048, 2048}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: ranker write|inprocess [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "write":
		err = write(os.Args[2:])
	case "inprocess":
		err = inprocess(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q (want write or inprocess)", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "ranker:", err)
		os.Exit(1)
	}
}

func write(args []string) error {
	fs := flag.NewFlagSet("write", flag.ExitOnError)
	repo := fs.String("repo", "", "model repository to write DIR/ranker/1/model.onnx and DIR/ranker/config.yaml into")
	name := fs.String("name", "ranker", "model name")
	cfg := fs.String("config", "", "config.yaml contents (validated by the backend's parser)")
	fs.Parse(args)
	if *repo == "" {
		return fmt.Errorf("-repo is required")
	}
	if _, err := backend.ParseModelConfig([]byte(*cfg)); err != nil {
		return fmt.Errorf("-config: %w", err)
	}
	dir := filepath.Join(*repo, *name)
	if err := os.MkdirAll(filepath.Join(dir, "1"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "1", "model.onnx"), demomodels.DeepModel(*name, Hidden, 11), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(*cfg), 0o644)
}

func inprocess(args []string) error {
	fs := flag.NewFlagSet("inprocess", flag.ExitOnError)
	model := fs.String("model", "", "model.onnx")
	rows := fs.Int("rows", 1, "rows per run (batch size)")
	goroutines := fs.Int("goroutines", 1, "concurrent runs")
	intra := fs.Int("intra", 1, "intra-op threads per session")
	nospin := fs.Bool("nospin", false, "session.intra_op.allow_spinning = 0")
	dur := fs.Duration("duration", 5*time.Second, "how long to run (at most 60s)")
	fs.Parse(args)
	if *dur > time.Minute {
		return fmt.Errorf("-duration: at most 60s")
	}
	if _, err := backend.InitORT(""); err != nil {
		return err
	}
	sess, err := backend.NewSession(*model, backend.SessionOptions{IntraOpThreads: *intra, InterOpThreads: 1, NoSpinning: *nospin})
	if err != nil {
		return err
	}
	defer sess.Close()
	feats := demomodels.RandomFeatures(2, *rows)
	flat := make([]float32, 0, *rows*demomodels.Features)
	for _, r := range feats {
		flat = append(flat, r...)
	}
	in := []oip.Tensor{oip.NewTensor(demomodels.InputName, []int64{int64(*rows), demomodels.Features}, flat)}
	if _, err := sess.Infer(in); err != nil { // warm-up
		return err
	}
	var runs atomic.Int64
	var wg sync.WaitGroup
	cpu0, start := processCPU(), time.Now()
	deadline := start.Add(*dur)
	for range *goroutines {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				if _, err := sess.Infer(in); err != nil {
					fmt.Fprintln(os.Stderr, "ranker:", err)
					os.Exit(1)
				}
				runs.Add(1)
			}
		})
	}
	wg.Wait()
	secs, cpu := time.Since(start).Seconds(), (processCPU() - cpu0).Seconds()
	n := float64(runs.Load() * int64(*rows))
	fmt.Printf("{\"rows\":%d,\"goroutines\":%d,\"intra\":%d,\"nospin\":%v,\"rows_per_second\":%.0f,\"cpu_seconds\":%.2f,\"rows_per_cpu_second\":%.0f}\n",
		*rows, *goroutines, *intra, *nospin, n/secs, cpu, n/cpu)
	return nil
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
