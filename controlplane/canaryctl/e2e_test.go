package canaryctl_test

// End-to-end canary tests: a real inference backend serving the demo
// models (ONNX Runtime), the real control plane with its canary controller,
// real proxies in-process reporting stats over the gRPC stream, and bounded
// traffic through the proxies' REST front-ends.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/controlplane"
	"github.com/switchyard-dev/switchyard/controlplane/canaryctl"
	"github.com/switchyard-dev/switchyard/controlplane/cptest"
	"github.com/switchyard-dev/switchyard/controlplane/store"
	"github.com/switchyard-dev/switchyard/inference-backend/backendtest"
	"github.com/switchyard-dev/switchyard/inference-backend/demomodels"
	"github.com/switchyard-dev/switchyard/proxy"
)

type canaryEnv struct {
	t       *testing.T
	cp      *cptest.CP
	cc      *canaryctl.Controller
	be      *backendtest.Running
	proxies []*proxy.Proxy
	client  *http.Client
}

// newCanaryEnv starts a backend, a control plane with a fast canary
// controller (100 ms ticks) and n proxies connected to it.
func newCanaryEnv(t *testing.T, n int) *canaryEnv {
	t.Helper()
	e := &canaryEnv{t: t, be: backendtest.Start(t, backendtest.Options{})}
	cp := cptest.Start(t, controlplane.Config{AllowAnonymousXDS: true}, &controlplane.CanaryOptions{Interval: 100 * time.Millisecond}) // xDS authentication: controlplane/xds/xdsauth_test.go
	e.cp, e.cc = cp, cp.Canary
	tr := &http.Transport{MaxIdleConnsPerHost: 16}
	e.client = &http.Client{Transport: tr, Timeout: 10 * time.Second}
	t.Cleanup(tr.CloseIdleConnections)
	for i := range n {
		p, err := proxy.New(proxy.Config{HTTPAddr: "127.0.0.1:0", XDSAddr: cp.XDSAddr(), NodeID: fmt.Sprintf("proxy-%d", i),
			XDSBackoffMin: 20 * time.Millisecond, XDSBackoffMax: 200 * time.Millisecond, StatsInterval: 100 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		e.proxies = append(e.proxies, p)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := cp.Tracker().WaitConnected(ctx, n); err != nil {
		t.Fatal(err)
	}
	return e
}

// model is "recommender" with the demo versions v1, v2, v3 over REST and
// extra (name -> endpoint, backend model) versions.
func (e *canaryEnv) model(weights map[string]int, c *api.Canary, extra ...api.Version) api.Model {
	m := api.Model{
		Metadata: api.Metadata{Name: "recommender"},
		Spec: api.Spec{
			Versions: append([]api.Version{
				{Name: "v1", Endpoints: []string{e.be.HTTPAddr}, BackendModel: demomodels.V1},
				{Name: "v2", Endpoints: []string{e.be.HTTPAddr}, BackendModel: demomodels.V2},
				{Name: "v3", Endpoints: []string{e.be.HTTPAddr}, BackendModel: demomodels.V3},
			}, extra...),
			Traffic: api.Traffic{Weights: weights},
			Timeout: api.Duration(5 * time.Second),
			Canary:  c,
		},
	}
	if err := api.Normalize(&m); err != nil {
		e.t.Fatal(err)
	}
	return m
}

func (e *canaryEnv) put(m api.Model) api.Record {
	e.t.Helper()
	rec, err := e.cp.Store().Put(context.Background(), m, store.Precondition{}, store.Change{Subject: "test", Action: "put"})
	if err != nil {
		e.t.Fatal(err)
	}
	return rec
}

// waitProxies waits until every proxy serves the model with these weights.
func (e *canaryEnv) waitProxies(weights map[string]int) {
	e.t.Helper()
	cptest.WaitUntil(e.t, fmt.Sprintf("proxies serving weights %v", weights), 15*time.Second, func() bool {
		for _, p := range e.proxies {
			r := p.Route("recommender")
			if r == nil || !canaryctl.SameSplit(r.Model.Spec.Traffic.Weights, weights) {
				return false
			}
		}
		return true
	}, func() string { // what each side saw, for a timeout
		var b strings.Builder
		for _, p := range e.proxies {
			fmt.Fprintf(&b, "proxy xds status %+v\n", p.XDSStatus())
			if r := p.Route("recommender"); r != nil {
				fmt.Fprintf(&b, "  route weights %v\n", r.Model.Spec.Traffic.Weights)
			}
		}
		fmt.Fprintf(&b, "cp snapshot %d proxies %s\n", e.cp.SnapshotVersion(), cptest.MustJSON(e.cp.Tracker().Proxies()))
		return b.String()
	})
}

// traffic sends requests through the proxies (round robin) from a few
// workers until stop is closed, max requests were sent or the time limit
// passed. It returns the count of answers per x-switchyard-variant.
type traffic struct {
	stop    chan struct{}
	done    sync.WaitGroup
	sent    atomic.Int64
	mu      sync.Mutex
	byVar   map[string]int
	status  map[int]int
	stopped sync.Once
}

func (e *canaryEnv) startTraffic(workers int, max int64, limit time.Duration) *traffic {
	tr := &traffic{stop: make(chan struct{}), byVar: map[string]int{}, status: map[int]int{}}
	deadline := time.Now().Add(limit)
	for w := range workers {
		tr.done.Add(1)
		go func() {
			defer tr.done.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for i := 0; ; i++ {
				select {
				case <-tr.stop:
					return
				default:
				}
				if tr.sent.Add(1) > max || time.Now().After(deadline) {
					return
				}
				p := e.proxies[(w+i)%len(e.proxies)]
				resp, err := e.client.Post("http://"+p.HTTPAddr()+"/v2/models/recommender/infer", "application/json", bytes.NewReader(cptest.InferBody(rng)))
				if err != nil {
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				tr.mu.Lock()
				tr.byVar[resp.Header.Get("x-switchyard-variant")]++
				tr.status[resp.StatusCode]++
				tr.mu.Unlock()
			}
		}()
	}
	return tr
}

func (tr *traffic) Stop() {
	tr.stopped.Do(func() { close(tr.stop) })
	tr.done.Wait()
}

func (tr *traffic) counts() (map[string]int, map[int]int) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	a, b := map[string]int{}, map[int]int{}
	for k, v := range tr.byVar {
		a[k] = v
	}
	for k, v := range tr.status {
		b[k] = v
	}
	return a, b
}

func (e *canaryEnv) status() api.CanaryStatus {
	e.t.Helper()
	s, err := e.cc.Status(context.Background(), "recommender")
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

// waitPhase waits for the canary to reach phase, failing early if it
// reaches another terminal phase.
func (e *canaryEnv) waitPhase(phase string, limit time.Duration) api.CanaryStatus {
	e.t.Helper()
	deadline := time.Now().Add(limit)
	for {
		s := e.status()
		if s.Phase == phase {
			return s
		}
		if s.Phase == "promoted" || s.Phase == "rolled_back" || time.Now().After(deadline) {
			e.t.Fatalf("waiting for canary phase %s: %s", phase, cptest.MustJSON(s))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// weightHistory lists the weights of every revision the canary controller
// wrote, oldest first, with their actions.
func (e *canaryEnv) controllerRevisions() []api.Record {
	e.t.Helper()
	hist, err := e.cp.Store().History(context.Background(), "recommender", 0)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []api.Record
	for i := len(hist) - 1; i >= 0; i-- {
		if strings.HasPrefix(hist[i].Action, "canary-") {
			out = append(out, hist[i])
		}
	}
	return out
}

func TestCanaryHealthyRampPromotes(t *testing.T) {
	e := newCanaryEnv(t, 2)
	e.put(e.model(map[string]int{"v1": 100}, nil))
	e.waitProxies(map[string]int{"v1": 100})
	tr := e.startTraffic(4, 20000, 40*time.Second)
	defer tr.Stop()
	// Setting spec.canary starts the ramp. The p99 gate is loose here: v2
	// is as fast as v1, but a p99 of 100 samples on a busy 2-core test
	// machine (-race) swings by 2x; the slow-canary test checks the gate.
	e.put(e.model(map[string]int{"v1": 100}, &api.Canary{Version: "v2", StepDuration: api.Duration(300 * time.Millisecond), MinRequests: 40, MaxP99Ratio: 4}))
	s := e.waitPhase("promoted", 40*time.Second)
	tr.Stop()

	var steps []string
	for _, r := range e.controllerRevisions() {
		if r.Subject != canaryctl.Subject {
			t.Errorf("revision %d by %q, want %s", r.Revision, r.Subject, canaryctl.Subject)
		}
		steps = append(steps, r.Action+" "+canaryctl.SplitString(r.Model.Spec.Traffic.Weights))
	}
	want := []string{"canary-start v1=80 v2=20", "canary-promote v1=50 v2=50", "canary-promote v1=20 v2=80", "canary-promote v2=100", "canary-promoted v2=100"}
	if strings.Join(steps, "\n") != strings.Join(want, "\n") {
		t.Fatalf("controller revisions:\n%s\nwant:\n%s\nstatus: %s", strings.Join(steps, "\n"), strings.Join(want, "\n"), cptest.MustJSON(s))
	}
	// Every promotion was judged with all gates passing.
	for _, ev := range s.History {
		if ev.Kind == "promote" && ev.Reason != "all gates pass" {
			t.Errorf("promotion without passing gates: %+v", ev)
		}
	}
	// The audit log has each decision.
	entries, err := e.cp.Store().Audit(context.Background(), store.AuditQuery{Model: "recommender"})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, a := range entries {
		if a.Subject == canaryctl.Subject && strings.Contains(a.Reason, "canary v2 (v1 -> v2") {
			n++
		}
	}
	if n != len(want) {
		t.Errorf("audit entries by the controller: %d, want %d", n, len(want))
	}
	// v2 is now the only version answering, on every proxy.
	e.waitProxies(map[string]int{"v2": 100})
	after := e.startTraffic(2, 40, 20*time.Second)
	after.done.Wait()
	byVar, codes := after.counts()
	if byVar["v2"] != 40 || len(byVar) != 1 || codes[200] != 40 {
		t.Fatalf("after promotion answers by variant %v, status %v; want 40 from v2", byVar, codes)
	}
	// Metrics say so.
	body := string(cptest.Call(t, e.cp, "GET", "/metrics", "", nil).Body)
	for _, line := range []string{`switchyard_canary_phase{model="recommender",phase="promoted"} 1`, `switchyard_canary_weight_percent{model="recommender"} 100`, `switchyard_canary_step{model="recommender"} 4`} {
		if !strings.Contains(body, line) {
			t.Errorf("/metrics lacks %s", line)
		}
	}
}

func TestCanaryNaNVersionRolledBackAtFirstStep(t *testing.T) {
	e := newCanaryEnv(t, 1)
	e.put(e.model(map[string]int{"v1": 100}, nil))
	e.waitProxies(map[string]int{"v1": 100})
	tr := e.startTraffic(4, 20000, 30*time.Second)
	defer tr.Stop()
	e.put(e.model(map[string]int{"v1": 100}, &api.Canary{Version: "v3", StepDuration: api.Duration(300 * time.Millisecond), MinRequests: 40}))
	s := e.waitPhase("rolled_back", 30*time.Second)
	tr.Stop()
	if s.Step != 1 {
		t.Errorf("rolled back at step %d, want 1", s.Step)
	}
	last := s.History[len(s.History)-1]
	if last.Kind != "rollback" || !strings.Contains(last.Reason, "nan_rate") || last.Manual {
		t.Fatalf("last event %+v: want an automatic rollback naming nan_rate", last)
	}
	if !canaryctl.SameSplit(s.Weights, map[string]int{"v1": 100}) {
		t.Fatalf("weights after rollback %v, want v1=100", s.Weights)
	}
	if _, ok := s.FailedVersions["v3"]; !ok {
		t.Fatalf("v3 not marked failed: %v", s.FailedVersions)
	}
	revs := e.controllerRevisions()
	if got := revs[len(revs)-1]; got.Action != canaryctl.ActionRollback || !strings.Contains(got.Reason, "nan_rate") {
		t.Fatalf("last controller revision %s %q", got.Action, got.Reason)
	}
	e.waitProxies(map[string]int{"v1": 100})
	// The failed version cannot be ramped again without a reset.
	r := cptest.Call(t, e.cp, "POST", "/v1/models/recommender/canary/start", cptest.EditorToken, map[string]any{"version": "v3"})
	if r.Code != http.StatusConflict || !strings.Contains(string(r.Body), "reset") {
		t.Fatalf("start of a failed version: %d %s", r.Code, r.Body)
	}
	// Nor by the controller, tick after tick.
	time.Sleep(300 * time.Millisecond)
	if s := e.status(); s.Phase != "rolled_back" || !canaryctl.SameSplit(s.Weights, map[string]int{"v1": 100}) {
		t.Fatalf("after more ticks: %s %v", s.Phase, s.Weights)
	}
	// An editor may not reset; an operator may, after which the controller
	// ramps it again (spec.canary still names it).
	if r := cptest.Call(t, e.cp, "POST", "/v1/models/recommender/canary/reset", cptest.EditorToken, nil); r.Code != http.StatusForbidden {
		t.Fatalf("reset by an editor: %d %s", r.Code, r.Body)
	}
	if r := cptest.Call(t, e.cp, "POST", "/v1/models/recommender/canary/reset", cptest.OperatorToken, map[string]any{"reason": "fixed", "waitForAck": "0s"}); r.Code != http.StatusOK {
		t.Fatalf("reset: %d %s", r.Code, r.Body)
	}
	e.waitPhase("progressing", 10*time.Second)
}

// delayShim is a real HTTP reverse proxy in front of the backend that
// delays every request: a slow model version.
func delayShim(t *testing.T, target string, delay time.Duration) string {
	t.Helper()
	u, _ := url.Parse("http://" + target)
	rp := httputil.NewSingleHostReverseProxy(u)
	tr := &http.Transport{}
	rp.Transport = tr
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(delay)
		rp.ServeHTTP(w, r)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() {
		srv.Close()
		tr.CloseIdleConnections()
	})
	return ln.Addr().String()
}

func TestCanarySlowVersionRolledBackOnP99(t *testing.T) {
	e := newCanaryEnv(t, 1)
	slow := api.Version{Name: "v2slow", Endpoints: []string{delayShim(t, e.be.HTTPAddr, 50*time.Millisecond)}, BackendModel: demomodels.V2}
	e.put(e.model(map[string]int{"v1": 100}, nil, slow))
	e.waitProxies(map[string]int{"v1": 100})
	tr := e.startTraffic(6, 30000, 40*time.Second)
	defer tr.Stop()
	e.put(e.model(map[string]int{"v1": 100}, &api.Canary{Version: "v2slow", StepDuration: api.Duration(300 * time.Millisecond), MinRequests: 40}, slow))
	s := e.waitPhase("rolled_back", 40*time.Second)
	tr.Stop()
	last := s.History[len(s.History)-1]
	if last.Kind != "rollback" || !strings.Contains(last.Reason, "p99") || strings.Contains(last.Reason, "error_rate") {
		t.Fatalf("last event %+v: want a rollback on the p99 gate alone", last)
	}
	var fails int
	for _, ev := range s.History {
		if ev.Kind == "rollback_check" {
			fails++
		}
	}
	if fails != 2 || s.FailuresToRollback != 3 {
		t.Errorf("%d failing checks before the rollback (of %d needed); want 2 then the third rolls back", fails, s.FailuresToRollback)
	}
	if !canaryctl.SameSplit(s.Weights, map[string]int{"v1": 100}) {
		t.Fatalf("weights %v", s.Weights)
	}
}

func TestCanaryTooLittleTrafficHolds(t *testing.T) {
	e := newCanaryEnv(t, 1)
	e.put(e.model(map[string]int{"v1": 100}, &api.Canary{Version: "v2", StepDuration: api.Duration(200 * time.Millisecond)}))
	e.waitProxies(map[string]int{"v1": 80, "v2": 20})
	tr := e.startTraffic(1, 60, 20*time.Second)
	tr.done.Wait()
	byVar, _ := tr.counts()
	re := regexp.MustCompile(`^waiting: (\d+)/500 canary requests$`)
	var s api.CanaryStatus
	cptest.WaitUntil(t, "a hold naming the canary's requests", 15*time.Second, func() bool {
		s = e.status()
		m := re.FindStringSubmatch(s.Reason)
		return m != nil && m[1] == fmt.Sprint(byVar["v2"]) && s.Window != nil && s.Window.Canary.Requests == uint64(byVar["v2"])
	})
	if s.Phase != "progressing" || s.Step != 1 || s.Decision != "hold" || !canaryctl.SameSplit(s.Weights, map[string]int{"v1": 80, "v2": 20}) {
		t.Fatalf("status %s", cptest.MustJSON(s))
	}
	// Well past the step duration it still holds, saying why.
	time.Sleep(400 * time.Millisecond)
	if s2 := e.status(); s2.Phase != "progressing" || s2.Step != 1 || s2.Reason != s.Reason {
		t.Fatalf("after more ticks: %s step %d %q", s2.Phase, s2.Step, s2.Reason)
	}
	// GET over the API shows the same, for viewers.
	r := cptest.Call(t, e.cp, "GET", "/v1/models/recommender/canary", cptest.ViewerToken, nil)
	var api api.CanaryStatus
	r.Decode(t, &api)
	if r.Code != http.StatusOK || api.Reason != s.Reason || api.StepWeight != 20 || len(api.Gates) == 0 || api.MinRequests != 500 {
		t.Fatalf("GET canary: %d %s", r.Code, r.Body)
	}
}

func TestCanaryManualAbortMidRamp(t *testing.T) {
	e := newCanaryEnv(t, 2)
	e.put(e.model(map[string]int{"v1": 100}, nil))
	e.waitProxies(map[string]int{"v1": 100})
	// Start by hand with a long step: nothing promotes by itself.
	r := cptest.Call(t, e.cp, "POST", "/v1/models/recommender/canary/start", cptest.EditorToken, map[string]any{"version": "v2", "stepDuration": "1h", "reason": "release 2"})
	if r.Code != http.StatusOK {
		t.Fatalf("start: %d %s", r.Code, r.Body)
	}
	var resp api.CanaryActionResponse
	r.Decode(t, &resp)
	if resp.Proxies == nil || resp.Proxies.Message == "" || len(resp.Proxies.Acked) != 2 {
		t.Fatalf("start answer: %s", r.Body)
	}
	e.waitProxies(map[string]int{"v1": 80, "v2": 20})
	// Promote by hand to 50 %.
	r = cptest.Call(t, e.cp, "POST", "/v1/models/recommender/canary/promote", cptest.EditorToken, nil)
	if r.Code != http.StatusOK {
		t.Fatalf("promote: %d %s", r.Code, r.Body)
	}
	e.waitProxies(map[string]int{"v1": 50, "v2": 50})
	// An editor may not abort; the operator does, and both proxies confirm.
	if r := cptest.Call(t, e.cp, "POST", "/v1/models/recommender/canary/abort", cptest.EditorToken, nil); r.Code != http.StatusForbidden {
		t.Fatalf("abort by an editor: %d %s", r.Code, r.Body)
	}
	r = cptest.Call(t, e.cp, "POST", "/v1/models/recommender/canary/abort", cptest.OperatorToken, map[string]any{"reason": "latency alert"})
	if r.Code != http.StatusOK {
		t.Fatalf("abort: %d %s", r.Code, r.Body)
	}
	resp = api.CanaryActionResponse{}
	r.Decode(t, &resp)
	if p := resp.Proxies; p == nil || !regexp.MustCompile(`^applied on 2/2 proxies in \d+ ms$`).MatchString(p.Message) || p.ElapsedMS == nil {
		t.Fatalf("abort answer: %s", r.Body)
	}
	if resp.Status.Phase != "rolled_back" || !canaryctl.SameSplit(resp.Status.Weights, map[string]int{"v1": 100}) {
		t.Fatalf("abort status: %s", cptest.MustJSON(resp.Status))
	}
	for _, p := range e.proxies {
		if w := p.Route("recommender").Model.Spec.Traffic.Weights; !canaryctl.SameSplit(w, map[string]int{"v1": 100}) {
			t.Fatalf("proxy serves %v after the abort", w)
		}
	}
	revs := e.controllerRevisions()
	got := revs[len(revs)-1]
	if got.Action != canaryctl.ActionAbort || got.Subject != "olga" || !strings.Contains(got.Reason, "aborted by hand: latency alert") {
		t.Fatalf("abort revision: %s by %s: %q", got.Action, got.Subject, got.Reason)
	}
	// Actions that no longer apply say so.
	if r := cptest.Call(t, e.cp, "POST", "/v1/models/recommender/canary/pause", cptest.EditorToken, nil); r.Code != http.StatusConflict || !strings.Contains(string(r.Body), "no canary in progress") {
		t.Fatalf("pause after abort: %d %s", r.Code, r.Body)
	}
	if r := cptest.Call(t, e.cp, "POST", "/v1/models/recommender/canary/jump", cptest.EditorToken, nil); r.Code != http.StatusNotFound {
		t.Fatalf("unknown action: %d %s", r.Code, r.Body)
	}
	// The rollback choice skips the mid-canary revisions (and the abort's
	// own, the head): the healthy split before the canary.
	hist, err := e.cp.Store().History(context.Background(), "recommender", 0)
	if err != nil {
		t.Fatal(err)
	}
	target, skipped := canaryctl.RollbackTarget(hist, []string{"v2"})
	if target == nil || target.Action != "put" || !canaryctl.SameSplit(target.Model.Spec.Traffic.Weights, map[string]int{"v1": 100}) || len(skipped) != 2 {
		t.Fatalf("rollback target %+v, skipped %+v", target, skipped)
	}
}

// TestWritesWaitForACKs: a weights change and a document PUT asked to wait
// (waitForAck) answer once both real proxies have applied the revision,
// as rollback does; without it they answer at once with no proxies field.
func TestWritesWaitForACKs(t *testing.T) {
	e := newCanaryEnv(t, 2)
	e.put(e.model(map[string]int{"v1": 100}, nil))
	e.waitProxies(map[string]int{"v1": 100})
	applied := regexp.MustCompile(`^applied on 2/2 proxies in \d+ ms$`)

	r := cptest.Call(t, e.cp, "PUT", "/v1/models/recommender/weights", cptest.EditorToken, map[string]any{"weights": map[string]int{"v1": 80, "v2": 20}, "waitForAck": "10s"})
	var resp api.ModelResponse
	r.Decode(t, &resp)
	if r.Code != http.StatusOK || resp.Proxies == nil || !applied.MatchString(resp.Proxies.Message) || len(resp.Proxies.Acked) != 2 || resp.Proxies.Version != fmt.Sprint(resp.Revision) {
		t.Fatalf("weights with waitForAck: %d %s", r.Code, r.Body)
	}
	for i, p := range e.proxies { // acked means applied: no wait needed here
		if r := p.Route("recommender"); r == nil || !canaryctl.SameSplit(r.Model.Spec.Traffic.Weights, map[string]int{"v1": 80, "v2": 20}) {
			t.Fatalf("proxy %d does not serve v1=80 v2=20 after its ACK: %+v", i, r)
		}
	}

	doc := e.model(map[string]int{"v1": 50, "v2": 50}, nil)
	r = cptest.Call(t, e.cp, "PUT", "/v1/models/recommender?waitForAck=10s", cptest.EditorToken, doc)
	resp = api.ModelResponse{}
	r.Decode(t, &resp)
	if r.Code != http.StatusOK || resp.Proxies == nil || !applied.MatchString(resp.Proxies.Message) {
		t.Fatalf("PUT with waitForAck: %d %s", r.Code, r.Body)
	}
	r = cptest.Call(t, e.cp, "PUT", "/v1/models/recommender/weights", cptest.EditorToken, map[string]any{"weights": map[string]int{"v1": 100}})
	resp = api.ModelResponse{}
	r.Decode(t, &resp)
	if r.Code != http.StatusOK || resp.Proxies != nil {
		t.Fatalf("weights without waitForAck: %d %s", r.Code, r.Body)
	}
	for _, bad := range []string{"?waitForAck=soon", "?waitForAck=2m", "?waitForAck=-1s"} {
		if r := cptest.Call(t, e.cp, "PUT", "/v1/models/recommender"+bad, cptest.EditorToken, doc); r.Code != http.StatusBadRequest || !strings.Contains(string(r.Body), "waitForAck") {
			t.Fatalf("PUT %s: %d %s", bad, r.Code, r.Body)
		}
	}
}
