// Command loadgen drives OIP v2 REST inference load at one target and reports
// throughput, latency percentiles and the CPU the named processes used.
//
//	loadgen -url http://127.0.0.1:8080/v2/models/recommender/infer -rate 2000 -duration 10s -pid 1234
//	loadgen -url ... -concurrency 32 -duration 5s          # closed loop, max throughput
//
// Load is bounded in count and time and goes to 127.0.0.1 only. It uses the
// proxy's own lean HTTP/1.1 client (proxy/upstream) so the generator's CPU
// stays small next to what it measures. Fixed-rate latency is measured from
// each request's scheduled send time (no coordinated omission).
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchyard-dev/switchyard/internal/tlsutil"
	"github.com/switchyard-dev/switchyard/oip"
	"github.com/switchyard-dev/switchyard/proxy/upstream"
)

type result struct {
	Target        string  `json:"target"`
	Mode          string  `json:"mode"`
	Requests      int64   `json:"requests"`
	Errors        int64   `json:"errors"`
	Seconds       float64 `json:"seconds"`
	RPS           float64 `json:"rps"`
	P50ms         float64 `json:"p50_ms"`
	P90ms         float64 `json:"p90_ms"`
	P99ms         float64 `json:"p99_ms"`
	CPUSeconds    float64 `json:"cpu_seconds,omitempty"`
	ReqPerCPUSec  float64 `json:"requests_per_cpu_second,omitempty"`
	LoadgenCPUSec float64 `json:"loadgen_cpu_seconds"`
}

func main() {
	target := flag.String("url", "", "inference URL (http://127.0.0.1:PORT/v2/models/NAME/infer)")
	name := flag.String("name", "", "label for the report")
	rate := flag.Int("rate", 0, "requests per second (0: closed loop at -concurrency)")
	conc := flag.Int("concurrency", 32, "connections (closed loop) / max outstanding (fixed rate)")
	dur := flag.Duration("duration", 10*time.Second, "how long to send (at most 120s)")
	warm := flag.Duration("warmup", time.Second, "warm-up before measuring")
	pids := flag.String("pid", "", "comma-separated process ids whose CPU (utime+stime) is measured")
	header := flag.String("header", "", "extra header sent as-is, e.g. 'X-User-Id: 1' (unused by default)")
	samples := flag.String("samples", "", "write every measured latency (µs, one per line, sorted) to this file, for percentiles pooled over runs")
	caFile := flag.String("ca", "", "https: the CA file the target's certificate chains to")
	certFile := flag.String("cert", "", "https: a client certificate file (mTLS); with -key")
	keyFile := flag.String("key", "", "the key file of -cert")
	binary := flag.Bool("binary", false, "send the input as binary tensor data and ask for binary outputs (OIP binary extension) instead of JSON numbers")
	flag.Parse()
	_ = header
	u, err := url.Parse(*target)
	if err != nil || u.Host == "" || !strings.HasPrefix(u.Host, "127.0.0.1:") || (u.Scheme != "http" && u.Scheme != "https") {
		fmt.Fprintln(os.Stderr, "loadgen: -url must be http(s)://127.0.0.1:PORT/...")
		os.Exit(2)
	}
	if *dur > 120*time.Second {
		*dur = 120 * time.Second
	}
	data := make([]float32, 32)
	for i := range data {
		data[i] = float32(i%7) / 7
	}
	ir := &oip.InferRequest{Inputs: []oip.Tensor{oip.NewTensor("features", []int64{1, 32}, data)}}
	if *binary {
		ir = ir.WithBinaryOutput()
	}
	body, hl, err := oip.AppendInferRequest(nil, ir, *binary)
	if err != nil {
		panic(err)
	}
	pool := upstream.NewHTTPPool(u.Host, *conc+8)
	if u.Scheme == "https" {
		// Keep-alive connections: the handshakes happen in the warm-up.
		cfg, err := tlsutil.NewClientConfig(tlsutil.Files{CA: *caFile, Cert: *certFile, Key: *keyFile}, tlsutil.ClientOptions{})
		if err != nil {
			fmt.Fprintln(os.Stderr, "loadgen:", err)
			os.Exit(2)
		}
		pool = upstream.NewHTTPSPool(u.Host, *conc+8, cfg)
	}
	req := &upstream.Request{Path: u.Path, ContentType: "application/json", Body: body}
	if hl < len(body) {
		req.ContentType, req.HeaderLen = "application/octet-stream", hl
	}
	do := func(buf []byte) ([]byte, bool) {
		resp := upstream.Response{Body: buf[:0]}
		err := pool.Do(time.Now().Add(5*time.Second), req, &resp)
		return resp.Body, err == nil && resp.Status == 200
	}
	// Warm-up: open connections, warm caches. At a fixed rate the warm-up
	// runs at that rate too: a closed-loop burst just before the measured
	// window would leave backlogs (queues, GC debt) that the window then
	// pays for.
	var wg sync.WaitGroup
	wend := time.Now().Add(*warm)
	if *rate > 0 {
		paced(*rate, int(float64(*rate)*warm.Seconds()), *conc, time.Now(), do, nil)
	} else {
		for range *conc {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var buf []byte
				for time.Now().Before(wend) {
					buf, _ = do(buf)
				}
			}()
		}
		wg.Wait()
	}

	var pidList []int
	for _, s := range strings.Split(*pids, ",") {
		if s == "" {
			continue
		}
		n, err := strconv.Atoi(s)
		if err != nil {
			fmt.Fprintln(os.Stderr, "loadgen: bad -pid", s)
			os.Exit(2)
		}
		pidList = append(pidList, n)
	}
	cpu0 := cpuOf(pidList)
	self0 := cpuOf([]int{os.Getpid()})
	start := time.Now()
	end := start.Add(*dur)
	var nreq, nerr atomic.Int64
	lat := make([][]time.Duration, *conc)
	mode := "closed-loop c=" + strconv.Itoa(*conc)
	if *rate <= 0 {
		for w := range *conc {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var buf []byte
				var ok bool
				for {
					t0 := time.Now()
					if !t0.Before(end) {
						return
					}
					buf, ok = do(buf)
					lat[w] = append(lat[w], time.Since(t0))
					nreq.Add(1)
					if !ok {
						nerr.Add(1)
					}
				}
			}()
		}
	} else {
		mode = "fixed " + strconv.Itoa(*rate) + " rps"
		total := int(float64(*rate) * dur.Seconds())
		paced(*rate, total, *conc, start, do, func(w int, at time.Time, ok bool) {
			lat[w] = append(lat[w], time.Since(at))
			nreq.Add(1)
			if !ok {
				nerr.Add(1)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	cpu1 := cpuOf(pidList)
	self1 := cpuOf([]int{os.Getpid()})
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	if *samples != "" {
		if err := writeSamples(*samples, all); err != nil {
			fmt.Fprintln(os.Stderr, "loadgen:", err)
			os.Exit(1)
		}
	}
	pct := func(p float64) float64 {
		if len(all) == 0 {
			return 0
		}
		return float64(all[min(len(all)-1, int(p*float64(len(all))))].Microseconds()) / 1000
	}
	r := result{Target: *name, Mode: mode, Requests: nreq.Load(), Errors: nerr.Load(), Seconds: elapsed,
		RPS: float64(nreq.Load()) / elapsed, P50ms: pct(0.50), P90ms: pct(0.90), P99ms: pct(0.99),
		LoadgenCPUSec: self1 - self0}
	if len(pidList) > 0 {
		r.CPUSeconds = cpu1 - cpu0
		if r.CPUSeconds > 0 {
			r.ReqPerCPUSec = float64(r.Requests) / r.CPUSeconds
		}
	}
	b, _ := json.Marshal(r)
	fmt.Println(string(b))
}

// writeSamples writes the latencies in microseconds, one per line.
func writeSamples(path string, all []time.Duration) error {
	b := make([]byte, 0, 8*len(all))
	for _, d := range all {
		b = strconv.AppendInt(b, d.Microseconds(), 10)
		b = append(b, '\n')
	}
	return os.WriteFile(path, b, 0o644)
}

// paced sends total requests at rate from conc workers, the i-th scheduled
// for start + i/rate (a late worker does not shift the schedule: latency is
// counted from the scheduled time). done, if set, gets each outcome with
// the worker's index.
func paced(rate, total, conc int, start time.Time, do func([]byte) ([]byte, bool), done func(w int, at time.Time, ok bool)) {
	sched := make(chan time.Time, conc)
	var wg sync.WaitGroup
	for w := range conc {
		wg.Go(func() {
			var buf []byte
			var ok bool
			for at := range sched {
				buf, ok = do(buf)
				if done != nil {
					done(w, at, ok)
				}
			}
		})
	}
	interval := time.Second / time.Duration(rate)
	for i := range total {
		at := start.Add(time.Duration(i) * interval)
		if d := time.Until(at); d > 0 {
			time.Sleep(d)
		}
		sched <- at
	}
	close(sched)
	wg.Wait()
}

// cpuOf sums utime+stime (seconds) of the processes, from /proc/PID/stat.
func cpuOf(pids []int) float64 {
	const hz = 100 // USER_HZ on Linux
	total := 0.0
	for _, pid := range pids {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			fmt.Fprintln(os.Stderr, "loadgen:", err)
			os.Exit(1)
		}
		s := string(b)
		s = s[strings.LastIndexByte(s, ')')+2:]
		f := strings.Fields(s)
		// fields after ")": state(0) ... utime(11) stime(12)
		ut, _ := strconv.ParseFloat(f[11], 64)
		st, _ := strconv.ParseFloat(f[12], 64)
		total += (ut + st) / hz
	}
	return total
}
