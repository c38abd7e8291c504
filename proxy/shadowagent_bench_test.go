package proxy

import (
	"net"
	"os"
	"os/exec"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/switchyard-dev/switchyard/oip"
	"github.com/switchyard-dev/switchyard/shadow"
)

// BenchmarkShadowAgentHandoff is the proxy's side of a mirror in agent
// mode after the capture: framing into the hand-off buffer on the request
// path, the writes (one per batch) and the flusher's ticks, with the demo recommender's
// REST request (32 floats) and answer (100 floats) as the bench/proxy load
// generator sends them. The socket's other end is drained by another
// process (cat), so cpu-ns/op is this process's CPU alone. Two arrival
// patterns: "burst" offers as fast as possible (full batches), "2000rps"
// paces the offers at 2000 per second as bench/proxy/run.sh does (a batch
// per linger period, the wake-ups included; the pacing's own sleeps are in
// cpu-ns/op too, measured apart as "pacing-only").
//
//	go test -run '^$' -bench ShadowAgentHandoff -benchmem ./proxy
func BenchmarkShadowAgentHandoff(b *testing.B) {
	b.Run("burst", func(b *testing.B) { benchHandoff(b, 0, true, handoffLinger) })
	b.Run("2000rps", func(b *testing.B) { benchHandoff(b, 500*time.Microsecond, true, handoffLinger) })
	b.Run("2000rps-linger20ms", func(b *testing.B) { benchHandoff(b, 500*time.Microsecond, true, 20*time.Millisecond) })
	b.Run("pacing-only", func(b *testing.B) { benchHandoff(b, 500*time.Microsecond, false, handoffLinger) })
}

func benchHandoff(b *testing.B, every time.Duration, offer bool, linger time.Duration) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	mine, theirs := os.NewFile(uintptr(fds[0]), "mine"), os.NewFile(uintptr(fds[1]), "theirs")
	drain := exec.Command("cat")
	drain.Stdin = theirs
	if err := drain.Start(); err != nil {
		b.Skipf("no cat to drain the socket: %v", err)
	}
	theirs.Close()
	reg := prometheus.NewRegistry()
	a := &shadowAgent{
		f:          &features{shm: shadow.NewMetrics(reg)},
		metrics:    newAgentMetrics(),
		maxPending: 8 << 20,
		linger:     linger,
		idle:       true,
		arm:        make(chan struct{}, 1),
		stop:       make(chan struct{}),
	}
	c, err := net.FileConn(mine)
	mine.Close()
	if err != nil {
		b.Fatal(err)
	}
	conn, err := newAgentConn(c)
	if err != nil {
		b.Fatal(err)
	}
	a.conn.Store(conn)
	a.wg.Add(1)
	go a.flusher()
	defer func() {
		close(a.stop)
		a.wg.Wait()
		conn.broken()
		drain.Wait()
	}()

	body, _ := featuresBody(1)
	scores := make([]float32, 100)
	for i := range scores {
		scores[i] = float32(i) / 7
	}
	answer, hl, err := oip.AppendInferResponse(nil, &oip.InferResponse{ModelName: "recommender-v1",
		Outputs: []oip.Tensor{oip.NewTensor("scores", []int64{1, 100}, scores)}}, nil)
	if err != nil {
		b.Fatal(err)
	}
	ms := &mirrorState{model: "recommender", target: "v2", agent: a}
	v1, v2 := &Variant{Name: "v1"}, &Variant{Name: "v2"}
	capture := func() *shadowPayload {
		pl := &shadowPayload{target: v2, primary: v1, start: time.Now(), latency: time.Millisecond,
			bodyBuf: copyShadowBuf(body), respBuf: copyShadowBuf(answer), respStatus: 200, respHeaderLen: hl}
		pl.pending = shadowPending{ms: ms, pl: pl}
		return pl
	}
	runtime.GC()
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := processCPU()
	next := time.Now()
	for range b.N {
		if every > 0 {
			next = next.Add(every)
			if d := time.Until(next); d > 0 {
				time.Sleep(d)
			}
		}
		if offer {
			capture().pending.enqueue()
		}
	}
	// Until everything is written.
	for a.inFlight.Load() > 0 {
		time.Sleep(time.Millisecond)
	}
	cpu := processCPU() - cpu0
	b.StopTimer()
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
	if d := metricSum(b, reg, "switchyard_shadow_dropped_total", nil); d > 0 {
		b.ReportMetric(d, "dropped")
	}
}
