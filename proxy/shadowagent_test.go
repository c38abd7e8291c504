package proxy

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/switchyard-dev/switchyard/inference-backend/backendtest"
	"github.com/switchyard-dev/switchyard/routing"
	"github.com/switchyard-dev/switchyard/shadow"
)

// The test binary is also the shadow agent: a proxy in agent mode
// re-executes it (os.Executable) with EnvShadowAgent set, and this init
// runs the agent instead of the tests. So `go test ./proxy` needs no
// prebuilt binary.
func init() {
	if code, ok := ShadowAgentMain(); ok {
		os.Exit(code)
	}
}

// TestShadowAgentRestart: the agent is killed while clients send requests;
// no client sees an error, the mirrors offered while it is down are
// dropped and counted (agent_down), the proxy restarts it (counted), sends
// it the configuration again, and the new agent compares, reports and
// serves its metrics through the proxy.
func TestShadowAgentRestart(t *testing.T) {
	be := backendtest.Start(t, backendtest.Options{})
	m := recommenderWith(be, func(m *routing.Model) {
		m.Spec.Shadow = &routing.Shadow{Version: "v2", Percent: 100, Compare: routing.Compare{Mode: routing.CompareTopK, K: 10}}
	})
	dir := t.TempDir()
	p, reg := featuresProxy(t, Config{Models: []routing.Model{m}},
		FeaturesConfig{ShadowDir: dir, ShadowProcess: ShadowAgent, ShadowAgentRestartBackoff: 300 * time.Millisecond})
	f := featuresOf(p)
	if f.agent == nil {
		t.Fatal("shadow agent not running")
	}
	c := newHTTPClient()
	defer c.CloseIdleConnections()
	send := func(i int) {
		t.Helper()
		body, _ := featuresBody(uint64(i))
		if a := postFull(t, c, inferURL(p, "recommender"), body, nil); a.status != 200 || a.variant != "v1" {
			t.Fatalf("request %d: %+v", i, a)
		}
	}
	compared := func() float64 {
		return metricSum(t, reg, "switchyard_shadow_compared_total", map[string]string{"model": "recommender", "kind": shadow.KindShadow})
	}
	const n = 50
	for i := range n {
		send(i)
	}
	waitFor(t, "the first agent compared every mirror", func() bool { return compared() == n })
	pid := f.agent.pid.Load()
	if pid <= 0 || pid == int64(os.Getpid()) {
		t.Fatalf("agent pid %d", pid)
	}
	if err := syscall.Kill(int(pid), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Requests keep being answered while the agent is down; their mirrors
	// are dropped and counted.
	dropped := func() float64 {
		return metricSum(t, reg, "switchyard_shadow_dropped_total", map[string]string{"model": "recommender", "reason": dropAgentDown})
	}
	i := n
	deadline := time.Now().Add(20 * time.Second)
	for dropped() == 0 || f.agent.metrics.restartCount() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("after the kill: dropped %v, restarts %v", dropped(), f.agent.metrics.restartCount())
		}
		send(i)
		i++
	}
	if got := f.agent.pid.Load(); got == pid {
		t.Fatalf("agent restarted with the same pid %d", got)
	}
	// The new agent got the configuration again: it compares (its own
	// counters start at zero) and reports.
	for j := range n {
		send(i + j)
	}
	waitFor(t, "the new agent compared new mirrors", func() bool { return compared() >= n })
	rep := shadowReport(t, p, "recommender")
	if rep.ShadowVersion != "v2" || rep.Report.Shadow.Compared < n {
		t.Fatalf("report after restart: %+v", rep)
	}
	// /metrics over HTTP: the agent's families next to the proxy's own.
	resp, err := http.Get("http://" + p.AdminAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	text, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`switchyard_shadow_compared_total{kind="shadow",model="recommender",version="v2"}`,
		`switchyard_shadow_dropped_total{kind="shadow",model="recommender",reason="agent_down",version="v2"}`,
		`switchyard_shadow_latency_seconds_bucket{kind="shadow",model="recommender",side="shadow"`,
		"switchyard_shadow_agent_restarts_total 1",
		"switchyard_shadow_agent_up 1",
		"switchyard_proxy_requests_total",
	} {
		if !strings.Contains(string(text), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	t.Logf("%d requests, %v mirrors dropped while the agent was down", i+n, dropped())
}

// TestShadowAgentFallsBackInline: an agent that cannot start leaves the
// mirrors in the proxy's process, working.
func TestShadowAgentFallsBackInline(t *testing.T) {
	be := backendtest.Start(t, backendtest.Options{})
	m := recommenderWith(be, func(m *routing.Model) {
		m.Spec.Shadow = &routing.Shadow{Version: "v2", Percent: 100, Compare: routing.Compare{Mode: routing.CompareTopK, K: 10}}
	})
	p, reg := featuresProxy(t, Config{Models: []routing.Model{m}}, FeaturesConfig{ShadowProcess: ShadowAgent,
		ShadowAgentCommand: []string{filepath.Join(t.TempDir(), "no-such-agent")}})
	if featuresOf(p).agent != nil {
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
	_, err := New(Config{Extensions: []Extension{NewFeatures(FeaturesConfig{ShadowProcess: "thread"})}})
	if err == nil || !strings.Contains(err.Error(), `shadow process "thread"`) {
		t.Fatalf("err = %v", err)
	}
}

func (m *agentMetrics) restartCount() float64 { return testutil.ToFloat64(m.restarts) }
