package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/sys/unix"

	"github.com/switchyard-dev/switchyard/api"
)

// The test binary is also the shadow agent, with a fake engine: a Client
// re-executes it (os.Executable) with EnvVar set, and this init runs the
// agent instead of the tests.
func init() {
	Main(newFakeEngine)
}

// fakeEngine counts what it is fed and answers with it; each job is
// "compared" (a noise job disagrees).
type fakeEngine struct {
	onCompared func(model, version string, disagreed bool)
	reg        *prometheus.Registry
	mirrored   *prometheus.CounterVec

	mu      sync.Mutex
	version string
	models  []string
	jobs    map[string]int
	last    map[string]string // model -> last request body
}

// fakeStatus is the fake engine's Status answer.
type fakeStatus struct {
	Version     string   `json:"version"`
	Models      []string `json:"models"`
	Mirrored    int      `json:"mirrored"`
	LastRequest string   `json:"lastRequest"`
	ShadowDir   string   `json:"shadowDir"`
}

var fakeInit Init // the child's Init (for Status)

func newFakeEngine(in Init, _ *slog.Logger, onCompared func(model, version string, disagreed bool)) (Engine, error) {
	fakeInit = in
	e := &fakeEngine{onCompared: onCompared, reg: prometheus.NewRegistry(), jobs: map[string]int{}, last: map[string]string{}}
	e.mirrored = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "switchyard_shadow_fake_mirrored_total", Help: "Jobs the fake engine got."}, []string{"model"})
	other := prometheus.NewCounter(prometheus.CounterOpts{Name: "switchyard_proxy_fake_total", Help: "Not the proxy's: never forwarded."})
	other.Inc()
	e.reg.MustRegister(e.mirrored, other)
	return e, nil
}

func (e *fakeEngine) Apply(models []api.Model, version string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.version, e.models = version, nil
	for _, m := range models {
		e.models = append(e.models, m.Metadata.Name)
	}
	return nil
}

func (e *fakeEngine) Mirror(j *Job) {
	e.mu.Lock()
	e.jobs[j.Model]++
	e.last[j.Model] = string(j.Request)
	e.mu.Unlock()
	e.mirrored.WithLabelValues(j.Model).Inc()
	e.onCompared(j.Model, j.TargetVersion, j.Noise)
}

func (e *fakeEngine) Status(model string) ([]byte, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !slices.Contains(e.models, model) {
		return nil, fmt.Errorf("model %q has no shadow on this proxy", model)
	}
	return json.Marshal(fakeStatus{Version: e.version, Models: e.models, Mirrored: e.jobs[model], LastRequest: e.last[model], ShadowDir: fakeInit.ShadowDir})
}

func (e *fakeEngine) Report(model string, window time.Duration) ([]byte, error) {
	return json.Marshal(map[string]string{"model": model, "window": window.String()})
}

func (e *fakeEngine) Records(model string, window time.Duration) ([]byte, error) {
	return nil, errors.New("no records in the fake engine")
}

func (e *fakeEngine) Gatherer() prometheus.Gatherer { return e.reg }
func (e *fakeEngine) Close() error                  { return nil }

type rawExchange struct{ req string }

func (x rawExchange) WireJob(j *Job, _ *Scratch) {
	j.Start, j.Request = time.Unix(1700000000, 0), []byte(x.req)
	j.Response, j.RespStatus = []byte(`{"outputs":[]}`), 200
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func model(name string) api.Model {
	var m api.Model
	m.Metadata.Name = name
	return m
}

// startClient starts a Client of this test binary; the drops and the
// comparisons it reports are counted.
type books struct {
	mu        sync.Mutex
	drops     map[string]int // by reason
	compared  map[string]uint64
	disagreed map[string]uint64
}

func startClient(t *testing.T, o Options) (*Client, *books, *prometheus.Registry) {
	t.Helper()
	b := &books{drops: map[string]int{}, compared: map[string]uint64{}, disagreed: map[string]uint64{}}
	reg := prometheus.NewRegistry()
	o.Registry = reg
	o.OnDrop = func(k Key, reason string) { b.mu.Lock(); b.drops[reason]++; b.mu.Unlock() }
	o.OnCompared = func(model, version string, compared, disagreed uint64) {
		b.mu.Lock()
		b.compared[model+"/"+version] += compared
		b.disagreed[model+"/"+version] += disagreed
		b.mu.Unlock()
	}
	c, err := Start(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c, b, reg
}

func status(t *testing.T, c *Client, model string) (fakeStatus, error) {
	t.Helper()
	ctx, cancel := contextTimeout(10 * time.Second)
	defer cancel()
	b, err := c.Status(ctx, model)
	if err != nil {
		return fakeStatus{}, err
	}
	var s fakeStatus
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	return s, nil
}

// TestClientAgentRoundTrip: a real agent process (this test binary) gets
// the Init and the configuration, every offered job, answers calls, sends
// the comparison counts back and serves its switchyard_shadow_* families
// (only those) through the proxy's registry. The protocol is what is
// tested: the agent runs at normal priority, so on a busy machine its
// answers are as prompt as the test's (TestAgentPriority tests the idle
// default).
func TestClientAgentRoundTrip(t *testing.T) {
	dir := t.TempDir()
	c, b, reg := startClient(t, Options{Init: Init{ShadowDir: dir, Priority: PriorityNormal}})
	if pid := c.PID(); pid <= 0 || pid == os.Getpid() {
		t.Fatalf("agent pid %d", pid)
	}
	c.SetModels([]api.Model{model("m")})
	waitFor(t, "the configuration", func() bool { s, err := status(t, c, "m"); return err == nil && s.Version == "1" })
	const n = 200
	for i := range n {
		c.Offer(Key{Model: "m", Primary: "v1", Target: "v2", Noise: i%4 == 0}, rawExchange{req: fmt.Sprintf(`{"i":%d}`, i)})
	}
	waitFor(t, "every job in the agent", func() bool { s, _ := status(t, c, "m"); return s.Mirrored == n })
	s, _ := status(t, c, "m")
	if s.LastRequest != fmt.Sprintf(`{"i":%d}`, n-1) || s.ShadowDir != dir || !slices.Equal(s.Models, []string{"m"}) {
		t.Fatalf("agent status %+v", s)
	}
	if written, buffered := c.Handoff(); written != n || buffered != 0 {
		t.Fatalf("hand-off: %d written, %d buffered", written, buffered)
	}
	waitFor(t, "the comparison counts", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.compared["m/v2"] == n
	})
	if b.disagreed["m/v2"] != n/4 || len(b.drops) != 0 {
		t.Fatalf("disagreed %d (want %d), drops %v", b.disagreed["m/v2"], n/4, b.drops)
	}
	// Calls: an engine's answer, and its error, pass through.
	ctx, cancel := contextTimeout(10 * time.Second)
	defer cancel()
	if rep, err := c.Report(ctx, "m", time.Minute); err != nil || string(rep) != `{"model":"m","window":"1m0s"}` {
		t.Fatalf("report %s, %v", rep, err)
	}
	if _, err := c.Records(ctx, "m", time.Minute); err == nil || err.Error() != "no records in the fake engine" {
		t.Fatalf("records error %v", err)
	}
	if _, err := status(t, c, "other"); err == nil || !strings.Contains(err.Error(), `"other" has no shadow`) {
		t.Fatalf("status of an unknown model: %v", err)
	}
	// Metrics: the agent's shadow families next to the client's own.
	if got := testutil.ToFloat64(c.metrics.up); got != 1 {
		t.Fatalf("switchyard_shadow_agent_up %v", got)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			names[mf.GetName()] += m.GetCounter().GetValue()
		}
	}
	if names["switchyard_shadow_fake_mirrored_total"] != n {
		t.Fatalf("agent's family through the proxy's registry: %v", names)
	}
	if _, ok := names["switchyard_proxy_fake_total"]; ok {
		t.Fatalf("an agent family outside switchyard_shadow_* was served: %v", names)
	}
	for _, want := range []string{"switchyard_shadow_agent_up", "switchyard_shadow_agent_restarts_total", "switchyard_shadow_agent_handoff_jobs"} {
		if _, ok := names[want]; !ok {
			t.Errorf("no %s", want)
		}
	}
}

// TestAgentMetricsServedWhenItDoesNotAnswer: a scrape the agent does not
// answer in time (here it is stopped, as a starved agent would be) serves
// the agent's last answer again, with its age, so the series do not drop
// out; once the agent answers, the age is 0 again.
func TestAgentMetricsServedWhenItDoesNotAnswer(t *testing.T) {
	c, _, reg := startClient(t, Options{Init: Init{Priority: PriorityNormal}})
	c.SetModels([]api.Model{model("m")})
	const n = 7
	for range n {
		c.Offer(Key{Model: "m", Primary: "v1", Target: "v2"}, rawExchange{req: "{}"})
	}
	waitFor(t, "every job in the agent", func() bool { s, _ := status(t, c, "m"); return s.Mirrored == n })
	scrape := func() (mirrored, age float64, ok bool) {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		have := 0
		for _, mf := range mfs {
			switch mf.GetName() {
			case "switchyard_shadow_fake_mirrored_total":
				mirrored, have = mf.GetMetric()[0].GetCounter().GetValue(), have+1
			case "switchyard_shadow_agent_metrics_age_seconds":
				age, have = mf.GetMetric()[0].GetGauge().GetValue(), have+1
			}
		}
		return mirrored, age, have == 2
	}
	if m, age, ok := scrape(); !ok || m != n || age != 0 {
		t.Fatalf("answered scrape: mirrored %v, age %v (both there: %v)", m, age, ok)
	}
	pid := c.PID()
	if err := unix.Kill(pid, unix.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Kill(pid, unix.SIGCONT) }) // before the client's Close
	m, age, ok := scrape()
	if !ok || m != n || age < metricsTimeout.Seconds() {
		t.Fatalf("scrape of a stopped agent: mirrored %v, age %v (both there: %v); want its last answer, at least %v old", m, age, ok, metricsTimeout)
	}
	unix.Kill(pid, unix.SIGCONT)
	waitFor(t, "an answered scrape", func() bool { m, age, ok := scrape(); return ok && m == n && age == 0 })
}

// TestClientRestartsAgent: a killed agent is restarted (counted), gets the
// configuration again, and takes jobs; what was offered while it was down
// is dropped and counted (agent_down). (At normal priority, as
// TestClientAgentRoundTrip.)
func TestClientRestartsAgent(t *testing.T) {
	c, b, _ := startClient(t, Options{RestartBackoff: 200 * time.Millisecond, Init: Init{Priority: PriorityNormal}})
	c.SetModels([]api.Model{model("m")})
	pid := c.PID()
	if err := unix.Kill(pid, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	offered := 0
	waitFor(t, "a drop while the agent is down, and the restart", func() bool {
		c.Offer(Key{Model: "m", Primary: "v1", Target: "v2"}, rawExchange{req: "{}"})
		offered++
		b.mu.Lock()
		down := b.drops[DropAgentDown]
		b.mu.Unlock()
		time.Sleep(time.Millisecond)
		return down > 0 && testutil.ToFloat64(c.metrics.restarts) == 1
	})
	if got := c.PID(); got == pid {
		t.Fatalf("restarted with the same pid %d", got)
	}
	// The new agent has the configuration (sent again) and takes jobs.
	before, _ := c.Handoff()
	for range 10 {
		c.Offer(Key{Model: "m", Primary: "v1", Target: "v2"}, rawExchange{req: "{}"})
	}
	waitFor(t, "the new agent's jobs", func() bool {
		s, err := status(t, c, "m")
		return err == nil && s.Version == "1" && s.Mirrored > 0
	})
	b.mu.Lock()
	defer b.mu.Unlock()
	written, _ := c.Handoff()
	if got := uint64(b.drops[DropAgentDown]) + written - before; got < 10 {
		t.Fatalf("books: %d dropped, %d written since; offered %d then 10", b.drops[DropAgentDown], written-before, offered)
	}
	t.Logf("%d offered while restarting, %d dropped (agent_down)", offered, b.drops[DropAgentDown])
}

// TestAgentPriority: the agent answers its start-up check at the proxy's
// priority, then every one of its threads takes the priority asked for
// (idle by default: SCHED_IDLE; low: nice 19; normal: the proxy's), a
// restarted agent too; an unknown priority is refused before anything
// starts.
func TestAgentPriority(t *testing.T) {
	self, err := threadPriorities(os.Getpid())
	if err != nil {
		t.Skipf("no /proc to read priorities from: %v", err)
	}
	mine := self[0]
	for _, tc := range []struct {
		priority string
		want     func(p threadPriority) bool
		says     string
	}{
		// Where SCHED_IDLE is refused (no CAP_SYS_NICE over the policy),
		// the agent falls back to nice 19, and says so in its log.
		{"", func(p threadPriority) bool { return p.policy == schedIdle || (p.policy == 0 && p.nice == 19) }, "SCHED_IDLE (or nice 19 where refused)"},
		{PriorityLow, func(p threadPriority) bool { return p.policy == 0 && p.nice == 19 }, "nice 19"},
		{PriorityNormal, func(p threadPriority) bool { return p == mine }, fmt.Sprintf("the test's own %+v", mine)},
	} {
		t.Run("priority="+tc.priority, func(t *testing.T) {
			c, _, _ := startClient(t, Options{Init: Init{Priority: tc.priority}, RestartBackoff: 50 * time.Millisecond})
			check := func(what string) {
				t.Helper()
				var last []threadPriority
				waitFor(t, what+": every agent thread at "+tc.says, func() bool {
					ps, err := threadPriorities(c.PID())
					if err != nil {
						return false
					}
					last = ps
					return !slices.ContainsFunc(ps, func(p threadPriority) bool { return !tc.want(p) })
				})
				t.Logf("%s: %d threads, %+v", what, len(last), last[0])
			}
			check("started")
			pid := c.PID()
			unix.Kill(pid, unix.SIGKILL)
			waitFor(t, "the restart", func() bool { return c.PID() != pid && testutil.ToFloat64(c.metrics.up) == 1 })
			check("restarted")
		})
	}
	if _, err := Start(Options{Init: Init{Priority: "realtime"}}); err == nil || !strings.Contains(err.Error(), `priority "realtime": want idle, low or normal`) {
		t.Fatalf("unknown priority: %v", err)
	}
}

type threadPriority struct{ policy, nice int }

// threadPriorities reads the scheduling policy and nice value of every
// thread of process pid (/proc/pid/task/*/stat, fields 41 and 19).
func threadPriorities(pid int) ([]threadPriority, error) {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	tids, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []threadPriority
	for _, tid := range tids {
		b, err := os.ReadFile(filepath.Join(dir, tid.Name(), "stat"))
		if err != nil {
			continue // the thread ended
		}
		// Fields after the command (which may hold spaces) in parentheses.
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(f) < 39 {
			return nil, fmt.Errorf("%s/%s/stat: %d fields", dir, tid.Name(), len(f))
		}
		var p threadPriority
		fmt.Sscan(f[16], &p.nice)   // field 19
		fmt.Sscan(f[38], &p.policy) // field 41
		out = append(out, p)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no threads", dir)
	}
	return out, nil
}

// TestClientStartFails: an agent that cannot start is an error, and
// nothing is left running or registered.
func TestClientStartFails(t *testing.T) {
	reg := prometheus.NewRegistry()
	_, err := Start(Options{Command: []string{filepath.Join(t.TempDir(), "no-such-agent")}, Registry: reg})
	if err == nil || !strings.Contains(err.Error(), "no-such-agent") {
		t.Fatalf("err = %v", err)
	}
	if mfs, _ := reg.Gather(); len(mfs) != 0 {
		t.Fatalf("series of an agent that never started: %v", mfs)
	}
}

// TestOfferDrops: without a connection a mirror is dropped as agent_down;
// with the buffer full (the agent is not reading) as handoff_full. The
// request path never waits.
func TestOfferDrops(t *testing.T) {
	drops := map[string]int{}
	c := newClient(Options{Buffer: 4 << 10, OnDrop: func(k Key, reason string) {
		if k.Model != "m" || k.Target != "v2" {
			t.Errorf("drop of %+v", k)
		}
		drops[reason]++
	}})
	c.Offer(Key{Model: "m", Primary: "v1", Target: "v2"}, rawExchange{req: "{}"})
	if drops[DropAgentDown] != 1 {
		t.Fatalf("no connection: drops %v", drops)
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	unix.SetsockoptInt(fds[0], unix.SOL_SOCKET, unix.SO_SNDBUF, 4<<10)
	peer := os.NewFile(uintptr(fds[1]), "peer") // never read
	defer peer.Close()
	f := os.NewFile(uintptr(fds[0]), "mine")
	nc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	cn, err := newConn(nc)
	if err != nil {
		t.Fatal(err)
	}
	defer cn.broken()
	c.conn.Store(cn)
	big := rawExchange{req: strings.Repeat("x", 1<<10)}
	for i := 0; drops[DropHandoffFull] == 0; i++ {
		if i > 10000 {
			t.Fatal("the buffer never filled")
		}
		c.Offer(Key{Model: "m", Primary: "v1", Target: "v2"}, big)
	}
	written, buffered := c.Handoff()
	if buffered == 0 || len(c.pending) < c.maxPending {
		t.Fatalf("full buffer: %d written, %d buffered, %d bytes", written, buffered, len(c.pending))
	}
	// A broken connection drops what is buffered (agent_down).
	c.disconnect(cn)
	if _, b := c.Handoff(); b != 0 || drops[DropAgentDown] != 1+int(buffered) {
		t.Fatalf("after the disconnect: %d buffered, drops %v (had %d buffered)", b, drops, buffered)
	}
}

// TestServeRefuses: the agent refuses a frame before Init, another
// protocol version and a second Init, each with an error naming it.
func TestServeRefuses(t *testing.T) {
	initFrame := func(v int) []byte {
		b, _ := json.Marshal(Init{Protocol: v})
		return appendFrame(nil, frameInit, b)
	}
	for name, tc := range map[string]struct {
		frames []byte
		want   string
	}{
		"config before init": {appendFrame(nil, frameConfig, []byte(`{}`)), "before init"},
		"old protocol":       {initFrame(0), "protocol version 0, this agent speaks 1"},
		"unknown priority":   {appendFrame(nil, frameInit, []byte(`{"protocol":1,"priority":"high"}`)), `priority "high": want idle, low or normal`},
		"second init":        {append(initFrame(ProtocolVersion), initFrame(ProtocolVersion)...), "second init"},
		"reply from proxy":   {append(initFrame(ProtocolVersion), appendReplyFrame(nil, 1, true, nil)...), "not expected from the proxy"},
	} {
		t.Run(name, func(t *testing.T) {
			mine, theirs := net.Pipe()
			done := make(chan error, 1)
			go func() { done <- Serve(theirs, newFakeEngine, slog.New(slog.DiscardHandler)) }()
			go func() { mine.Write(tc.frames) }()
			var err error
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("Serve did not end")
			}
			mine.Close()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func contextTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}
