// Command benchcompare runs the side-by-side benchmark suite (package
// bench/compare); bench/compare.sh builds the binaries and calls it.
//
//	benchcompare --switchyard BIN [--nginx BIN] [--haproxy BIN] [--rates 1000,2000]
//	             [--duration 5s] [--warmup 1s] [--repeats 3] [--pieces a,b] [--json FILE] [--md FILE]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/switchyard-dev/switchyard/bench/compare"
)

func main() {
	os.Exit(run())
}

func run() int {
	var cfg compare.Config
	var rates, pieces, jsonOut, mdOut, proxyArgs string
	flag.StringVar(&cfg.Switchyard, "switchyard", "", "switchyard `BIN` (required)")
	flag.StringVar(&cfg.Nginx, "nginx", "", "nginx `BIN` (empty: skip nginx)")
	flag.StringVar(&cfg.HAProxy, "haproxy", "", "haproxy `BIN` (empty: skip haproxy)")
	flag.StringVar(&cfg.ORTLib, "ort-lib", "", "ONNX Runtime library (default: $SWITCHYARD_ORT_LIB or third_party/onnxruntime/ above the working directory)")
	flag.IntVar(&cfg.PeerWorkers, "peer-workers", 1, "nginx worker_processes and haproxy nbthread")
	flag.StringVar(&rates, "rates", "1000,2000", "fixed rates, requests per second, comma separated")
	flag.DurationVar(&cfg.Duration, "duration", 5*time.Second, "each measured run (at most 1m)")
	flag.DurationVar(&cfg.Warmup, "warmup", time.Second, "unmeasured run before each measured one")
	flag.IntVar(&cfg.Repeats, "repeats", 3, "repetitions (1..20)")
	flag.IntVar(&cfg.Workers, "workers", 64, "load generator workers")
	flag.StringVar(&pieces, "pieces", "", "comma-separated pieces (default all): "+strings.Join(compare.AllPieces, ","))
	flag.StringVar(&cfg.WorkDir, "work-dir", "", "keep configs and logs in `DIR` (default: a temporary folder, removed)")
	flag.StringVar(&jsonOut, "json", "", "also write every sample and the summary as JSON to `FILE`")
	flag.StringVar(&mdOut, "md", "", "also write the markdown tables to `FILE`")
	flag.StringVar(&proxyArgs, "proxy-args", "", "more flags for the switchyard proxy, space separated (e.g. --shadow-agent-priority=normal)")
	flag.Parse()
	cfg.ProxyArgs = strings.Fields(proxyArgs)
	usage := func(msg string) int {
		fmt.Fprintf(os.Stderr, "benchcompare: %s\n", msg)
		flag.Usage()
		return 2
	}
	if cfg.Switchyard == "" {
		return usage("--switchyard is required")
	}
	for _, f := range strings.Split(rates, ",") {
		r, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || !(r > 0) || r > 100_000 {
			return usage(fmt.Sprintf("--rates: %q is not a rate in (0, 100000]", f))
		}
		cfg.Rates = append(cfg.Rates, r)
	}
	if cfg.Duration <= 0 || cfg.Duration > time.Minute {
		return usage("--duration: want (0, 1m]")
	}
	if cfg.Warmup < 0 || cfg.Warmup > time.Minute {
		return usage("--warmup: want [0, 1m]")
	}
	if cfg.Repeats < 1 || cfg.Repeats > 20 {
		return usage("--repeats: want 1..20")
	}
	if pieces != "" {
		for _, p := range strings.Split(pieces, ",") {
			p = strings.TrimSpace(p)
			ok := false
			for _, k := range compare.AllPieces {
				ok = ok || k == p
			}
			if !ok {
				return usage(fmt.Sprintf("--pieces: unknown piece %q (want %s)", p, strings.Join(compare.AllPieces, ",")))
			}
			cfg.Pieces = append(cfg.Pieces, p)
		}
	}
	cfg.Progress = os.Stderr
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := compare.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "benchcompare: %v\n", err)
		if res == nil {
			return 1
		}
	}
	if err2 := res.WriteMarkdown(os.Stdout); err2 != nil {
		return 1
	}
	for _, out := range []struct {
		path  string
		write func(*os.File) error
	}{{jsonOut, func(f *os.File) error { return res.WriteJSON(f) }}, {mdOut, func(f *os.File) error { return res.WriteMarkdown(f) }}} {
		if out.path == "" {
			continue
		}
		f, ferr := os.Create(out.path)
		if ferr == nil {
			ferr = out.write(f)
			if cerr := f.Close(); ferr == nil {
				ferr = cerr
			}
		}
		if ferr != nil {
			fmt.Fprintf(os.Stderr, "benchcompare: %s: %v\n", out.path, ferr)
			return 1
		}
	}
	if err != nil {
		return 1
	}
	return 0
}
