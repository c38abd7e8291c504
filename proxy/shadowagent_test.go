package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/inference-backend/backendtest"
	"github.com/switchyard-dev/switchyard/proxy/pipeline"
	"github.com/switchyard-dev/switchyard/shadow"
	"github.com/switchyard-dev/switchyard/shadow/agent"
)

// The test binary is also the shadow agent: a proxy in agent mode
// re-executes it (os.Executable) with EnvShadowAgent set, and the
// package's init (shadowagent.go) runs the agent instead of the tests. So
// `go test ./proxy` needs no prebuilt binary.

// TestShadowAgentRestart: the agent is killed while clients send requests;
// no client sees an error, the mirrors offered while it is down are
// dropped and counted (agent_down), the proxy restarts it (counted), sends
// it the configuration again, and the new agent compares, reports and
// serves its metrics through the proxy. What needs the agent's own work
// (its comparisons, its report, its series in a scrape) is checked as far
// as a starved agent got (see awaitAgent).
func TestShadowAgentRestart(t *testing.T) {
	be := backendtest.Start(t, backendtest.Options{})
	m := recommenderWith(be, func(m *api.Model) {
		m.Spec.Shadow = &api.Shadow{Version: "v2", Percent: 100, Compare: api.Compare{Mode: api.CompareTopK, K: 10}}
	})
	dir := t.TempDir()
	// The default shadow process: the agent.
	p, reg := agentProxy(t, Config{Models: []api.Model{m}},
		FeaturesConfig{ShadowDir: dir, ShadowAgentRestartBackoff: 300 * time.Millisecond})
	ag := p.pl.ShadowAgent()
	if ag == nil {
		t.Fatal("shadow agent not running")
	}
	c := newHTTPClient()
	defer c.CloseIdleConnections()
	sent := 0
	send := func() {
		t.Helper()
		body, _ := featuresBody(uint64(sent))
		if a := postFull(t, c, inferURL(p, "recommender"), body, nil); a.status != 200 || a.variant != "v1" {
			t.Fatalf("request %d: %+v", sent, a)
		}
		sent++
	}
	books := func() shadowBooks {
		b := readShadowBooks(t, reg, "recommender")
		checkShadowBooks(t, b, sent, agent.DropAgentDown, agent.DropHandoffFull, "queue_full")
		return b
	}
	const n = 50
	for range n {
		send()
	}
	waitHandoff(t, ag, reg, "recommender", n)
	awaitAgent(t, ag, "the first agent compared or dropped every mirror", 15*time.Second, func() bool { return books().settled() == n })
	pid := ag.PID()
	if pid <= 0 || pid == os.Getpid() {
		t.Fatalf("agent pid %d", pid)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Requests keep being answered while the agent is down; their mirrors
	// are dropped and counted (by the proxy: no agent needed).
	dropped := func() float64 { return books().dropped[agent.DropAgentDown] }
	deadline := time.Now().Add(20 * time.Second)
	restarts := func() float64 { return metricSum(t, reg, "switchyard_shadow_agent_restarts_total", nil) }
	for dropped() == 0 || restarts() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("after the kill: dropped %v, restarts %v", dropped(), restarts())
		}
		send()
	}
	if got := ag.PID(); got == pid {
		t.Fatalf("agent restarted with the same pid %d", got)
	}
	// The new agent got the configuration again: it compares (its own
	// counters start at zero) and reports.
	for range n {
		send()
	}
	compared := func() float64 { return books().compared }
	agentWorks := awaitAgent(t, ag, "the new agent compared the new mirrors", 15*time.Second, func() bool { return compared() >= n })
	if agentWorks {
		var rep pipeline.ShadowReportResponse
		switch code := getJSON(t, "http://"+p.AdminAddr()+"/shadow/report?model=recommender&window=5m", &rep); {
		case code != 200:
			t.Logf("the new agent did not answer for its report (HTTP %d; reports may time out by design)", code)
		case rep.ShadowVersion != "v2" || rep.Report.Shadow.Compared < n:
			t.Fatalf("report after restart: %+v", rep)
		}
	}
	// /metrics over HTTP: the proxy's own series (the hand-off's drops,
	// restarts, the agent's state) and, when the agent answered the
	// scrape, its families next to them.
	resp, err := http.Get("http://" + p.AdminAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	text, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	want := []string{
		`switchyard_shadow_dropped_total{kind="shadow",model="recommender",reason="agent_down",version="v2"}`,
		"switchyard_shadow_agent_restarts_total 1",
		"switchyard_shadow_agent_up 1",
		"switchyard_proxy_requests_total",
	}
	switch agentSeries := strings.Contains(string(text), "switchyard_shadow_mirrored_total{"); {
	case agentSeries && agentWorks:
		want = append(want,
			`switchyard_shadow_compared_total{kind="shadow",model="recommender",version="v2"}`,
			`switchyard_shadow_latency_seconds_bucket{kind="shadow",model="recommender",side="shadow"`)
	case !agentSeries:
		t.Log("the agent's series were not in the scrape (it did not answer in time; by design a scrape may miss them)")
	}
	for _, w := range want {
		if !strings.Contains(string(text), w) {
			t.Errorf("/metrics lacks %s", w)
		}
	}
	t.Logf("%d requests, %v mirrors dropped while the agent was down", sent, dropped())
}

// TestShadowAgentStartsLazily: with the default shadow process a proxy
// whose routes do not shadow starts no agent (no child, none of its
// series); the first configuration with a shadow policy starts it, the
// agent gets that configuration and its mirrors, and the proxy's /fallback
// status names the agent's record file.
func TestShadowAgentStartsLazily(t *testing.T) {
	be := backendtest.Start(t, backendtest.Options{})
	plain := recommenderWith(be, nil)
	dir := t.TempDir()
	logs := &syncBuffer{}
	p, reg := featuresProxy(t, Config{Models: []api.Model{plain}, Logger: slog.New(slog.NewJSONHandler(logs, nil))}, FeaturesConfig{ShadowDir: dir})
	agentRunning := p.pl.ShadowAgent
	if agentRunning() != nil {
		t.Fatal("a shadow agent runs for a proxy whose routes do not shadow")
	}
	if got := metricSum(t, reg, "switchyard_shadow_agent_up", nil); got != 0 {
		t.Fatalf("switchyard_shadow_agent_up %v without an agent", got)
	}
	shadowed := plain.Clone()
	shadowed.Spec.Shadow = &api.Shadow{Version: "v2", Percent: 100, Compare: api.Compare{Mode: api.CompareTopK, K: 10}}
	if err := p.Apply([]api.Model{shadowed}, "2", "test"); err != nil {
		t.Fatal(err)
	}
	a := agentRunning()
	if a == nil {
		agentNotStarted(t, logs)
	}
	if pid := a.PID(); pid <= 0 || pid == os.Getpid() {
		t.Fatalf("agent pid %d", pid)
	}
	if got := metricSum(t, reg, "switchyard_shadow_agent_up", nil); got != 1 {
		t.Fatalf("switchyard_shadow_agent_up %v", got)
	}
	var st pipeline.FallbackStatus
	if code := getJSON(t, "http://"+p.AdminAddr()+"/fallback", &st); code != 200 || len(st.Models) != 1 || st.Models[0].Shadow == nil ||
		st.Models[0].Shadow.RecordFile != filepath.Join(dir, "recommender.jsonl") {
		t.Fatalf("/fallback: %d %+v", code, st)
	}
	c := newHTTPClient()
	defer c.CloseIdleConnections()
	const n = 20
	for i := range n {
		body, _ := featuresBody(uint64(i))
		if a := postFull(t, c, inferURL(p, "recommender"), body, nil); a.status != 200 || a.variant != "v1" {
			t.Fatalf("request %d: %+v", i, a)
		}
	}
	waitHandoff(t, a, reg, "recommender", n)
	awaitAgent(t, a, "the agent compared or dropped every mirror", 15*time.Second, func() bool {
		b := readShadowBooks(t, reg, "recommender")
		checkShadowBooks(t, b, n, agent.DropAgentDown, agent.DropHandoffFull, "queue_full")
		return b.settled() == n
	})
	// A configuration without shadow keeps the agent (one start per proxy).
	if err := p.Apply([]api.Model{plain}, "3", "test"); err != nil {
		t.Fatal(err)
	}
	if agentRunning() != a {
		t.Fatal("the agent changed with a configuration without shadow")
	}
}

// TestShadowAgentFallsBackInline: an agent that cannot start leaves the
// mirrors in the proxy's process, working.
func TestShadowAgentFallsBackInline(t *testing.T) {
	be := backendtest.Start(t, backendtest.Options{})
	m := recommenderWith(be, func(m *api.Model) {
		m.Spec.Shadow = &api.Shadow{Version: "v2", Percent: 100, Compare: api.Compare{Mode: api.CompareTopK, K: 10}}
	})
	p, reg := featuresProxy(t, Config{Models: []api.Model{m}}, FeaturesConfig{ShadowProcess: ShadowAgent,
		ShadowAgentCommand: []string{filepath.Join(t.TempDir(), "no-such-agent")}})
	if p.pl.ShadowAgent() != nil {
		t.Fatal("an agent that cannot start is running")
	}
	c := newHTTPClient()
	defer c.CloseIdleConnections()
	for i := range 20 {
		body, _ := featuresBody(uint64(i))
		if a := postFull(t, c, inferURL(p, "recommender"), body, nil); a.status != 200 {
			t.Fatalf("request %d: %+v", i, a)
		}
	}
	waitFor(t, "mirrors compared in process", func() bool {
		return metricSum(t, reg, "switchyard_shadow_compared_total", map[string]string{"model": "recommender"}) == 20
	})
}

// TestShadowProcessInvalid: an unknown mode is a configuration error.
func TestShadowProcessInvalid(t *testing.T) {
	_, err := New(Config{Features: FeaturesConfig{ShadowProcess: "thread"}})
	if err == nil || !strings.Contains(err.Error(), `shadow process "thread"`) {
		t.Fatalf("err = %v", err)
	}
}

// The shadow agent runs at SCHED_IDLE: on a busy machine it falls behind,
// by design, and mirrors wait or are dropped (counted). Tests of the agent
// therefore check its books — every mirror compared or dropped with a
// reason, never more — and the figures over the pairs it did compare; a
// wait on the agent's progress is skipped, with a log line, when the agent
// was starved, and fails only when it had the CPU and still did not get
// there.

// shadowBooks is one reading of a model's shadow accounting (kind shadow)
// from the proxy's registry; with an agent, one scrape of the agent's
// counters (absent when it did not answer in time) plus the proxy's own
// hand-off drops.
type shadowBooks struct {
	compared float64            // pairs compared
	dropped  map[string]float64 // mirrors dropped, by reason
	mirrored float64            // put on a mirror queue
	latency  float64            // shadow latency observations (answered shadow calls)
	// shadowErrors: pairs whose shadow call failed (side shadow or both)
	shadowErrors float64
}

// settled is how many mirrors have an outcome: compared or dropped.
func (b shadowBooks) settled() float64 {
	s := b.compared
	for _, n := range b.dropped {
		s += n
	}
	return s
}

func readShadowBooks(t testing.TB, g prometheus.Gatherer, model string) shadowBooks {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	b := shadowBooks{dropped: map[string]float64{}}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, lp := range m.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			if l["model"] != model || l["kind"] != shadow.KindShadow {
				continue
			}
			switch mf.GetName() {
			case "switchyard_shadow_compared_total":
				b.compared += m.GetCounter().GetValue()
			case "switchyard_shadow_dropped_total":
				b.dropped[l["reason"]] += m.GetCounter().GetValue()
			case "switchyard_shadow_mirrored_total":
				b.mirrored += m.GetCounter().GetValue()
			case "switchyard_shadow_errors_total":
				if l["side"] == "shadow" || l["side"] == "both" {
					b.shadowErrors += m.GetCounter().GetValue()
				}
			case "switchyard_shadow_latency_seconds":
				if l["side"] == "shadow" {
					b.latency += float64(m.GetHistogram().GetSampleCount())
				}
			}
		}
	}
	return b
}

// checkShadowBooks fails the test if the books count more outcomes than
// mirrors (n) or drops for a reason other than allowed.
func checkShadowBooks(t testing.TB, b shadowBooks, n int, allowed ...string) {
	t.Helper()
	if b.settled() > float64(n) {
		t.Fatalf("shadow books: %v compared + %v dropped for %d mirrors", b.compared, b.dropped, n)
	}
	for reason, c := range b.dropped {
		if c > 0 && !slices.Contains(allowed, reason) {
			t.Fatalf("shadow books: %v mirrors dropped for %q (allowed: %v)", c, reason, allowed)
		}
	}
}

// handoffBooks reads the proxy's side of the hand-off at one moment:
// mirrors written to the agent's socket, and mirrors still buffered.
func handoffBooks(a *agent.Client) (handed, buffered float64) {
	w, b := a.Handoff()
	return float64(w), float64(b)
}

// waitHandoff waits until each of n mirrors offered to the agent is
// written to it, buffered or dropped with a hand-off reason (agent_down,
// handoff_full): the proxy's side of the books, which never waits for the
// agent.
func waitHandoff(t *testing.T, a *agent.Client, reg prometheus.Gatherer, model string, n int) {
	t.Helper()
	waitFor(t, "every mirror handed to the agent, buffered or dropped", func() bool {
		handed, buffered := handoffBooks(a)
		b := readShadowBooks(t, reg, model)
		return handed+buffered+b.dropped[agent.DropAgentDown]+b.dropped[agent.DropHandoffFull] == float64(n)
	})
}

// agentRunDelay is the time every thread of process pid has spent queued
// for a CPU (the second field of /proc/<pid>/task/*/schedstat); false
// where the kernel does not keep it.
func agentRunDelay(pid int) (time.Duration, bool) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0, false
	}
	var sum time.Duration
	for _, task := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, task.Name()))
		if err != nil {
			continue // a thread that just ended
		}
		f := strings.Fields(string(b))
		if len(f) < 2 {
			return 0, false
		}
		ns, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			return 0, false
		}
		sum += time.Duration(ns)
	}
	return sum, true
}

// awaitAgent polls cond (the agent's progress) for up to budget and
// reports whether it came to hold. If it did not, and the agent spent at
// least a quarter of the wait queued for a CPU, the agent was starved —
// the design lets it fall behind — and awaitAgent logs what is left
// unchecked and returns false; if the agent had the CPU, the test fails.
func awaitAgent(t *testing.T, a *agent.Client, what string, budget time.Duration, cond func() bool) bool {
	t.Helper()
	pid := a.PID()
	d0, ok := agentRunDelay(pid)
	start := time.Now()
	for !cond() {
		if time.Since(start) < budget {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		waited := time.Since(start)
		d1, ok1 := agentRunDelay(pid)
		switch {
		case a.PID() != pid:
			t.Fatalf("%s: the shadow agent was restarted while waiting", what)
		case !ok || !ok1:
			t.Logf("shadow agent behind after %v (no schedstat to tell whether it was starved): %s left unchecked", waited.Round(time.Millisecond), what)
		case d1-d0 >= waited/4:
			t.Logf("shadow agent starved (queued for a CPU %v of %v, by design at SCHED_IDLE): %s left unchecked", (d1 - d0).Round(time.Millisecond), waited.Round(time.Millisecond), what)
		default:
			t.Fatalf("%s: not within %v although the shadow agent was queued for a CPU only %v of it", what, budget, (d1 - d0).Round(time.Millisecond))
		}
		return false
	}
	return true
}

// agentProxy is featuresProxy, its log kept. An agent that does not
// answer within 10 s of its start leaves the mirrors inline, by design;
// on a busy machine a SCHED_IDLE process may take that long, and then
// there is no agent to test: the test is skipped, saying so. An agent
// that failed to start for any other reason fails the test.
func agentProxy(t *testing.T, cfg Config, fc FeaturesConfig) (*Proxy, *prometheus.Registry) {
	t.Helper()
	logs := &syncBuffer{}
	cfg.Logger = slog.New(slog.NewJSONHandler(logs, nil))
	p, reg := featuresProxy(t, cfg, fc)
	if fc.ShadowProcess == ShadowInline || p.pl.ShadowAgent() != nil {
		return p, reg
	}
	agentNotStarted(t, logs)
	return nil, nil
}

// agentNotStarted skips the test if the proxy's log says the shadow agent
// did not answer within 10 s of its start (starved, by design), and fails
// it otherwise.
func agentNotStarted(t *testing.T, logs *syncBuffer) {
	t.Helper()
	for _, line := range strings.Split(logs.String(), "\n") {
		var l struct{ Msg, Error string }
		if json.Unmarshal([]byte(line), &l) == nil && strings.HasPrefix(l.Msg, "shadow agent not started") && strings.Contains(l.Error, context.DeadlineExceeded.Error()) {
			t.Skipf("the shadow agent did not answer within 10 s of its start (%s; starved at SCHED_IDLE on a busy machine, by design): the proxy mirrors inline, no agent to test", l.Error)
		}
	}
	t.Fatalf("the shadow agent did not start:\n%s", logs)
}

// syncBuffer is a bytes.Buffer safe for concurrent writes (a log).
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
