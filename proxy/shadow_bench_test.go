package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/inference-backend/backendtest"
	"github.com/switchyard-dev/switchyard/inference-backend/demomodels"
)

// BenchmarkShadowProxy drives REST requests (the demo recommender's JSON
// body, as the bench/proxy load generator sends) through a real proxy in
// this process to a real backend in its own process (switchyard backend,
// built from ./cmd/switchyard), with shadow mirroring off and at 100 % to
// v2 (topk, 4 workers; batched like bench/proxy/run.sh: maxRows 16,
// maxDelay 2ms, or one call per mirror). One op is one primary request;
// the timed region ends when every mirrored request has been compared, so
// the 100 % figures include the workers' whole cost. With the backend in
// another process, B/op, allocs/op and cpu-ns/op (this process's user +
// system CPU) are the proxy's (and the raw keep-alive clients', which
// allocate nothing per request): the difference between off and 100pct is
// the proxy's cost of a mirror. The agent cases run the mirror work in the
// shadow agent (this test binary re-executed): cpu-ns/op is then the
// proxy's side alone (capture and hand-off), the agent's CPU is not in it.
//
//	go test -run '^$' -bench ShadowProxy -benchmem ./proxy
func BenchmarkShadowProxy(b *testing.B) {
	bin := filepath.Join(b.TempDir(), "switchyard")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/switchyard").CombinedOutput(); err != nil {
		b.Fatalf("build switchyard: %v\n%s", err, out)
	}
	batch := &api.ShadowBatch{MaxRows: 16, MaxDelay: api.Duration(2 * time.Millisecond)}
	for _, tc := range []struct {
		name    string
		percent float64
		batch   *api.ShadowBatch
		process string
	}{
		{"off", 0, nil, ShadowInline},
		{"10pct", 10, batch, ShadowInline},
		{"100pct", 100, batch, ShadowInline},
		{"100pct-unbatched", 100, nil, ShadowInline},
		{"100pct-agent", 100, batch, ShadowAgent},
	} {
		b.Run(tc.name, func(b *testing.B) { benchShadowProxy(b, bin, tc.percent, tc.batch, tc.process) })
	}
}

// startBackendProcess runs `switchyard backend` on the demo models and
// returns its REST and gRPC addresses once its models are ready.
func startBackendProcess(b *testing.B, bin string) *backendtest.Running {
	repo := b.TempDir()
	if err := demomodels.WriteRepository(repo); err != nil {
		b.Fatal(err)
	}
	httpAddr, grpcAddr := freeAddr(b), freeAddr(b)
	cmd := exec.Command(bin, "backend", "--model-repository", repo, "--http", httpAddr, "--grpc", grpcAddr, "--log-level", "warn")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for _, model := range []string{"recommender-v1", "recommender-v2"} {
		for {
			resp, err := http.Get("http://" + httpAddr + "/v2/models/" + model + "/ready")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			if time.Now().After(deadline) {
				b.Fatalf("backend process: %s not ready: %v", model, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return &backendtest.Running{HTTPAddr: httpAddr, GRPCAddr: grpcAddr}
}

// freeAddr is a 127.0.0.1 address with a port that was free a moment ago.
func freeAddr(b *testing.B) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func benchShadowProxy(b *testing.B, bin string, percent float64, batch *api.ShadowBatch, process string) {
	be := startBackendProcess(b, bin)
	m := recommenderWith(be, func(m *api.Model) {
		if percent > 0 {
			m.Spec.Shadow = &api.Shadow{Version: "v2", Percent: percent, Workers: 4, Batch: batch,
				Compare: api.Compare{Mode: api.CompareTopK, K: 10}}
		}
	})
	// No record directory: as bench/proxy/run.sh runs the proxy (the ring
	// still keeps every comparison for the admin report).
	p, reg := featuresProxyNoRecords(b, Config{Models: []api.Model{m}}, process)
	const conns = 4
	clients := make([]*rawClient, conns)
	for i := range clients {
		body, _ := featuresBody(uint64(i + 1))
		clients[i] = dialRaw(b, p.HTTPAddr(), "/v2/models/recommender/infer", body)
	}
	compared := func() float64 {
		if process == ShadowAgent {
			// The comparisons the agent sent back (the canary's counts):
			// asking the agent for its metrics every millisecond would
			// cost the proxy more than the hand-off.
			c, _ := canaryShadowCounts(p, "recommender", "v2")
			return float64(c)
		}
		return metricSum(b, reg, "switchyard_shadow_compared_total", map[string]string{"model": "recommender"})
	}
	mirrored := func() float64 {
		return metricSum(b, reg, "switchyard_shadow_mirrored_total", map[string]string{"model": "recommender"})
	}
	// Warm up: connections, pools, the mirror's workers.
	for _, c := range clients {
		for range 50 {
			if err := c.do(); err != nil {
				b.Fatal(err)
			}
		}
	}
	if percent == 100 {
		waitCompared(b, compared, float64(50*conns))
	} else if percent > 0 {
		waitIdle(b, compared, mirrored)
	}
	batches := func() float64 {
		return metricSum(b, reg, "switchyard_shadow_batch_jobs", map[string]string{"model": "recommender"})
	}
	base, baseBatches := compared(), batches()
	runtime.GC()
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := processCPU()
	var ms0 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	var wg sync.WaitGroup
	n := b.N
	for i, c := range clients {
		k := n / conns
		if i < n%conns {
			k++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range k {
				if err := c.do(); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	switch {
	case process == ShadowAgent:
		// A starved agent (all cores busy: the agent is at SCHED_IDLE) may
		// drop at the hand-off: wait for every mirror compared or dropped
		// (asking every 50 ms: each look at the metrics asks the agent).
		deadline := time.Now().Add(60 * time.Second)
		for compared()+metricSum(b, reg, "switchyard_shadow_dropped_total", map[string]string{"model": "recommender"}) < base+float64(n) {
			if time.Now().After(deadline) {
				b.Fatalf("compared %v of %v mirrored requests", compared(), n)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if d := metricSum(b, reg, "switchyard_shadow_dropped_total", map[string]string{"model": "recommender"}); d > 0 {
			b.ReportMetric(d, "dropped")
		}
	case percent == 100:
		waitCompared(b, compared, base+float64(n))
	case percent > 0:
		// Sampled: wait until the mirror is idle (every mirrored job
		// compared), then count what was mirrored.
		waitIdle(b, compared, mirrored)
	}
	cpu := processCPU() - cpu0
	b.StopTimer()
	var ms1 runtime.MemStats
	runtime.ReadMemStats(&ms1)
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(n), "cpu-ns/op")
	// GC cycles per 1000 requests (x2 = cycles per second at 2000 rps).
	b.ReportMetric(1000*float64(ms1.NumGC-ms0.NumGC)/float64(n), "gc/1000op")
	if percent > 0 {
		b.ReportMetric(compared()-base, "compared")
		if n := batches() - baseBatches; n > 0 {
			b.ReportMetric(n, "batched-calls")
		}
	}
	for _, c := range clients {
		c.conn.Close()
	}
}

// processCPU is this process's user + system CPU time so far (the proxy
// and the clients).
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func waitIdle(b *testing.B, compared, mirrored func() float64) {
	deadline := time.Now().Add(60 * time.Second)
	for compared() < mirrored() {
		if time.Now().After(deadline) {
			b.Fatalf("compared %v of %v mirrored requests", compared(), mirrored())
		}
		time.Sleep(time.Millisecond)
	}
}

func waitCompared(b *testing.B, compared func() float64, want float64) {
	deadline := time.Now().Add(60 * time.Second)
	for compared() < want {
		if time.Now().After(deadline) {
			b.Fatalf("compared %v of %v mirrored requests", compared(), want)
		}
		time.Sleep(time.Millisecond)
	}
}

func featuresProxyNoRecords(b *testing.B, cfg Config, process string) (*Proxy, *prometheus.Registry) {
	b.Helper()
	reg := prometheus.NewRegistry()
	cfg.Registry = reg
	cfg.Features = FeaturesConfig{ShadowProcess: process}
	return startProxy(b, cfg), reg
}

// rawClient is one keep-alive HTTP/1.1 connection sending the same request.
type rawClient struct {
	conn net.Conn
	r    *bufio.Reader
	req  []byte
	buf  []byte
}

func dialRaw(b *testing.B, addr, path string, body []byte) *rawClient {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	req := fmt.Appendf(nil, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", path, addr, len(body))
	return &rawClient{conn: conn, r: bufio.NewReaderSize(conn, 16<<10), req: append(req, body...), buf: make([]byte, 0, 4096)}
}

var contentLengthPrefix = []byte("content-length:")

// do sends the request and reads the answer; anything but a 200 is an
// error.
func (c *rawClient) do() error {
	if _, err := c.conn.Write(c.req); err != nil {
		return err
	}
	status, n := 0, -1
	for {
		line, err := c.r.ReadSlice('\n')
		if err != nil {
			return err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			break
		}
		if status == 0 {
			if len(line) < 12 {
				return fmt.Errorf("status line %q", line)
			}
			status, _ = strconv.Atoi(string(line[9:12]))
			continue
		}
		if len(line) > len(contentLengthPrefix) && bytes.EqualFold(line[:len(contentLengthPrefix)], contentLengthPrefix) {
			n, _ = strconv.Atoi(string(bytes.TrimSpace(line[len(contentLengthPrefix):])))
		}
	}
	if n < 0 {
		return fmt.Errorf("answer without Content-Length")
	}
	if cap(c.buf) < n {
		c.buf = make([]byte, n)
	}
	c.buf = c.buf[:n]
	if _, err := io.ReadFull(c.r, c.buf); err != nil {
		return err
	}
	if status != 200 {
		return fmt.Errorf("status %d: %s", status, c.buf)
	}
	return nil
}
