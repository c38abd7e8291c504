package proxy

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/internal/backoff"
	"github.com/switchyard-dev/switchyard/internal/tlsutil"
	"github.com/switchyard-dev/switchyard/oip"
	"github.com/switchyard-dev/switchyard/shadow"
)

// The shadow agent (FeaturesConfig.ShadowProcess = ShadowAgent). Mirroring
// a request costs tens of microseconds of CPU (decoding the client's
// request and the primary's answer, the shadow call, the comparison, the
// record); inside the proxy that work runs at the primary path's priority
// and shows in its tail latency. In agent mode the proxy only hands the
// captured bytes over: a child process of its own binary (the agent), at
// SCHED_IDLE priority, owns everything after the hand-off — its own
// mirrors, upstream pools to the shadow versions, comparisons, record
// files, the ring behind the report — and sends comparison counts back for
// the canary's shadow-disagreement gate.
//
// Proxy side (this file): the pipeline's capture step is unchanged; once
// the answer is written, the request's goroutine frames the job into the
// hand-off buffer (a memory copy under a mutex) and, when the buffer's
// oldest job is handoffLinger old or the buffer is big, writes the buffer
// with one non-blocking write. No goroutine is woken per mirror and there
// is one system call per batch: on this kind of VM every wake-up and
// every cross-core wake costs tens of microseconds of CPU, more than the
// framing. A flusher goroutine ticking every handoffTick (only while
// mirrors flow) writes what a quiet period left behind, and finishes
// writes the socket could not take at once. A full buffer (the agent is
// slow), or an agent that is down, drops the mirror and counts it
// (switchyard_shadow_dropped_total, reason handoff_full / agent_down): the
// request path never waits for the agent. A supervisor
// starts the agent (socketpair, Pdeathsig SIGKILL), restarts it with
// backoff when it dies (switchyard_shadow_agent_restarts_total) and
// re-sends the configuration. /metrics gathers the agent's
// switchyard_shadow_* families over the socket; /shadow/report and
// /shadow/records ask the agent.
//
// Agent side: shadowagent_run.go. Wire format: shadowagent_frame.go.

// Where mirrored requests are called and compared (FeaturesConfig.ShadowProcess).
const (
	ShadowInline = "inline" // in the proxy's process (the default)
	ShadowAgent  = "agent"  // in a low-priority child process (the shadow agent)
)

// EnvShadowAgent is set (to "1") in the shadow agent's environment: a
// binary that finds it runs RunShadowAgent instead of its usual main.
const EnvShadowAgent = "SWITCHYARD_SHADOW_AGENT"

// Drop reasons of the hand-off.
const (
	dropAgentDown   = "agent_down"
	dropHandoffFull = "handoff_full"
)

// agentFD is the socket's descriptor in the agent (ExtraFiles[0]).
const agentFD = 3

// agentInit is the first frame on a connection: what the agent's mirrors
// need besides the routes.
type agentInit struct {
	ShadowDir              string  `json:"shadowDir,omitempty"`
	ShadowRecordMaxBytes   int64   `json:"shadowRecordMaxBytes,omitempty"`
	ShadowRecordKeep       int     `json:"shadowRecordKeep,omitempty"`
	ShadowRecordAgreements float64 `json:"shadowRecordAgreements,omitempty"`
	ShadowRingSize         int     `json:"shadowRingSize,omitempty"`
	// UpstreamTLS is the proxy's default upstream TLS (Config.UpstreamTLS).
	UpstreamTLS *tlsutil.Files `json:"upstreamTLS,omitempty"`
}

// agentConfig is the proxy's live configuration as the agent needs it:
// the models that shadow, without their cache and fallback sections.
type agentConfig struct {
	Version string      `json:"version"`
	Models  []api.Model `json:"models"`
}

// agentQuery asks for a model's report or records.
type agentQuery struct {
	Model  string        `json:"model"`
	Window time.Duration `json:"window"`
}

// agentMetrics are the proxy-side series of the hand-off.
type agentMetrics struct {
	restarts prometheus.Counter
	up       prometheus.Gauge
	batch    prometheus.Histogram
}

// newAgentMetrics builds the series; the caller registers them.
func newAgentMetrics() *agentMetrics {
	m := &agentMetrics{
		restarts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchyard_shadow_agent_restarts_total", Help: "Times the shadow agent process was restarted after it ended.",
		}),
		up: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "switchyard_shadow_agent_up", Help: "1 while the shadow agent process is connected.",
		}),
		batch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "switchyard_shadow_agent_handoff_jobs", Help: "Mirrored requests handed to the shadow agent per socket write.",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128},
		}),
	}
	return m
}

// shadowAgent is the proxy's side of the agent.
type shadowAgent struct {
	f       *features
	log     *slog.Logger
	command []string
	metrics *agentMetrics
	init    []byte // the init frame

	maxPending int           // bytes of frames the hand-off buffer may hold
	linger     time.Duration // handoffLinger (a field for benchmarks)

	// The hand-off buffer, guarded by mu: frames not yet written to conn
	// (a configuration, calls, jobs), the jobs among them (counted as
	// dropped if the connection breaks) and when the oldest was added.
	mu       sync.Mutex
	pending  []byte
	jobs     []pendingJob
	firstAt  time.Time
	idle     bool   // the flusher is parked (armed by the next frame)
	cfg      []byte // the config frame's body (the live models that shadow)
	cfgGen   uint64
	wire     wireScratch
	wireJob  agentJob
	arm      chan struct{}
	conn     atomic.Pointer[agentConn] // written under mu
	nextID   atomic.Uint64
	pid      atomic.Int64 // the running agent's process id
	inFlight atomic.Int64 // jobs in pending (for the /fallback status)

	stop chan struct{}
	wg   sync.WaitGroup
}

// pendingJob is a job in the hand-off buffer, for counting it as dropped.
type pendingJob struct {
	ms      *mirrorState
	primary string
	noise   bool
}

// agentConn is one connection to one agent process.
type agentConn struct {
	c    net.Conn
	raw  syscall.RawConn
	done chan struct{}
	once sync.Once

	mu      sync.Mutex
	pending map[uint64]chan agentReply
}

type agentReply struct {
	body []byte
	err  error
}

// broken ends the connection: pending calls fail, the process is stopped.
func (c *agentConn) broken() {
	c.once.Do(func() {
		close(c.done)
		c.c.Close()
		c.mu.Lock()
		for id, ch := range c.pending {
			ch <- agentReply{err: errors.New("shadow agent: connection closed")}
			delete(c.pending, id)
		}
		c.mu.Unlock()
	})
}

// startAgent starts the agent and checks that it answers; on failure the
// features fall back to in-process mirrors (logged).
func (f *features) startAgent() {
	a := &shadowAgent{
		f: f, log: f.log.With("component", "shadow-agent"),
		command:    f.cfg.ShadowAgentCommand,
		maxPending: f.cfg.ShadowAgentBuffer,
		linger:     handoffLinger,
		idle:       true,
		arm:        make(chan struct{}, 1),
		stop:       make(chan struct{}),
	}
	if len(a.command) == 0 {
		exe, err := os.Executable()
		if err != nil {
			f.log.Error("shadow agent not started: mirrors run in the proxy", "error", err)
			return
		}
		a.command = []string{exe, "shadow-agent"}
	}
	init, _ := json.Marshal(agentInit{
		ShadowDir: f.shadowDir, ShadowRecordMaxBytes: f.cfg.ShadowRecordMaxBytes, ShadowRecordKeep: f.cfg.ShadowRecordKeep,
		ShadowRecordAgreements: f.cfg.ShadowRecordAgreements, ShadowRingSize: f.cfg.ShadowRingSize,
		UpstreamTLS: f.p.cfg.UpstreamTLS,
	})
	a.init = appendFrame(nil, frameInit, init)
	a.cfg, _ = json.Marshal(agentConfig{Models: []api.Model{}})
	a.metrics = newAgentMetrics() // registered once the agent answers
	started := make(chan error, 1)
	a.wg.Add(2)
	go a.flusher()
	go a.supervise(started)
	err := <-started
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err = a.call(ctx, callStatus, nil)
		cancel()
	}
	if err != nil {
		a.close()
		f.log.Error("shadow agent not started: mirrors run in the proxy", "command", a.command, "error", err)
		return
	}
	reg := f.p.cfg.Registry // only now: a proxy without an agent has none of these series
	reg.MustRegister(a.metrics.restarts, a.metrics.up, a.metrics.batch, agentCollector{a})
	f.agent = a
}

// spawn starts one agent process on a new socketpair and sends it the init
// frame.
func (a *shadowAgent) spawn() (*agentConn, *exec.Cmd, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("socketpair: %w", err)
	}
	// Room for bursts of mirrors while the low-priority agent waits for a core.
	unix.SetsockoptInt(fds[0], unix.SOL_SOCKET, unix.SO_SNDBUF, 4<<20)
	unix.SetsockoptInt(fds[1], unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20)
	mine, theirs := os.NewFile(uintptr(fds[0]), "shadow-agent"), os.NewFile(uintptr(fds[1]), "shadow-agent-peer")
	defer theirs.Close()
	c, err := net.FileConn(mine)
	mine.Close()
	if err != nil {
		return nil, nil, fmt.Errorf("shadow agent socket: %w", err)
	}
	cmd := exec.Command(a.command[0], a.command[1:]...)
	cmd.Env = append(os.Environ(), EnvShadowAgent+"=1")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.ExtraFiles = []*os.File{theirs}
	// The agent dies with the proxy. (Pdeathsig follows the thread that
	// started the child; the Go runtime does not end its threads here.)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("start %v: %w", a.command, err)
	}
	a.pid.Store(int64(cmd.Process.Pid))
	conn, err := newAgentConn(c)
	if err == nil {
		_, err = c.Write(a.init)
	}
	if err != nil {
		conn.broken()
		stopProcess(cmd, time.Second)
		return nil, nil, fmt.Errorf("shadow agent init: %w", err)
	}
	a.wg.Add(1)
	go a.reader(conn)
	return conn, cmd, nil
}

// stopProcess waits up to grace for cmd to end, then kills it.
func stopProcess(cmd *exec.Cmd, grace time.Duration) {
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		cmd.Process.Kill()
		<-done
	}
}

// supervise starts the agent (the first start's outcome goes to started),
// waits for it to end and restarts it with backoff. Its goroutine keeps
// its OS thread: Pdeathsig is sent when the thread that started the child
// ends, and a thread that only ever runs this goroutine ends with it.
func (a *shadowAgent) supervise(started chan<- error) {
	defer a.wg.Done()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	conn, cmd, err := a.spawn()
	if err == nil {
		// Connected before the start is reported: the starter's first
		// call must find the connection.
		a.connect(conn)
	}
	started <- err
	if err != nil {
		return
	}
	retry := backoff.Backoff{Initial: a.f.cfg.ShadowAgentRestartBackoff, Max: 5 * time.Second}
	for {
		started := time.Now()
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		select {
		case <-a.stop:
			// What is buffered goes out (if the socket takes it); closing
			// the socket then tells the agent to drain and exit.
			a.mu.Lock()
			a.flushLocked(conn)
			a.mu.Unlock()
			a.disconnect(conn)
			select {
			case <-exited:
			case <-time.After(8 * time.Second):
				cmd.Process.Kill()
				<-exited
			}
			return
		case err := <-exited:
			a.log.Warn("shadow agent ended; restarting", "error", err, "in", retry.Delay())
		case <-conn.done:
			a.log.Warn("shadow agent connection lost; restarting", "in", retry.Delay())
			cmd.Process.Kill()
			<-exited
		}
		a.disconnect(conn)
		if time.Since(started) > 30*time.Second {
			retry.Reset()
		}
		for {
			select {
			case <-a.stop:
				return
			case <-time.After(retry.Next()):
			}
			var err error
			conn, cmd, err = a.spawn()
			if err == nil {
				break
			}
			a.log.Error("shadow agent not restarted", "error", err, "retry in", retry.Delay())
		}
		a.metrics.restarts.Inc()
		a.connect(conn)
	}
}

// connect makes conn the live connection: the agent gets the current
// configuration first; jobs buffered for an earlier connection are dropped.
func (a *shadowAgent) connect(conn *agentConn) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.dropPendingLocked()
	a.pending = appendFrame(a.pending, frameConfig, a.cfg)
	a.conn.Store(conn)
	a.flushLocked(conn)
	a.armLocked()
	a.metrics.up.Set(1)
}

// disconnect ends conn; what it had not written is dropped.
func (a *shadowAgent) disconnect(conn *agentConn) {
	a.mu.Lock()
	if a.conn.Load() == conn {
		a.conn.Store(nil)
	}
	a.dropPendingLocked()
	a.mu.Unlock()
	conn.broken()
	a.metrics.up.Set(0)
}

// close stops the agent: nothing more is handed over, the agent drains
// its mirrors and exits.
func (a *shadowAgent) close() {
	close(a.stop)
	a.wg.Wait()
	a.mu.Lock()
	a.dropPendingLocked()
	a.mu.Unlock()
}

// setConfig sends the live models that shadow to the agent (and again to
// every agent started later).
func (a *shadowAgent) setConfig(routes map[string]*Route) {
	cfg := agentConfig{Models: []api.Model{}}
	for _, r := range routes {
		if rf := r.policies; rf == nil || rf.mirror == nil {
			continue
		}
		m := r.Model.Clone()
		m.Spec.Cache, m.Spec.Fallback, m.Spec.Canary = nil, nil, nil
		cfg.Models = append(cfg.Models, m)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	cfg.Version = strconv.FormatUint(a.cfgGen+1, 10)
	b, err := json.Marshal(cfg)
	if err != nil {
		a.log.Error("shadow agent configuration not sent", "error", err)
		return
	}
	a.cfg = b
	a.cfgGen++
	if conn := a.conn.Load(); conn != nil {
		a.pending = appendFrame(a.pending, frameConfig, b)
		a.flushLocked(conn)
		a.armLocked()
	}
}

// handoffLinger is how old the oldest buffered mirror gets before the
// request that finds it writes the buffer; handoffTick is the flusher's
// period while mirrors flow (it writes what a quiet moment left, and
// retries what the socket refused). A mirror's delay matters to nobody:
// the shadow's latency is timed by the agent's own call.
const (
	handoffLinger = 5 * time.Millisecond
	handoffTick   = 20 * time.Millisecond
	// handoffFlushBytes writes the buffer early once this big.
	handoffFlushBytes = 64 << 10
	// handoffIdleTicks parks the flusher after this many ticks with
	// nothing to write.
	handoffIdleTicks = 25
)

// offer hands a captured mirror to the agent without blocking: framed
// into the buffer, written when due. Runs on the request's goroutine once
// the answer is written.
func (a *shadowAgent) offer(pl *shadowPayload) {
	defer pl.releaseBufs()
	if a.conn.Load() == nil {
		a.drop(pl.pending.ms, pl.primary.Name, pl.pending.noise, dropAgentDown)
		return
	}
	a.mu.Lock()
	conn := a.conn.Load()
	var reason string
	switch {
	case conn == nil:
		reason = dropAgentDown
	case len(a.pending) >= a.maxPending:
		reason = dropHandoffFull
	}
	if reason != "" {
		a.mu.Unlock()
		a.drop(pl.pending.ms, pl.primary.Name, pl.pending.noise, reason)
		return
	}
	pl.toWire(&a.wireJob, &a.wire)
	a.pending = appendJobFrame(a.pending, &a.wireJob)
	a.wireJob = agentJob{}
	a.jobs = append(a.jobs, pendingJob{ms: pl.pending.ms, primary: pl.primary.Name, noise: pl.pending.noise})
	a.inFlight.Store(int64(len(a.jobs)))
	now := time.Now()
	if len(a.jobs) == 1 {
		a.firstAt = now
		a.armLocked()
	}
	if now.Sub(a.firstAt) >= a.linger || len(a.pending) >= handoffFlushBytes {
		a.flushLocked(conn)
	}
	a.mu.Unlock()
}

// armLocked wakes the parked flusher.
func (a *shadowAgent) armLocked() {
	if a.idle {
		a.idle = false
		select {
		case a.arm <- struct{}{}:
		default:
		}
	}
}

// flushLocked writes what the buffer holds with one non-blocking write;
// what the socket does not take stays for the next flush. A broken
// connection is left to the supervisor (its jobs are dropped there).
func (a *shadowAgent) flushLocked(conn *agentConn) {
	if len(a.pending) == 0 {
		return
	}
	n, err := conn.writeNonblocking(a.pending)
	if n == len(a.pending) {
		if len(a.jobs) > 0 {
			a.metrics.observeBatch(len(a.jobs))
		}
		a.pending, a.jobs = a.pending[:0], a.jobs[:0]
		a.inFlight.Store(0)
		if cap(a.pending) > 4*a.maxPending/3+handoffFlushBytes {
			a.pending = nil // after a burst: do not keep the big buffer
		}
	} else if n > 0 {
		// A frame cut in two: its rest goes first next time.
		a.pending = a.pending[:copy(a.pending, a.pending[n:])]
	}
	if err != nil {
		a.log.Debug("shadow agent write", "error", err)
		conn.broken()
	}
}

// dropPendingLocked counts the buffered jobs as dropped and empties the
// buffer.
func (a *shadowAgent) dropPendingLocked() {
	for _, j := range a.jobs {
		a.drop(j.ms, j.primary, j.noise, dropAgentDown)
	}
	clear(a.jobs)
	a.pending, a.jobs = a.pending[:0], a.jobs[:0]
	a.inFlight.Store(0)
}

func (a *shadowAgent) drop(ms *mirrorState, primary string, noise bool, reason string) {
	a.f.shm.Dropped(ms.model, ms.target, shadow.KindShadow, reason)
	if noise {
		a.f.shm.Dropped(ms.model, primary, shadow.KindNoiseFloor, reason)
	}
}

// flusher writes what sits in the buffer while mirrors flow (one tick per
// handoffTick), and parks after a quiet while until the next frame.
func (a *shadowAgent) flusher() {
	defer a.wg.Done()
	for {
		select {
		case <-a.arm:
		case <-a.stop:
			return
		}
		t := time.NewTicker(handoffTick)
		for quiet := 0; quiet < handoffIdleTicks; {
			select {
			case <-t.C:
			case <-a.stop:
				t.Stop()
				return
			}
			a.mu.Lock()
			if len(a.pending) == 0 {
				quiet++
			} else if quiet = 0; time.Since(a.firstAt) >= a.linger || len(a.jobs) == 0 {
				if conn := a.conn.Load(); conn != nil {
					a.flushLocked(conn)
				}
			}
			if quiet == handoffIdleTicks {
				a.idle = true
			}
			a.mu.Unlock()
		}
		t.Stop()
	}
}

// newAgentConn wraps the proxy's end of the socket.
func newAgentConn(c net.Conn) (*agentConn, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("shadow agent socket: %T has no raw descriptor", c)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("shadow agent socket: %w", err)
	}
	return &agentConn{c: c, raw: raw, done: make(chan struct{}), pending: map[uint64]chan agentReply{}}, nil
}

// writeNonblocking writes what the socket takes now (the descriptor is in
// non-blocking mode, as Go's network poller keeps it): n bytes, and an
// error only when the connection is broken.
func (c *agentConn) writeNonblocking(b []byte) (int, error) {
	n := 0
	var werr error
	err := c.raw.Write(func(fd uintptr) bool {
		for n < len(b) {
			k, err := unix.Write(int(fd), b[n:])
			if k > 0 {
				n += k
			}
			if err == unix.EINTR {
				continue
			}
			if err == unix.EAGAIN {
				break
			}
			if err != nil {
				werr = err
				break
			}
		}
		return true // never wait for the socket
	})
	if werr == nil {
		werr = err
	}
	return n, werr
}

func (m *agentMetrics) observeBatch(n int) {
	if m != nil {
		m.batch.Observe(float64(n))
	}
}

func (c *agentConn) fail(id uint64, err error) {
	c.mu.Lock()
	ch := c.pending[id]
	delete(c.pending, id)
	c.mu.Unlock()
	if ch != nil {
		ch <- agentReply{err: err}
	}
}

// reader takes the agent's replies and canary events.
func (a *shadowAgent) reader(conn *agentConn) {
	defer a.wg.Done()
	defer conn.broken()
	err := readFrames(conn.c, func(typ byte, body []byte) error {
		switch typ {
		case frameReply:
			id, ok, out, err := decodeReply(body)
			if err != nil {
				return err
			}
			conn.mu.Lock()
			ch := conn.pending[id]
			delete(conn.pending, id)
			conn.mu.Unlock()
			if ch == nil {
				return nil // its caller gave up
			}
			r := agentReply{body: append([]byte(nil), out...)}
			if !ok {
				r = agentReply{err: errors.New(string(out))}
			}
			ch <- r
		case frameEvents:
			evs, err := decodeEvents(body)
			if err != nil {
				return err
			}
			for _, e := range evs {
				for i := uint64(0); i < e.Compared; i++ {
					a.f.p.RecordShadow(e.Model, e.Version, i < e.Disagreed)
				}
			}
		default:
			return fmt.Errorf("shadow agent frame: type %d not expected from the agent", typ)
		}
		return nil
	})
	if err != nil && !errors.Is(err, net.ErrClosed) {
		a.log.Warn("shadow agent connection", "error", err)
	}
}

// readFrames reads frames from r and hands each to fn (its body is valid
// only during the call) until r ends or fn or the stream fails. A clean
// end between frames is a nil error.
func readFrames(r io.Reader, fn func(typ byte, body []byte) error) error {
	buf := make([]byte, 256<<10)
	start, end := 0, 0
	for {
		n, rerr := r.Read(buf[end:])
		end += n
		for {
			typ, body, used, err := parseFrame(buf[start:end])
			if errors.Is(err, errShortFrame) {
				break
			}
			if err != nil {
				return err
			}
			if err := fn(typ, body); err != nil {
				return err
			}
			start += used
		}
		if rerr != nil {
			if errors.Is(rerr, io.EOF) {
				if start == end {
					return nil
				}
				return io.ErrUnexpectedEOF
			}
			return rerr
		}
		// Keep the start of an incomplete frame at the front, in a buffer
		// big enough for the whole frame.
		end = copy(buf, buf[start:end])
		start = 0
		if end >= 4 {
			if need := 4 + int(binary.LittleEndian.Uint32(buf)); need > len(buf) {
				nb := make([]byte, need)
				copy(nb, buf[:end])
				buf = nb
			}
		}
	}
}

// call asks the agent and waits for its reply.
func (a *shadowAgent) call(ctx context.Context, kind byte, args []byte) ([]byte, error) {
	a.mu.Lock()
	conn := a.conn.Load()
	if conn == nil {
		a.mu.Unlock()
		return nil, errors.New("shadow agent is not running (restarting)")
	}
	id := a.nextID.Add(1)
	ch := make(chan agentReply, 1)
	conn.mu.Lock()
	conn.pending[id] = ch
	conn.mu.Unlock()
	a.pending = appendCallFrame(a.pending, id, kind, args)
	a.flushLocked(conn)
	a.armLocked() // finishes the write if the socket was full
	a.mu.Unlock()
	select {
	case r := <-ch:
		return r.body, r.err
	case <-conn.done:
		return nil, errors.New("shadow agent: connection closed")
	case <-ctx.Done():
		conn.fail(id, ctx.Err())
		return nil, fmt.Errorf("shadow agent: %w", ctx.Err())
	}
}

// wireScratch holds the hand-off's buffers for marshalling protobuf and
// decoded answers.
type wireScratch struct {
	req, resp []byte
}

// toWire fills j from a captured mirror (under the hand-off lock; j's
// slices alias pl's buffers and s until the frame is written).
func (pl *shadowPayload) toWire(j *agentJob, s *wireScratch) {
	ms := pl.pending.ms
	*j = agentJob{Model: ms.model, PrimaryVersion: pl.primary.Name, TargetVersion: pl.target.Name,
		Noise: pl.pending.noise, Start: pl.start, Latency: pl.latency}
	if pl.pbReq != nil {
		s.req, _ = proto.MarshalOptions{}.MarshalAppend(s.req[:0], pl.pbReq)
		j.GRPC, j.Request = true, s.req
	} else if pl.bodyBuf != nil {
		j.Request, j.RequestHeaderLen = *pl.bodyBuf, pl.headerLen
	}
	switch {
	case pl.primaryErr != nil:
		j.PrimaryErr = pl.primaryErr.Error()
		if j.PrimaryErr == "" {
			j.PrimaryErr = "error"
		}
		j.PrimaryCode = int(oip.CodeOf(pl.primaryErr))
		j.PrimaryNaN = errors.Is(pl.primaryErr, shadow.ErrNaNOutput)
	case pl.respPB != nil:
		s.resp, _ = proto.MarshalOptions{}.MarshalAppend(s.resp[:0], pl.respPB)
		j.RespProto, j.Response, j.RespStatus = true, s.resp, 200
	case pl.resp != nil:
		var err error
		var hl int
		s.resp, hl, err = oip.AppendInferResponse(s.resp[:0], pl.resp, nil)
		if err != nil {
			j.PrimaryErr, j.PrimaryCode = "primary answer: "+err.Error(), int(oip.Internal)
		} else {
			j.Response, j.RespStatus, j.RespHeaderLen = s.resp, 200, hl
		}
	case pl.respBuf != nil:
		j.Response, j.RespStatus, j.RespHeaderLen = *pl.respBuf, pl.respStatus, pl.respHeaderLen
	}
}

// agentCollector gathers the agent's switchyard_shadow_* metric families
// into the proxy's registry at scrape time (an unchecked collector: the
// families are known only once asked).
type agentCollector struct{ a *shadowAgent }

func (agentCollector) Describe(chan<- *prometheus.Desc) {}

func (c agentCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	b, err := c.a.call(ctx, callMetrics, nil)
	if err != nil {
		c.a.log.Warn("shadow agent metrics not gathered", "error", err)
		return
	}
	mfs, err := decodeMetricFamilies(b)
	if err != nil {
		c.a.log.Warn("shadow agent metrics not gathered", "error", err)
		return
	}
	for _, m := range constMetrics(mfs) {
		ch <- m
	}
}
