package agent

import (
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/switchyard-dev/switchyard/oip"
)

// BenchmarkShadowAgentHandoff is the proxy's side of a mirror after the
// capture: framing into the hand-off buffer on the request path, the
// writes (one per batch) and the flusher's ticks, with the demo
// recommender's REST request (32 floats) and answer (100 floats) as the
// bench/proxy load generator sends them. (The proxy's copy of the bytes
// into its pooled buffers at capture is not in it: the exchange here hands
// its slices as they are.) The socket's other end is drained by another
// process (cat), so cpu-ns/op is this process's CPU alone. Two arrival
// patterns: "burst" offers as fast as possible (full batches), "2000rps"
// paces the offers at 2000 per second as bench/proxy/run.sh does (a batch
// per linger period, the wake-ups included; the pacing's own sleeps are in
// cpu-ns/op too, measured apart as "pacing-only").
//
//	go test -run '^$' -bench ShadowAgentHandoff -benchmem ./shadow/agent
func BenchmarkShadowAgentHandoff(b *testing.B) {
	b.Run("burst", func(b *testing.B) { benchHandoff(b, 0, true, handoffLinger) })
	b.Run("2000rps", func(b *testing.B) { benchHandoff(b, 500*time.Microsecond, true, handoffLinger) })
	b.Run("2000rps-linger20ms", func(b *testing.B) { benchHandoff(b, 500*time.Microsecond, true, 20*time.Millisecond) })
	b.Run("pacing-only", func(b *testing.B) { benchHandoff(b, 500*time.Microsecond, false, handoffLinger) })
}

// bytesExchange is a captured mirror as plain bytes (a REST request and
// the primary's REST answer).
type bytesExchange struct {
	req, resp []byte
	reqHL     int
	respHL    int
	start     time.Time
}

func (x *bytesExchange) WireJob(j *Job, _ *Scratch) {
	j.Start, j.Latency = x.start, time.Millisecond
	j.Request, j.RequestHeaderLen = x.req, x.reqHL
	j.Response, j.RespStatus, j.RespHeaderLen = x.resp, 200, x.respHL
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
	var dropped atomic.Int64
	c := newClient(Options{OnDrop: func(Key, string) { dropped.Add(1) }})
	c.linger = linger
	nc, err := net.FileConn(mine)
	mine.Close()
	if err != nil {
		b.Fatal(err)
	}
	cn, err := newConn(nc)
	if err != nil {
		b.Fatal(err)
	}
	c.conn.Store(cn)
	c.wg.Add(1)
	go c.flusher()
	defer func() {
		close(c.stop)
		c.wg.Wait()
		cn.broken()
		drain.Wait()
	}()

	row := make([]float32, 32)
	for i := range row {
		row[i] = rand.Float32()
	}
	body, reqHL, err := oip.AppendInferRequest(nil, &oip.InferRequest{Inputs: []oip.Tensor{oip.NewTensor("features", []int64{1, 32}, row)}}, false)
	if err != nil {
		b.Fatal(err)
	}
	scores := make([]float32, 100)
	for i := range scores {
		scores[i] = float32(i) / 7
	}
	answer, hl, err := oip.AppendInferResponse(nil, &oip.InferResponse{ModelName: "recommender-v1",
		Outputs: []oip.Tensor{oip.NewTensor("scores", []int64{1, 100}, scores)}}, nil)
	if err != nil {
		b.Fatal(err)
	}
	k := Key{Model: "recommender", Primary: "v1", Target: "v2"}
	x := &bytesExchange{req: body, reqHL: reqHL, resp: answer, respHL: hl}
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
			x.start = time.Now()
			c.Offer(k, x)
		}
	}
	// Until everything is written.
	for c.inFlight.Load() > 0 {
		time.Sleep(time.Millisecond)
	}
	cpu := processCPU() - cpu0
	b.StopTimer()
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
	if d := dropped.Load(); d > 0 {
		b.ReportMetric(float64(d), "dropped")
	}
}

// processCPU is this process's user + system CPU time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
