package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/switchyard-dev/switchyard/loadtest"
	"github.com/switchyard-dev/switchyard/oip"
)

// loadtestFlags are `syctl loadtest`'s options (docs/loadtest.md).
type loadtestFlags struct {
	addr, protocol, model, version string
	rate                           float64
	duration, timeout              time.Duration
	maxRequests, workers           int
	input                          string
	seed                           uint64
	distinct                       int
	ramp                           bool
	rampStart, rampFactor, rampMax float64
	rampStep, budget               time.Duration
	targetRate, headroom           float64
	backendPID                     int
	coldStart                      bool
	coldStartRequests              int
	backendAddr                    string
	repositoryTokenFile            string
	output, htmlFile               string
	allowRemote, quiet             bool
}

func (f *loadtestFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.addr, "addr", "", "target `HOST:PORT` of an OIP v2 endpoint: the proxy or a backend (required; same as --target)")
	fs.StringVar(&f.addr, "target", "", "target `ADDR` (host:port or http://host:port); the same as --addr")
	fs.StringVar(&f.protocol, "protocol", "rest", "rest (or http) or grpc")
	fs.StringVar(&f.model, "model", "", "model `NAME` (a proxy virtual model or a backend model; required)")
	fs.StringVar(&f.version, "model-version", "", "model `VERSION` (optional)")
	fs.Float64Var(&f.rate, "rate", 100, "requests per second (fixed-rate mode)")
	fs.DurationVar(&f.duration, "duration", 10*time.Second, "how long to send (whole ramp in --ramp mode; at most 1h)")
	fs.IntVar(&f.maxRequests, "max-requests", 1_000_000, "at most this many requests in all")
	fs.IntVar(&f.workers, "workers", 64, "concurrent requests at most (bounded worker pool; more queue, their wait counts)")
	fs.DurationVar(&f.timeout, "timeout", 10*time.Second, "per-request timeout")
	fs.StringVar(&f.input, "input", "", "`FILE` of OIP v2 REST requests, one JSON object per line (default: generate from the model's metadata)")
	fs.Uint64Var(&f.seed, "seed", 1, "seed of generated inputs")
	fs.IntVar(&f.distinct, "distinct", 16, "distinct generated requests, sent round robin")
	fs.BoolVar(&f.ramp, "ramp", false, "ramp mode: step the rate up until p99 exceeds --p99-budget or errors appear")
	fs.Float64Var(&f.rampStart, "ramp-start", 0, "first ramp rate (default --rate)")
	fs.Float64Var(&f.rampFactor, "ramp-factor", 1.5, "rate multiplier per ramp step")
	fs.Float64Var(&f.rampMax, "ramp-max", 100_000, "highest ramp rate")
	fs.DurationVar(&f.rampStep, "ramp-step", 5*time.Second, "duration of each ramp step")
	fs.DurationVar(&f.budget, "p99-budget", 100*time.Millisecond, "p99 latency budget of a ramp step")
	fs.Float64Var(&f.targetRate, "target-rate", 0, "ramp: estimate replicas needed for this many requests per second")
	fs.Float64Var(&f.headroom, "headroom", 0.3, "ramp: spare capacity fraction for the replica estimate")
	fs.IntVar(&f.backendPID, "backend-pid", 0, "`PID` of the backend process: report its CPU seconds and RSS (start, peak, end) from /proc")
	fs.BoolVar(&f.coldStart, "cold-start", false, "first unload and load the model on the backend (REST repository extension) and time load-to-ready and the first requests")
	fs.IntVar(&f.coldStartRequests, "cold-start-requests", 5, "requests timed one by one after the cold start")
	fs.StringVar(&f.repositoryTokenFile, "repository-token-file", "", "`FILE` holding the backend's repository token for --cold-start's unload and load (default $SWITCHYARD_REPOSITORY_TOKEN)")
	fs.StringVar(&f.backendAddr, "backend-addr", "", "backend REST `HOST:PORT` for --cold-start (default --addr)")
	fs.StringVar(&f.output, "o", "table", "output: table or json")
	fs.StringVar(&f.output, "output", "table", "output: table or json")
	fs.StringVar(&f.htmlFile, "html", "", "also write a self-contained HTML report with SVG plots to `FILE`")
	fs.BoolVar(&f.allowRemote, "allow-remote", false, "allow a target that is not a loopback address")
	fs.BoolVar(&f.quiet, "quiet", false, "no progress line on stderr")
}

// runLoadtest is `syctl loadtest` without a signal context.
func runLoadtest(args []string, stdout, stderr io.Writer) int {
	return runLoadtestCtx(context.Background(), args, stdout, stderr)
}

// runLoadtestCtx runs `syctl loadtest` and returns syctl's exit code:
// 0 the run completed without errors (ramp: a capacity was found), 1 some
// requests failed or the target could not be used, 2 usage, 3 model not
// found.
func runLoadtestCtx(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var f loadtestFlags
	fs := flag.NewFlagSet("loadtest", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	f.register(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stdout)
			fmt.Fprintln(stdout, "usage: syctl loadtest --target HOST:PORT --model NAME [flags]\n\nflags:")
			fs.PrintDefaults()
			return exitOK
		}
		return ltUsage(stderr, err.Error())
	}
	if fs.NArg() > 0 {
		return ltUsage(stderr, fmt.Sprintf("unexpected argument %q", fs.Arg(0)))
	}
	if f.addr == "" {
		return ltUsage(stderr, "--target (or --addr) is required")
	}
	if f.protocol == "http" {
		f.protocol = "rest"
	}
	if f.output != "table" && f.output != "json" {
		return ltUsage(stderr, fmt.Sprintf("-o: want table or json, got %q", f.output))
	}
	if f.duration > time.Hour {
		return ltUsage(stderr, "--duration: at most 1h")
	}
	if f.distinct < 1 || f.distinct > 10000 {
		return ltUsage(stderr, "--distinct: want 1..10000")
	}
	t := loadtest.Target{Protocol: f.protocol, Addr: f.addr, Model: f.model, Version: f.version, AllowRemote: f.allowRemote}
	addr, err := t.Validate()
	if err != nil {
		return ltUsage(stderr, err.Error())
	}
	var rampCfg loadtest.RampConfig
	var runCfg loadtest.Config
	if f.ramp {
		if f.rampStart == 0 {
			f.rampStart = f.rate
		}
		rampCfg = loadtest.RampConfig{StartRate: f.rampStart, Factor: f.rampFactor, MaxRate: f.rampMax, Step: f.rampStep,
			Budget: f.budget, Duration: f.duration, MaxRequests: f.maxRequests, Workers: f.workers, Timeout: f.timeout,
			TargetRate: f.targetRate, Headroom: f.headroom}
		err = rampCfg.Validate()
	} else {
		runCfg = loadtest.Config{Rate: f.rate, Duration: f.duration, MaxRequests: f.maxRequests, Workers: f.workers, Timeout: f.timeout}
		err = runCfg.Validate()
	}
	if err == nil && f.workers > 10000 {
		err = errors.New("--workers: at most 10000")
	}
	if err != nil {
		return ltUsage(stderr, err.Error())
	}
	backendAddr := addr
	if f.backendAddr != "" {
		bt := t
		bt.Addr, bt.Protocol = f.backendAddr, "rest"
		if backendAddr, err = bt.Validate(); err != nil {
			return ltUsage(stderr, "--backend-addr: "+err.Error())
		}
	}

	hc := loadtest.NewHTTPClient(f.workers)
	defer hc.CloseIdleConnections()
	rep := &loadtest.Report{Target: addr, Protocol: f.protocol, Model: f.model, Started: time.Now()}

	// Inputs.
	var reqs []*oip.InferRequest
	if f.input != "" {
		fh, err := os.Open(f.input)
		if err != nil {
			return ltUsage(stderr, fmt.Sprintf("--input: %v", err))
		}
		reqs, err = loadtest.ReadRequests(fh)
		fh.Close()
		if err != nil {
			return ltUsage(stderr, fmt.Sprintf("--input %s: %v", f.input, err))
		}
		rep.Inputs = fmt.Sprintf("file %s (%d requests)", f.input, len(reqs))
	} else {
		mctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		md, err := loadtest.FetchMetadata(mctx, t, addr, hc)
		cancel()
		if err != nil {
			fmt.Fprintf(stderr, "error: %v\n", err)
			if oip.CodeOf(err) == oip.NotFound {
				return exitNotFound
			}
			return exitError
		}
		if reqs, err = loadtest.Generate(md, f.distinct, f.seed); err != nil {
			fmt.Fprintf(stderr, "error: %v\n", err)
			return exitError
		}
		rep.Inputs = fmt.Sprintf("generated from metadata (%d distinct, seed %d)", len(reqs), f.seed)
	}

	var sender loadtest.Sender
	var restBodies []loadtest.Body
	{
		rs, err := loadtest.NewRESTSender(hc, backendAddr, f.model, "", reqs)
		if err != nil {
			fmt.Fprintf(stderr, "error: %v\n", err)
			return exitError
		}
		restBodies = rs.Bodies
	}
	if f.protocol == "grpc" {
		cc, err := loadtest.DialGRPC(addr)
		if err != nil {
			fmt.Fprintf(stderr, "error: %v\n", err)
			return exitError
		}
		defer cc.Close()
		gs, err := loadtest.NewGRPCSender(cc, f.model, f.version, reqs)
		if err != nil {
			fmt.Fprintf(stderr, "error: %v\n", err)
			return exitError
		}
		sender = gs
	} else {
		rs, err := loadtest.NewRESTSender(hc, addr, f.model, f.version, reqs)
		if err != nil {
			fmt.Fprintf(stderr, "error: %v\n", err)
			return exitError
		}
		sender = rs
	}

	if f.coldStart {
		token := strings.TrimSpace(os.Getenv("SWITCHYARD_REPOSITORY_TOKEN"))
		if f.repositoryTokenFile != "" {
			b, err := os.ReadFile(f.repositoryTokenFile)
			if err != nil {
				return ltUsage(stderr, "--repository-token-file: "+err.Error())
			}
			token = strings.TrimSpace(string(b))
		}
		cs, err := loadtest.MeasureColdStart(ctx, hc, loadtest.ColdStartConfig{Addr: backendAddr, Model: f.model, Requests: f.coldStartRequests, Token: token}, restBodies)
		if err != nil {
			fmt.Fprintf(stderr, "error: cold start: %v\n", err)
			return exitError
		}
		rep.ColdStart = cs
	}

	var watcher *loadtest.ProcWatcher
	if f.backendPID > 0 {
		if watcher, err = loadtest.WatchProc(f.backendPID, 100*time.Millisecond); err != nil {
			return ltUsage(stderr, "--backend-pid: "+err.Error())
		}
	}
	progress := func(prefix string, p loadtest.Progress) {
		if !f.quiet {
			fmt.Fprintf(stderr, "%s%3.0fs  sent %d  done %d  errors %d  in flight %d  p99 %s\n", prefix, p.Elapsed.Seconds(),
				p.Scheduled, p.Completed, p.Errors, p.InFlight, p.P99.Round(10*time.Microsecond))
		}
	}
	code := exitOK
	var runErr error
	if f.ramp {
		rampCfg.Progress = func(rate float64, p loadtest.Progress) { progress(fmt.Sprintf("[%.0f rps] ", rate), p) }
		var rr *loadtest.RampResult
		rr, runErr = loadtest.Ramp(ctx, rampCfg, sender)
		if rr != nil {
			rep.SetRamp(rr)
			if rr.Capacity <= 0 {
				code = exitError
			}
		}
	} else {
		runCfg.Progress = func(p loadtest.Progress) { progress("", p) }
		var res *loadtest.Result
		res, runErr = loadtest.Run(ctx, runCfg, sender)
		if res != nil {
			rep.SetRun(res)
			if res.ErrorCount() > 0 || res.Unsent > 0 {
				code = exitError
			}
		}
	}
	if watcher != nil {
		ps, err := watcher.Stop()
		if err != nil {
			fmt.Fprintf(stderr, "warning: --backend-pid: %v\n", err)
		} else {
			rep.Process = &ps
		}
	}
	if rep.Run != nil || rep.Ramp != nil {
		if f.output == "json" {
			_ = rep.WriteJSON(stdout)
		} else {
			_ = rep.WriteTable(stdout)
		}
		if f.htmlFile != "" {
			if err := writeHTMLFile(f.htmlFile, rep); err != nil {
				fmt.Fprintf(stderr, "error: --html: %v\n", err)
				code = exitError
			}
		}
	}
	if runErr != nil {
		fmt.Fprintf(stderr, "error: run stopped: %v\n", runErr)
		return exitError
	}
	if code != exitOK && rep.Run != nil {
		fmt.Fprintf(stderr, "error: %d of %d requests failed, %d unsent\n", rep.Run.Completed-rep.Run.OK, rep.Run.Scheduled, rep.Run.Unsent)
	}
	if code != exitOK && rep.Ramp != nil {
		fmt.Fprintf(stderr, "error: no ramp step passed: %s\n", rep.Ramp.StopReason)
	}
	return code
}

func writeHTMLFile(path string, rep *loadtest.Report) error {
	fh, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := rep.WriteHTML(fh); err != nil {
		fh.Close()
		return err
	}
	return fh.Close()
}

func ltUsage(stderr io.Writer, msg string) int {
	fmt.Fprintf(stderr, "error: %s\nusage: syctl loadtest --target HOST:PORT --model NAME [flags] (syctl loadtest -h for all flags)\n", msg)
	return exitUsage
}
