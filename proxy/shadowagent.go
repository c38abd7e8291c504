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
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/switchyard-dev/switchyard/oip"
	"github.com/switchyard-dev/switchyard/routing"
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
// Proxy side (this file): the shadow invoker's capture is unchanged; the
// job goes on a bounded queue drained by one writer goroutine, which
// frames every job waiting (plus configuration and calls) into one buffer
// and writes it with one write. A full queue, or an agent that is down,
// drops the mirror and counts it (switchyard_shadow_dropped_total, reason
// handoff_full / agent_down): the request path never waits. A supervisor
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
}

// agentConfig is the proxy's live configuration as the agent needs it:
// the models that shadow, without their cache and fallback sections.
type agentConfig struct {
	Version string          `json:"version"`
	Models  []routing.Model `json:"models"`
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

func newAgentMetrics(reg prometheus.Registerer) *agentMetrics {
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
	reg.MustRegister(m.restarts, m.up, m.batch)
	return m
}

// shadowAgent is the proxy's side of the agent.
type shadowAgent struct {
	f       *features
	log     *slog.Logger
	command []string
	metrics *agentMetrics
	init    []byte // the init frame

	queue chan *shadowPayload
	calls chan *agentCall
	kick  chan struct{} // the configuration changed

	cfgMu  sync.Mutex
	cfg    []byte // the config frame's body
	cfgGen uint64 // bumped on each change

	conn   atomic.Pointer[agentConn]
	nextID atomic.Uint64
	pid    atomic.Int64 // the running agent's process id

	stop chan struct{}
	wg   sync.WaitGroup
}

// agentConn is one connection to one agent process.
type agentConn struct {
	c       net.Conn
	cfgSent uint64 // the writer's: the config generation this agent has
	done    chan struct{}
	once    sync.Once

	mu      sync.Mutex
	pending map[uint64]chan agentReply
}

type agentReply struct {
	body []byte
	err  error
}

type agentCall struct {
	conn *agentConn
	id   uint64
	kind byte
	args []byte
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
		command: f.cfg.ShadowAgentCommand,
		queue:   make(chan *shadowPayload, f.cfg.ShadowAgentQueue),
		calls:   make(chan *agentCall, 64),
		kick:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
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
	})
	a.init = appendFrame(nil, frameInit, init)
	a.cfg, _ = json.Marshal(agentConfig{Models: []routing.Model{}})
	conn, cmd, err := a.spawn()
	if err == nil {
		a.conn.Store(conn)
		a.wg.Add(1)
		go a.writer()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err = a.call(ctx, callStatus, nil)
		cancel()
		if err != nil {
			close(a.stop)
			conn.broken()
			stopProcess(cmd, time.Second)
			a.wg.Wait()
		}
	}
	if err != nil {
		f.log.Error("shadow agent not started: mirrors run in the proxy", "command", a.command, "error", err)
		return
	}
	a.metrics = newAgentMetrics(f.p.cfg.Registry)
	a.metrics.up.Set(1)
	f.p.cfg.Registry.MustRegister(agentCollector{a})
	a.wg.Add(1)
	go a.supervise(conn, cmd)
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
	conn := &agentConn{c: c, done: make(chan struct{}), pending: map[uint64]chan agentReply{}}
	if _, err := c.Write(a.init); err != nil {
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

// supervise waits for the agent to end and restarts it with backoff.
func (a *shadowAgent) supervise(conn *agentConn, cmd *exec.Cmd) {
	defer a.wg.Done()
	first := a.f.cfg.ShadowAgentRestartBackoff
	backoff := first
	for {
		started := time.Now()
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		select {
		case <-a.stop:
			// Closing the socket tells the agent to drain and exit.
			a.conn.Store(nil)
			conn.broken()
			select {
			case <-exited:
			case <-time.After(8 * time.Second):
				cmd.Process.Kill()
				<-exited
			}
			a.metrics.up.Set(0)
			return
		case err := <-exited:
			a.log.Warn("shadow agent ended; restarting", "error", err, "in", backoff)
		case <-conn.done:
			a.log.Warn("shadow agent connection lost; restarting", "in", backoff)
			cmd.Process.Kill()
			<-exited
		}
		a.conn.Store(nil)
		conn.broken()
		a.metrics.up.Set(0)
		if time.Since(started) > 30*time.Second {
			backoff = first
		}
		for {
			select {
			case <-a.stop:
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 5*time.Second)
			var err error
			conn, cmd, err = a.spawn()
			if err == nil {
				break
			}
			a.log.Error("shadow agent not restarted", "error", err, "retry in", backoff)
		}
		a.metrics.restarts.Inc()
		a.conn.Store(conn)
		a.metrics.up.Set(1)
		a.kickWriter()
	}
}

// close stops the agent: the queue is no longer written, the agent drains
// its mirrors and exits.
func (a *shadowAgent) close() {
	close(a.stop)
	a.wg.Wait()
	for {
		select {
		case pl := <-a.queue:
			a.drop(pl, dropAgentDown)
		default:
			return
		}
	}
}

func (a *shadowAgent) kickWriter() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// setConfig sends the live models that shadow to the agent (and again to
// every agent started later).
func (a *shadowAgent) setConfig(routes map[string]*Route) {
	cfg := agentConfig{Models: []routing.Model{}}
	for _, r := range routes {
		if rf := routeFeaturesOf(r); rf == nil || rf.mirror == nil {
			continue
		}
		m := r.Model.Clone()
		m.Spec.Cache, m.Spec.Fallback, m.Spec.Canary = nil, nil, nil
		cfg.Models = append(cfg.Models, m)
	}
	a.cfgMu.Lock()
	defer a.cfgMu.Unlock()
	cfg.Version = strconv.FormatUint(a.cfgGen+1, 10)
	b, err := json.Marshal(cfg)
	if err != nil {
		a.log.Error("shadow agent configuration not sent", "error", err)
		return
	}
	a.cfg = b
	a.cfgGen++
	a.kickWriter()
}

// offer hands a captured mirror to the writer without blocking.
func (a *shadowAgent) offer(pl *shadowPayload) {
	if a.conn.Load() == nil {
		a.drop(pl, dropAgentDown)
		return
	}
	select {
	case a.queue <- pl:
	default:
		a.drop(pl, dropHandoffFull)
	}
}

func (a *shadowAgent) drop(pl *shadowPayload, reason string) {
	ms := pl.pending.ms
	a.f.shm.Dropped(ms.model, ms.target, shadow.KindShadow, reason)
	if pl.pending.noise {
		a.f.shm.Dropped(ms.model, pl.primary.Name, shadow.KindNoiseFloor, reason)
	}
	pl.releaseBufs()
}

// maxHandoffBatch bounds the jobs framed into one write.
const maxHandoffBatch = 256

// handoffLinger is how long the writer waits after the first mirror of a
// batch for more. Each write to the socket, and each wake-up of the writer
// and of the agent, costs more CPU in the proxy (system call, cross-core
// wake-up) than framing many jobs: at 2000 mirrors/s one write per mirror
// cost ~50 µs of proxy CPU per mirror on a 2-core VM, as much as mirroring
// in process. A mirror's delay does not matter (shadow latency is timed by
// the agent's own call).
const handoffLinger = 5 * time.Millisecond

// writer frames what is waiting into one buffer and writes it at once.
func (a *shadowAgent) writer() {
	defer a.wg.Done()
	var (
		buf   = make([]byte, 0, 64<<10)
		batch []*shadowPayload
		calls []*agentCall
		job   agentJob
		wire  wireScratch
		timer = time.NewTimer(time.Hour)
	)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case pl := <-a.queue:
			batch = append(batch, pl)
			// Wait for more (mirrors arriving meanwhile queue without
			// waking anything); a call or a new configuration goes at once.
			timer.Reset(handoffLinger)
		linger:
			for len(a.queue) < maxHandoffBatch {
				select {
				case <-timer.C:
					break linger
				case c := <-a.calls:
					calls = append(calls, c)
					break linger
				case <-a.kick:
					break linger
				case <-a.stop:
					a.drop(pl, dropAgentDown)
					return
				}
			}
			timer.Stop()
		case c := <-a.calls:
			calls = append(calls, c)
		case <-a.kick:
		case <-a.stop:
			return
		}
	gather:
		for len(batch) < maxHandoffBatch {
			select {
			case pl := <-a.queue:
				batch = append(batch, pl)
			case c := <-a.calls:
				calls = append(calls, c)
			default:
				break gather
			}
		}
		conn := a.conn.Load()
		buf = buf[:0]
		if conn != nil {
			a.cfgMu.Lock()
			if conn.cfgSent != a.cfgGen {
				buf = appendFrame(buf, frameConfig, a.cfg)
				conn.cfgSent = a.cfgGen
			}
			a.cfgMu.Unlock()
		}
		for _, c := range calls {
			if c.conn == conn {
				buf = appendCallFrame(buf, c.id, c.kind, c.args)
			} else {
				c.conn.fail(c.id, errors.New("shadow agent restarted"))
			}
		}
		clear(calls)
		calls = calls[:0]
		if conn == nil {
			for _, pl := range batch {
				a.drop(pl, dropAgentDown)
			}
		} else {
			for _, pl := range batch {
				pl.toWire(&job, &wire)
				buf = appendJobFrame(buf, &job)
				job = agentJob{}
			}
			if len(batch) > 0 {
				a.metrics.observeBatch(len(batch))
			}
		}
		if conn != nil && len(buf) > 0 {
			if _, err := conn.c.Write(buf); err != nil {
				conn.broken()
				for _, pl := range batch {
					a.drop(pl, dropAgentDown)
				}
			}
		}
		for _, pl := range batch {
			pl.releaseBufs()
		}
		clear(batch)
		batch = batch[:0]
		if cap(buf) > 4<<20 {
			buf = make([]byte, 0, 64<<10)
		}
	}
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
	conn := a.conn.Load()
	if conn == nil {
		return nil, errors.New("shadow agent is not running (restarting)")
	}
	c := &agentCall{conn: conn, id: a.nextID.Add(1), kind: kind, args: args}
	ch := make(chan agentReply, 1)
	conn.mu.Lock()
	conn.pending[c.id] = ch
	conn.mu.Unlock()
	select {
	case a.calls <- c:
	case <-ctx.Done():
		conn.fail(c.id, ctx.Err())
		return nil, fmt.Errorf("shadow agent: %w", ctx.Err())
	}
	select {
	case r := <-ch:
		return r.body, r.err
	case <-conn.done:
		return nil, errors.New("shadow agent: connection closed")
	case <-ctx.Done():
		conn.fail(c.id, ctx.Err())
		return nil, fmt.Errorf("shadow agent: %w", ctx.Err())
	}
}

// wireScratch holds the writer's buffers for marshalling protobuf and
// decoded answers.
type wireScratch struct {
	req, resp []byte
}

// toWire fills j from a captured mirror (the writer's goroutine; j's
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
