package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/internal/backoff"
)

// Options configure a Client. Zero values take defaults.
type Options struct {
	// Command starts the agent (default: this executable with the
	// argument "shadow-agent"; the binary must run Main at start, as any
	// binary linking the proxy does).
	Command []string
	// Init is sent to every agent started (Protocol is set by Start).
	Init Init
	// Buffer bounds the bytes of mirrors waiting for the hand-off (default
	// 8 MiB); more are dropped (DropHandoffFull).
	Buffer int
	// RestartBackoff is the first restart delay, doubling up to 5 s
	// (default 100ms).
	RestartBackoff time.Duration
	Logger         *slog.Logger
	// Registry gets the hand-off's series and a collector of the agent's
	// switchyard_shadow_* families, once the agent answered.
	Registry prometheus.Registerer
	// OnDrop counts a mirror that did not reach the agent (reason
	// DropAgentDown or DropHandoffFull). Called with the hand-off's lock
	// held: it must not call back into the Client.
	OnDrop func(k Key, reason string)
	// OnCompared gets the agent's comparison counts of one (model, shadow
	// version), for the canary's shadow-disagreement gate.
	OnCompared func(model, version string, compared, disagreed uint64)
}

// Exchange is a captured mirror as the proxy hands it to Offer.
type Exchange interface {
	// WireJob fills j's request and primary-outcome fields (Model, the
	// versions and Noise come from the Key). j's slices may alias the
	// exchange and s (scratch buffers the Client keeps) until Offer
	// returns: the frame is copied into the hand-off buffer at once.
	WireJob(j *Job, s *Scratch)
}

// Scratch holds the hand-off's buffers for marshalling requests and
// answers (reused from mirror to mirror, under the hand-off's lock).
type Scratch struct {
	Req, Resp []byte
}

// Client is the proxy's side of the shadow agent: the supervisor of the
// agent process and the hand-off of captured mirrors to it (see doc.go).
type Client struct {
	o       Options
	log     *slog.Logger
	metrics *clientMetrics
	init    []byte // the init frame

	maxPending int           // bytes of frames the hand-off buffer may hold
	linger     time.Duration // handoffLinger (a field for benchmarks)

	// The hand-off buffer, guarded by mu: frames not yet written to conn
	// (a configuration, calls, jobs), the jobs among them (counted as
	// dropped if the connection breaks) and when the oldest was added.
	mu       sync.Mutex
	pending  []byte
	jobs     []Key
	firstAt  time.Time
	written  uint64 // jobs written to the socket
	idle     bool   // the flusher is parked (armed by the next frame)
	cfg      []byte // the config frame's body (the live models that shadow)
	cfgGen   uint64
	scratch  Scratch
	wireJob  Job
	arm      chan struct{}
	conn     atomic.Pointer[conn] // written under mu
	nextID   atomic.Uint64
	pid      atomic.Int64 // the running agent's process id
	inFlight atomic.Int64 // jobs in pending

	// The agent's metrics as last gathered (collector).
	lastMu      sync.Mutex
	lastMetrics []prometheus.Metric
	lastAt      time.Time

	stop      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

// clientMetrics are the proxy-side series of the hand-off.
type clientMetrics struct {
	restarts prometheus.Counter
	up       prometheus.Gauge
	batch    prometheus.Histogram
}

func newClientMetrics() *clientMetrics {
	return &clientMetrics{
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
}

// conn is one connection to one agent process.
type conn struct {
	c    net.Conn
	raw  syscall.RawConn
	done chan struct{}
	once sync.Once

	mu      sync.Mutex
	pending map[uint64]chan reply
}

type reply struct {
	body []byte
	err  error
}

// broken ends the connection: pending calls fail.
func (c *conn) broken() {
	c.once.Do(func() {
		close(c.done)
		c.c.Close()
		c.mu.Lock()
		for id, ch := range c.pending {
			ch <- reply{err: errors.New("shadow agent: connection closed")}
			delete(c.pending, id)
		}
		c.mu.Unlock()
	})
}

// newClient fills in the defaults; nothing is started.
func newClient(o Options) *Client {
	if o.Buffer <= 0 {
		o.Buffer = 8 << 20
	}
	if o.RestartBackoff <= 0 {
		o.RestartBackoff = 100 * time.Millisecond
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.OnDrop == nil {
		o.OnDrop = func(Key, string) {}
	}
	o.Init.Protocol = ProtocolVersion
	c := &Client{
		o: o, log: o.Logger,
		maxPending: o.Buffer,
		linger:     handoffLinger,
		idle:       true,
		arm:        make(chan struct{}, 1),
		stop:       make(chan struct{}),
		metrics:    newClientMetrics(),
	}
	init, _ := json.Marshal(o.Init)
	c.init = appendFrame(nil, frameInit, init)
	c.cfg, _ = json.Marshal(config{Models: []api.Model{}})
	return c
}

// startTimeout bounds the first start: the agent must answer a status
// call within it.
const startTimeout = 10 * time.Second

// Start starts the agent and checks that it answers (within 10 s). On
// success the Client's series are registered on o.Registry; on failure
// nothing is left running.
func Start(o Options) (*Client, error) {
	prio, err := ParsePriority(o.Init.Priority)
	if err != nil {
		return nil, err
	}
	o.Init.Priority = prio
	c := newClient(o)
	if len(c.o.Command) == 0 {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("shadow agent: %w", err)
		}
		c.o.Command = []string{exe, "shadow-agent"}
	}
	started := make(chan error, 1)
	c.wg.Add(2)
	go c.flusher()
	go c.supervise(started)
	err = <-started
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
		_, err = c.call(ctx, callStatus, nil)
		cancel()
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("shadow agent %v: %w", c.o.Command, err)
	}
	if reg := c.o.Registry; reg != nil { // only now: a proxy without an agent has none of these series
		reg.MustRegister(c.metrics.restarts, c.metrics.up, c.metrics.batch, collector{c})
	}
	return c, nil
}

// PID is the running agent's process id (0 before the first start).
func (c *Client) PID() int { return int(c.pid.Load()) }

// Buffered is how many mirrors wait in the hand-off buffer.
func (c *Client) Buffered() int { return int(c.inFlight.Load()) }

// Handoff reads the hand-off's books at one moment: mirrors written to the
// agent's socket since the start, and mirrors still buffered.
func (c *Client) Handoff() (written, buffered uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.written, uint64(len(c.jobs))
}

// spawn starts one agent process on a new socketpair and sends it the init
// frame.
func (c *Client) spawn() (*conn, *exec.Cmd, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("socketpair: %w", err)
	}
	// Room for bursts of mirrors while the low-priority agent waits for a core.
	unix.SetsockoptInt(fds[0], unix.SOL_SOCKET, unix.SO_SNDBUF, 4<<20)
	unix.SetsockoptInt(fds[1], unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20)
	mine, theirs := os.NewFile(uintptr(fds[0]), "shadow-agent"), os.NewFile(uintptr(fds[1]), "shadow-agent-peer")
	defer theirs.Close()
	nc, err := net.FileConn(mine)
	mine.Close()
	if err != nil {
		return nil, nil, fmt.Errorf("shadow agent socket: %w", err)
	}
	cmd := exec.Command(c.o.Command[0], c.o.Command[1:]...)
	cmd.Env = append(os.Environ(), EnvVar+"=1")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.ExtraFiles = []*os.File{theirs}
	// The agent dies with the proxy. (Pdeathsig follows the thread that
	// started the child; supervise keeps that thread.)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("start %v: %w", c.o.Command, err)
	}
	c.pid.Store(int64(cmd.Process.Pid))
	cn, err := newConn(nc)
	if err == nil {
		_, err = nc.Write(c.init)
	}
	if err != nil {
		if cn != nil {
			cn.broken()
		} else {
			nc.Close()
		}
		stopProcess(cmd, time.Second)
		return nil, nil, fmt.Errorf("shadow agent init: %w", err)
	}
	c.wg.Add(1)
	go c.reader(cn)
	return cn, cmd, nil
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
func (c *Client) supervise(started chan<- error) {
	defer c.wg.Done()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cn, cmd, err := c.spawn()
	if err == nil {
		// Connected before the start is reported: the starter's first
		// call must find the connection.
		c.connect(cn)
	}
	started <- err
	if err != nil {
		return
	}
	retry := backoff.Backoff{Initial: c.o.RestartBackoff, Max: 5 * time.Second}
	for {
		started := time.Now()
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		select {
		case <-c.stop:
			// What is buffered goes out (if the socket takes it); closing
			// the socket then tells the agent to drain and exit.
			c.mu.Lock()
			c.flushLocked(cn)
			c.mu.Unlock()
			c.disconnect(cn)
			select {
			case <-exited:
			case <-time.After(8 * time.Second):
				cmd.Process.Kill()
				<-exited
			}
			return
		case err := <-exited:
			c.log.Warn("shadow agent ended; restarting", "error", err, "in", retry.Delay())
		case <-cn.done:
			c.log.Warn("shadow agent connection lost; restarting", "in", retry.Delay())
			cmd.Process.Kill()
			<-exited
		}
		c.disconnect(cn)
		if time.Since(started) > 30*time.Second {
			retry.Reset()
		}
		for {
			select {
			case <-c.stop:
				return
			case <-time.After(retry.Next()):
			}
			var err error
			cn, cmd, err = c.spawn()
			if err == nil {
				break
			}
			c.log.Error("shadow agent not restarted", "error", err, "retry in", retry.Delay())
		}
		c.metrics.restarts.Inc()
		c.connect(cn)
		c.wg.Add(1)
		go c.ping()
	}
}

// ping asks a restarted agent for its status, as Start asks the first:
// the agent takes its priority once it has answered a call.
func (c *Client) ping() {
	defer c.wg.Done()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	go func() {
		select {
		case <-c.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	if _, err := c.call(ctx, callStatus, nil); err != nil {
		c.log.Warn("restarted shadow agent did not answer", "error", err)
	}
}

// connect makes cn the live connection: the agent gets the current
// configuration first; jobs buffered for an earlier connection are dropped.
func (c *Client) connect(cn *conn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dropPendingLocked()
	c.pending = appendFrame(c.pending, frameConfig, c.cfg)
	c.conn.Store(cn)
	c.flushLocked(cn)
	c.armLocked()
	c.metrics.up.Set(1)
}

// disconnect ends cn; what it had not written is dropped.
func (c *Client) disconnect(cn *conn) {
	c.mu.Lock()
	if c.conn.Load() == cn {
		c.conn.Store(nil)
	}
	c.dropPendingLocked()
	c.mu.Unlock()
	cn.broken()
	c.metrics.up.Set(0)
}

// Close stops the agent: nothing more is handed over, the agent drains
// its mirrors (up to 5 s) and exits; Close waits for it (killed after 8 s).
func (c *Client) Close() {
	c.closeOnce.Do(func() {
		close(c.stop)
		c.wg.Wait()
		c.mu.Lock()
		c.dropPendingLocked()
		c.mu.Unlock()
	})
}

// SetModels sends the live models that shadow to the agent (and again to
// every agent started later). The agent builds its mirrors from them; the
// caller strips what the agent does not need (cache, fallback, canary).
func (c *Client) SetModels(models []api.Model) {
	if models == nil {
		models = []api.Model{}
	}
	cfg := config{Models: models}
	c.mu.Lock()
	defer c.mu.Unlock()
	cfg.Version = strconv.FormatUint(c.cfgGen+1, 10)
	b, err := json.Marshal(cfg)
	if err != nil {
		c.log.Error("shadow agent configuration not sent", "error", err)
		return
	}
	c.cfg = b
	c.cfgGen++
	if cn := c.conn.Load(); cn != nil {
		c.pending = appendFrame(c.pending, frameConfig, b)
		c.flushLocked(cn)
		c.armLocked()
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

// Offer hands a captured mirror to the agent without blocking: framed
// into the buffer (x.WireJob, under the hand-off's lock), written when
// due. A full buffer or no agent drops it (o.OnDrop). Runs on the
// request's goroutine once the answer is written; x is not kept.
func (c *Client) Offer(k Key, x Exchange) {
	if c.conn.Load() == nil {
		c.o.OnDrop(k, DropAgentDown)
		return
	}
	c.mu.Lock()
	cn := c.conn.Load()
	var reason string
	switch {
	case cn == nil:
		reason = DropAgentDown
	case len(c.pending) >= c.maxPending:
		reason = DropHandoffFull
	}
	if reason != "" {
		c.mu.Unlock()
		c.o.OnDrop(k, reason)
		return
	}
	c.wireJob = Job{}
	x.WireJob(&c.wireJob, &c.scratch)
	c.wireJob.Model, c.wireJob.PrimaryVersion, c.wireJob.TargetVersion, c.wireJob.Noise = k.Model, k.Primary, k.Target, k.Noise
	c.pending = appendJobFrame(c.pending, &c.wireJob)
	c.wireJob = Job{}
	c.jobs = append(c.jobs, k)
	c.inFlight.Store(int64(len(c.jobs)))
	now := time.Now()
	if len(c.jobs) == 1 {
		c.firstAt = now
		c.armLocked()
	}
	if now.Sub(c.firstAt) >= c.linger || len(c.pending) >= handoffFlushBytes {
		c.flushLocked(cn)
	}
	c.mu.Unlock()
}

// armLocked wakes the parked flusher.
func (c *Client) armLocked() {
	if c.idle {
		c.idle = false
		select {
		case c.arm <- struct{}{}:
		default:
		}
	}
}

// flushLocked writes what the buffer holds with one non-blocking write;
// what the socket does not take stays for the next flush. A broken
// connection is left to the supervisor (its jobs are dropped there).
func (c *Client) flushLocked(cn *conn) {
	if len(c.pending) == 0 {
		return
	}
	n, err := cn.writeNonblocking(c.pending)
	if n == len(c.pending) {
		if len(c.jobs) > 0 {
			c.metrics.batch.Observe(float64(len(c.jobs)))
			c.written += uint64(len(c.jobs))
		}
		clear(c.jobs)
		c.pending, c.jobs = c.pending[:0], c.jobs[:0]
		c.inFlight.Store(0)
		if cap(c.pending) > 4*c.maxPending/3+handoffFlushBytes {
			c.pending = nil // after a burst: do not keep the big buffer
		}
	} else if n > 0 {
		// A frame cut in two: its rest goes first next time.
		c.pending = c.pending[:copy(c.pending, c.pending[n:])]
	}
	if err != nil {
		c.log.Debug("shadow agent write", "error", err)
		cn.broken()
	}
}

// dropPendingLocked counts the buffered jobs as dropped and empties the
// buffer.
func (c *Client) dropPendingLocked() {
	for _, k := range c.jobs {
		c.o.OnDrop(k, DropAgentDown)
	}
	clear(c.jobs)
	c.pending, c.jobs = c.pending[:0], c.jobs[:0]
	c.inFlight.Store(0)
}

// flusher writes what sits in the buffer while mirrors flow (one tick per
// handoffTick), and parks after a quiet while until the next frame.
func (c *Client) flusher() {
	defer c.wg.Done()
	for {
		select {
		case <-c.arm:
		case <-c.stop:
			return
		}
		t := time.NewTicker(handoffTick)
		for quiet := 0; quiet < handoffIdleTicks; {
			select {
			case <-t.C:
			case <-c.stop:
				t.Stop()
				return
			}
			c.mu.Lock()
			if len(c.pending) == 0 {
				quiet++
			} else if quiet = 0; time.Since(c.firstAt) >= c.linger || len(c.jobs) == 0 {
				if cn := c.conn.Load(); cn != nil {
					c.flushLocked(cn)
				}
			}
			if quiet == handoffIdleTicks {
				c.idle = true
			}
			c.mu.Unlock()
		}
		t.Stop()
	}
}

// newConn wraps the proxy's end of the socket.
func newConn(c net.Conn) (*conn, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("shadow agent socket: %T has no raw descriptor", c)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("shadow agent socket: %w", err)
	}
	return &conn{c: c, raw: raw, done: make(chan struct{}), pending: map[uint64]chan reply{}}, nil
}

// writeNonblocking writes what the socket takes now (the descriptor is in
// non-blocking mode, as Go's network poller keeps it): n bytes, and an
// error only when the connection is broken.
func (c *conn) writeNonblocking(b []byte) (int, error) {
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

func (c *conn) fail(id uint64, err error) {
	c.mu.Lock()
	ch := c.pending[id]
	delete(c.pending, id)
	c.mu.Unlock()
	if ch != nil {
		ch <- reply{err: err}
	}
}

// reader takes the agent's replies and comparison counts.
func (c *Client) reader(cn *conn) {
	defer c.wg.Done()
	defer cn.broken()
	err := readFrames(cn.c, func(typ byte, body []byte) error {
		switch typ {
		case frameReply:
			id, ok, out, err := decodeReply(body)
			if err != nil {
				return err
			}
			cn.mu.Lock()
			ch := cn.pending[id]
			delete(cn.pending, id)
			cn.mu.Unlock()
			if ch == nil {
				return nil // its caller gave up
			}
			r := reply{body: append([]byte(nil), out...)}
			if !ok {
				r = reply{err: errors.New(string(out))}
			}
			ch <- r
		case frameEvents:
			evs, err := decodeEvents(body)
			if err != nil {
				return err
			}
			if c.o.OnCompared != nil {
				for _, e := range evs {
					c.o.OnCompared(e.Model, e.Version, e.Compared, e.Disagreed)
				}
			}
		default:
			return fmt.Errorf("shadow agent frame: type %d not expected from the agent", typ)
		}
		return nil
	})
	if err != nil && !errors.Is(err, net.ErrClosed) {
		c.log.Warn("shadow agent connection", "error", err)
	}
}

// call asks the agent and waits for its reply.
func (c *Client) call(ctx context.Context, kind byte, args []byte) ([]byte, error) {
	c.mu.Lock()
	cn := c.conn.Load()
	if cn == nil {
		c.mu.Unlock()
		return nil, errors.New("shadow agent is not running (restarting)")
	}
	id := c.nextID.Add(1)
	ch := make(chan reply, 1)
	cn.mu.Lock()
	cn.pending[id] = ch
	cn.mu.Unlock()
	c.pending = appendCallFrame(c.pending, id, kind, args)
	c.flushLocked(cn)
	c.armLocked() // finishes the write if the socket was full
	c.mu.Unlock()
	select {
	case r := <-ch:
		return r.body, r.err
	case <-cn.done:
		return nil, errors.New("shadow agent: connection closed")
	case <-ctx.Done():
		cn.fail(id, ctx.Err())
		return nil, fmt.Errorf("shadow agent: %w", ctx.Err())
	}
}

// Report asks the agent for a model's report over the window before now
// (the engine's JSON, see Engine.Report).
func (c *Client) Report(ctx context.Context, model string, window time.Duration) ([]byte, error) {
	args, _ := json.Marshal(query{Model: model, Window: window})
	return c.call(ctx, callReport, args)
}

// Records asks the agent for a model's records in the window before now
// (the engine's JSON, see Engine.Records).
func (c *Client) Records(ctx context.Context, model string, window time.Duration) ([]byte, error) {
	args, _ := json.Marshal(query{Model: model, Window: window})
	return c.call(ctx, callRecords, args)
}

// Status asks the agent for a model's mirror status (the engine's JSON).
func (c *Client) Status(ctx context.Context, model string) ([]byte, error) {
	return c.call(ctx, callStatus, []byte(model))
}
