package controlplane

// Canary tests without traffic: the real control plane and its canary
// controller, ticked by hand (TickOnce) with an injected clock and a
// programmable metric source, so each test decides what every analysis
// sees. They cover issue 15's canary defects: rollbacks that left the
// failed version in traffic, manual weight changes during a canary, two
// sources of truth for failed versions, the status after spec.canary is
// removed, and step numbering.

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/canary"
	"github.com/switchyard-dev/switchyard/controlplane/store"
)

// fakeClock is an injected clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// fakeSource answers every window with the figures set per version.
type fakeSource struct {
	mu sync.Mutex
	by map[string]canary.Stats
}

func (f *fakeSource) Stats(_ context.Context, _, version string, _, _ time.Time) (canary.Stats, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.by[version], nil
}

func (f *fakeSource) set(version string, s canary.Stats) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.by == nil {
		f.by = map[string]canary.Stats{}
	}
	f.by[version] = s
}

// figures is n requests of latency 10 ms with errs errors of kind.
func figures(n, errs uint64, kind string) canary.Stats {
	s := canary.Stats{Requests: n}
	for range n {
		s.Latency.Record(10 * time.Millisecond)
	}
	if errs > 0 {
		s.Errors = map[string]uint64{kind: errs}
	}
	return s
}

type tickEnv struct {
	t     *testing.T
	cp    *ControlPlane
	cc    *CanaryController
	clock *fakeClock
	src   *fakeSource
	path  string
}

// newTickEnv starts a control plane whose canary controller only ticks
// when the test calls tick.
func newTickEnv(t *testing.T, statePath string) *tickEnv {
	t.Helper()
	if statePath == "" {
		statePath = filepath.Join(t.TempDir(), "state.db")
	}
	e := &tickEnv{t: t, clock: &fakeClock{t: time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)}, src: &fakeSource{}, path: statePath}
	cp, err := New(Config{StatePath: statePath, APIAddr: "127.0.0.1:0", XDSAddr: "127.0.0.1:0", Auth: testAuth(t),
		AllowAnonymousXDS: true}) // xDS authentication: xdsauth_test.go
	if err != nil {
		t.Fatal(err)
	}
	cc, err := cp.EnableCanary(CanaryOptions{Interval: time.Hour, Now: e.clock.Now, Source: e.src, AckWait: time.Millisecond})
	if err != nil {
		cp.Close()
		t.Fatal(err)
	}
	if err := cp.Start(context.Background()); err != nil {
		cp.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { cp.Close() })
	e.cp, e.cc = cp, cc
	e.src.set("v1", figures(2000, 0, ""))
	e.src.set("v2", figures(500, 0, ""))
	return e
}

func (e *tickEnv) tick() {
	e.clock.Add(time.Second)
	e.cc.TickOnce(context.Background())
}

// canaryModel is model m with versions v1, v2 at w, with spec.canary c.
func canaryModel(t testing.TB, w map[string]int, c *api.Canary) api.Model {
	t.Helper()
	m := api.Model{
		Metadata: api.Metadata{Name: "m"},
		Spec: api.Spec{
			Versions: []api.Version{
				{Name: "v1", Endpoints: []string{"127.0.0.1:8001"}},
				{Name: "v2", Endpoints: []string{"127.0.0.1:8002"}},
			},
			Traffic: api.Traffic{Weights: w},
			Canary:  c,
		},
	}
	if err := api.Normalize(&m); err != nil {
		t.Fatal(err)
	}
	return m
}

func (e *tickEnv) put(m api.Model) api.Record {
	e.t.Helper()
	rec, err := e.cp.Store().Put(context.Background(), m, store.Precondition{}, store.Change{Subject: "t", Action: "put"})
	if err != nil {
		e.t.Fatal(err)
	}
	return rec
}

func (e *tickEnv) get() api.Record {
	e.t.Helper()
	rec, err := e.cp.Store().Get(context.Background(), "m")
	if err != nil {
		e.t.Fatal(err)
	}
	return rec
}

func (e *tickEnv) status() api.CanaryStatus {
	e.t.Helper()
	s, err := e.cc.Status(context.Background(), "m")
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

func (e *tickEnv) failed() map[string]api.FailedMark {
	e.t.Helper()
	f, err := e.cp.Store().Failed(context.Background(), "m")
	if err != nil {
		e.t.Fatal(err)
	}
	return f
}

// startCanary stores m at w with a canary of v2 that never promotes by
// itself (1h steps) and ticks once to start it.
func (e *tickEnv) startCanary(w map[string]int) {
	e.t.Helper()
	e.put(canaryModel(e.t, w, &api.Canary{Version: "v2", StepDuration: api.Duration(time.Hour), MinRequests: 10, ConsecutiveFailures: 1}))
	e.tick()
	if s := e.status(); s.Phase != "progressing" {
		e.t.Fatalf("canary did not start: %s", mustJSON(s))
	}
}

func metricsText(t *testing.T, cp *ControlPlane) string {
	t.Helper()
	return string(call(t, cp, "GET", "/metrics", "", nil).body)
}

// TestAutomaticRollbackRemovesTheFailedVersion: from {v1: 80, v2: 20} with
// a canary of v2, the rollback after a 100 % error rate writes v1=100
// v2=0 and marks v2 failed (issue 15: it wrote v1=80 v2=20).
func TestAutomaticRollbackRemovesTheFailedVersion(t *testing.T) {
	e := newTickEnv(t, "")
	e.startCanary(map[string]int{"v1": 80, "v2": 20})
	e.src.set("v2", figures(200, 200, "status_5xx"))
	e.tick()
	s := e.status()
	if s.Phase != "rolled_back" {
		t.Fatalf("after a 100%% error rate: %s", mustJSON(s))
	}
	cur := e.get()
	if w := cur.Model.Spec.Traffic.Weights; w["v2"] != 0 || w["v1"] != 100 || cur.Action != ActionCanaryRollback {
		t.Fatalf("rollback revision %d (%s) has weights %v; want v1=100 v2=0", cur.Revision, cur.Action, w)
	}
	if m, ok := e.failed()["v2"]; !ok || m.Revision != cur.Revision || !strings.Contains(m.Reason, "error_rate") {
		t.Fatalf("failed marks %+v; want v2, marked with revision %d", e.failed(), cur.Revision)
	}
	if _, ok := s.FailedVersions["v2"]; !ok {
		t.Errorf("status failedVersions %v", s.FailedVersions)
	}
	r := call(t, e.cp, "GET", "/v1/models/m", viewerToken, nil)
	var got api.ModelResponse
	r.decode(t, &got)
	if got.FailedVersions["v2"].Revision != cur.Revision {
		t.Errorf("GET model failedVersions %+v", got.FailedVersions)
	}
}

// TestWeightChangeDuringCanary: `syctl weights set` (PUT .../weights)
// during a canary is refused with 409 and hints naming abort and force;
// with force the canary is aborted first, its version marked failed, and a
// later rollback sends nothing to it, while canary start refuses it too
// (issue 15: the change silently aborted the canary, rollback then sent
// traffic to the "failed" version, canary start refused it).
func TestWeightChangeDuringCanary(t *testing.T) {
	e := newTickEnv(t, "")
	e.startCanary(map[string]int{"v1": 100})
	started := e.get()

	r := call(t, e.cp, "PUT", "/v1/models/m/weights", editorToken, map[string]any{"weights": map[string]int{"v1": 50, "v2": 50}})
	var refusal api.ErrorResponse
	r.decode(t, &refusal)
	if r.code != http.StatusConflict || len(refusal.Hints) != 2 || refusal.Hints[0].Action != api.HintCanaryAbort || refusal.Hints[0].Path != "/v1/models/m/canary/abort" ||
		refusal.Hints[1].Action != api.HintForce || refusal.Hints[1].Body["force"] != true || !strings.Contains(refusal.Error, "canary of v2 in progress") {
		t.Fatalf("weights during a canary: %d %s", r.code, r.body)
	}
	if cur := e.get(); cur.Revision != started.Revision {
		t.Fatalf("a refused change wrote revision %d", cur.Revision)
	}
	e.tick()
	if s := e.status(); s.Phase != "progressing" || len(e.failed()) != 0 {
		t.Fatalf("a refused change touched the canary: %s", mustJSON(s))
	}

	r = call(t, e.cp, "PUT", "/v1/models/m/weights", editorToken, map[string]any{"weights": map[string]int{"v1": 50, "v2": 50}, "force": true, "reason": "A/B"})
	var forced api.ModelResponse
	r.decode(t, &forced)
	if r.code != http.StatusOK || forced.AbortedCanary == nil || forced.AbortedCanary.Canary != "v2" || forced.Model.Spec.Traffic.Weights["v2"] != 50 {
		t.Fatalf("forced weights: %d %s", r.code, r.body)
	}
	hist, _ := e.cp.Store().History(context.Background(), "m", 2)
	if hist[0].Action != "weights" || hist[1].Action != ActionCanaryAbort || hist[1].Subject != "eddie" {
		t.Fatalf("history after force: %s by %s, %s by %s", hist[0].Action, hist[0].Subject, hist[1].Action, hist[1].Subject)
	}
	if _, ok := e.failed()["v2"]; !ok {
		t.Fatalf("v2 not marked failed by the forced abort: %+v", e.failed())
	}
	e.tick()
	if s := e.status(); s.Phase != "rolled_back" || !sameSplit(s.Weights, map[string]int{"v1": 50, "v2": 50}) {
		t.Fatalf("after the forced change: %s", mustJSON(s))
	}

	// One source of truth: rollback skips splits with v2, canary start
	// refuses v2 (hint: reset), a rollback to a named revision with v2
	// traffic is refused too.
	r = call(t, e.cp, "POST", "/v1/models/m/rollback", operatorToken, map[string]any{"waitForAck": "1ms"})
	var rb api.ModelResponse
	r.decode(t, &rb)
	if r.code != http.StatusOK || rb.Model.Spec.Traffic.Weights["v2"] != 0 || rb.AbortedCanary != nil {
		t.Fatalf("rollback after the forced change: %d %s", r.code, r.body)
	}
	r = call(t, e.cp, "POST", "/v1/models/m/canary/start", editorToken, map[string]any{"version": "v2"})
	refusal = api.ErrorResponse{}
	r.decode(t, &refusal)
	if r.code != http.StatusConflict || len(refusal.Hints) != 1 || refusal.Hints[0].Action != api.HintCanaryReset || refusal.Hints[0].Version != "v2" {
		t.Fatalf("start of the failed version: %d %s", r.code, r.body)
	}
	r = call(t, e.cp, "POST", "/v1/models/m/rollback", operatorToken, map[string]any{"revision": started.Revision, "waitForAck": "1ms"})
	refusal = api.ErrorResponse{}
	r.decode(t, &refusal)
	if r.code != http.StatusConflict || len(refusal.Hints) != 1 || refusal.Hints[0].Action != api.HintCanaryReset {
		t.Fatalf("rollback to a revision with traffic to the failed version: %d %s", r.code, r.body)
	}
}

// TestApplyDuringCanary: re-applying the document that started a canary is
// a no-op (no revision, the canary goes on); retuning a gate is written
// with the canary's weights kept; other weights are refused unless forced
// (issue 15: a re-apply wrote the old weights and aborted the canary).
func TestApplyDuringCanary(t *testing.T) {
	e := newTickEnv(t, "")
	doc := canaryModel(t, map[string]int{"v1": 100}, &api.Canary{Version: "v2", StepDuration: api.Duration(time.Hour), MinRequests: 10, ConsecutiveFailures: 1})
	if r := call(t, e.cp, "PUT", "/v1/models/m", editorToken, doc); r.code != http.StatusCreated {
		t.Fatalf("create: %d %s", r.code, r.body)
	}
	e.tick()
	started := e.get()
	if started.Action != ActionCanaryStart {
		t.Fatalf("not started: %s", started.Action)
	}
	r := call(t, e.cp, "PUT", "/v1/models/m", editorToken, doc)
	var resp api.ModelResponse
	r.decode(t, &resp)
	if r.code != http.StatusOK || !resp.Unchanged || resp.Revision != started.Revision || e.get().Revision != started.Revision {
		t.Fatalf("re-apply during the canary: %d %s", r.code, r.body)
	}
	retuned := doc.Clone()
	retuned.Spec.Canary.MaxErrorRate = 0.02
	r = call(t, e.cp, "PUT", "/v1/models/m", editorToken, retuned)
	resp = api.ModelResponse{}
	r.decode(t, &resp)
	if r.code != http.StatusOK || resp.Unchanged || !sameSplit(resp.Model.Spec.Traffic.Weights, map[string]int{"v1": 80, "v2": 20}) || resp.Model.Spec.Canary.MaxErrorRate != 0.02 {
		t.Fatalf("retune during the canary: %d %s", r.code, r.body)
	}
	e.tick()
	if s := e.status(); s.Phase != "progressing" || len(e.failed()) != 0 {
		t.Fatalf("after a retune: %s", mustJSON(s))
	}
	other := doc.Clone()
	other.Spec.Traffic.Weights = map[string]int{"v1": 60, "v2": 40}
	r = call(t, e.cp, "PUT", "/v1/models/m", editorToken, other)
	var refusal api.ErrorResponse
	r.decode(t, &refusal)
	if r.code != http.StatusConflict || len(refusal.Hints) != 2 || refusal.Hints[1].Path != "/v1/models/m?force=true" {
		t.Fatalf("apply with other weights during the canary: %d %s", r.code, r.body)
	}
	r = call(t, e.cp, "PUT", "/v1/models/m?force=true", editorToken, other)
	resp = api.ModelResponse{}
	r.decode(t, &resp)
	if r.code != http.StatusOK || !sameSplit(resp.Model.Spec.Traffic.Weights, other.Spec.Traffic.Weights) {
		t.Fatalf("forced apply: %d %s", r.code, r.body)
	}
	if _, ok := e.failed()["v2"]; !ok {
		t.Fatal("the forced apply did not abort the canary first")
	}
	// An unchanged document outside a canary still writes nothing new to
	// the canary: no 409 either.
	if r := call(t, e.cp, "PUT", "/v1/models/m", editorToken, other); r.code != http.StatusOK {
		t.Fatalf("re-apply after the canary: %d %s", r.code, r.body)
	}
	bad := other.Clone()
	bad.Spec.Canary.MaxClientErrorExcess = 2
	if r := call(t, e.cp, "PUT", "/v1/models/m", editorToken, bad); r.code != http.StatusBadRequest || !strings.Contains(string(r.body), "spec.canary.maxClientErrorExcess") {
		t.Fatalf("maxClientErrorExcess 2: %d %s", r.code, r.body)
	}
}

// TestRollbackDuringCanary: POST .../rollback aborts the running canary
// first (v2 marked failed) and answers with the abort's split, from
// {v1: 80, v2: 20} v1=100 v2=0.
func TestRollbackDuringCanary(t *testing.T) {
	e := newTickEnv(t, "")
	e.startCanary(map[string]int{"v1": 80, "v2": 20})
	if r := call(t, e.cp, "POST", "/v1/models/m/canary/promote", editorToken, map[string]any{"waitForAck": "0s"}); r.code != http.StatusOK {
		t.Fatalf("promote: %d %s", r.code, r.body)
	}
	r := call(t, e.cp, "POST", "/v1/models/m/rollback", operatorToken, map[string]any{"reason": "pager", "waitForAck": "1ms"})
	var rb api.ModelResponse
	r.decode(t, &rb)
	if r.code != http.StatusOK || rb.AbortedCanary == nil || rb.AbortedCanary.Canary != "v2" || rb.Revision != rb.AbortedCanary.Revision ||
		rb.Model.Spec.Traffic.Weights["v1"] != 100 || rb.Model.Spec.Traffic.Weights["v2"] != 0 || !strings.Contains(rb.AbortedCanary.Reason, "rollback requested by olga: pager") {
		t.Fatalf("rollback during a canary: %d %s", r.code, r.body)
	}
	if _, ok := e.failed()["v2"]; !ok {
		t.Fatal("v2 not marked failed")
	}
	e.tick()
	if s := e.status(); s.Phase != "rolled_back" {
		t.Fatalf("after the rollback: %s", mustJSON(s))
	}
	// Again, with no canary: the revision before the canary sent v2 20 %,
	// which failed: nothing healthy is left to restore.
	r = call(t, e.cp, "POST", "/v1/models/m/rollback", operatorToken, nil)
	if r.code != http.StatusConflict || !strings.Contains(string(r.body), "healthy split") {
		t.Fatalf("second rollback: %d %s", r.code, r.body)
	}
}

// TestRemovingSpecCanaryClearsTheRun: once spec.canary is removed, a
// rolled back canary's status is none and its phase metric (the alert's
// series) says none (issue 15: phase rolled_back and
// switchyard_canary_phase{phase="rolled_back"} 1 stayed); a run removed
// mid-ramp ends the same way.
func TestRemovingSpecCanaryClearsTheRun(t *testing.T) {
	e := newTickEnv(t, "")
	e.startCanary(map[string]int{"v1": 100})
	e.src.set("v2", figures(200, 200, "status_5xx"))
	e.tick()
	if !strings.Contains(metricsText(t, e.cp), `switchyard_canary_phase{model="m",phase="rolled_back"} 1`) {
		t.Fatal("no rolled_back phase after the rollback")
	}
	e.put(canaryModel(t, map[string]int{"v1": 100}, nil))
	e.tick()
	s := e.status()
	if s.Phase != "none" || s.Step != 0 || len(s.History) != 0 || !strings.Contains(s.Reason, "spec.canary is not set") || !strings.Contains(s.Reason, "last run: the canary of v2 was rolled_back") {
		t.Fatalf("status after removing spec.canary: %s", mustJSON(s))
	}
	body := metricsText(t, e.cp)
	for _, line := range []string{`switchyard_canary_phase{model="m",phase="rolled_back"} 0`, `switchyard_canary_phase{model="m",phase="none"} 1`, `switchyard_canary_step{model="m"} 0`} {
		if !strings.Contains(body, line) {
			t.Errorf("/metrics lacks %s", line)
		}
	}
	// The failed mark stays (only a reset clears it).
	if _, ok := e.failed()["v2"]; !ok {
		t.Error("removing spec.canary cleared the failed mark")
	}

	// Mid-ramp: a run of v2 after a reset, then spec.canary removed.
	if r := call(t, e.cp, "POST", "/v1/models/m/canary/reset", operatorToken, map[string]any{"version": "v2"}); r.code != http.StatusOK {
		t.Fatalf("reset: %d %s", r.code, r.body)
	}
	e.src.set("v2", figures(500, 0, ""))
	e.startCanary(map[string]int{"v1": 100})
	e.put(canaryModel(t, map[string]int{"v1": 100}, nil))
	e.tick()
	if s := e.status(); s.Phase != "none" || !strings.Contains(s.Reason, "ended at step 1/4: spec.canary removed by t") {
		t.Fatalf("status after removing spec.canary mid-ramp: %s", mustJSON(s))
	}
	if !strings.Contains(metricsText(t, e.cp), `switchyard_canary_phase{model="m",phase="none"} 1`) {
		t.Error("phase metric after a mid-ramp removal")
	}
	// Deleting the model drops its series.
	if _, err := e.cp.Store().Delete(context.Background(), "m", store.Precondition{}, store.Change{}); err != nil {
		t.Fatal(err)
	}
	e.tick()
	if strings.Contains(metricsText(t, e.cp), `switchyard_canary_phase{model="m"`) {
		t.Error("a deleted model keeps its canary series")
	}
}

// TestStepNumberingAgrees: the status, the history and the step metric
// count steps alike (issue 15: status step 4, history step 3).
func TestStepNumberingAgrees(t *testing.T) {
	e := newTickEnv(t, "")
	e.startCanary(map[string]int{"v1": 100})
	for range 4 {
		if r := call(t, e.cp, "POST", "/v1/models/m/canary/promote", editorToken, map[string]any{"waitForAck": "0s"}); r.code != http.StatusOK {
			t.Fatalf("promote: %d %s", r.code, r.body)
		}
	}
	s := e.status()
	last := s.History[len(s.History)-1]
	if s.Phase != "promoted" || s.Step != 4 || last.Step != 4 {
		t.Fatalf("promoted: status step %d, last event step %d (%s); want 4 and 4", s.Step, last.Step, last.Kind)
	}
	for i, ev := range s.History {
		if want := min(i+1, 4); ev.Step != want {
			t.Errorf("event %d (%s) at step %d, want %d", i, ev.Kind, ev.Step, want)
		}
	}
	if !strings.Contains(metricsText(t, e.cp), `switchyard_canary_step{model="m"} 4`) {
		t.Error("step metric is not 4")
	}
	if cur := e.get(); !strings.Contains(cur.Reason, "step 4/4") {
		t.Errorf("revision reason %q", cur.Reason)
	}
}

// TestCanaryStateSurvivesRestart: the run is read back from the state
// file with the revision it was written with.
func TestCanaryStateSurvivesRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	e := newTickEnv(t, path)
	e.startCanary(map[string]int{"v1": 100})
	before := e.status()
	if err := e.cp.Close(); err != nil {
		t.Fatal(err)
	}
	e2 := newTickEnv(t, path)
	after := e2.status()
	if after.Phase != "progressing" || after.Revision != before.Revision || fmt.Sprint(after.History) != fmt.Sprint(before.History) {
		t.Fatalf("after a restart:\n%s\nbefore:\n%s", mustJSON(after), mustJSON(before))
	}
	e2.tick() // its own revision: no abort for "weights changed outside the canary"
	if s := e2.status(); s.Phase != "progressing" {
		t.Fatalf("after a restart and a tick: %s", mustJSON(s))
	}
}

func TestJudgeWrite(t *testing.T) {
	run := &canaryRun{Config: canary.Config{Baseline: "v1", Canary: "v2", Steps: []int{20, 50, 80, 100}},
		State: canary.State{Phase: canary.Progressing, Weights: map[string]int{"v1": 80, "v2": 20}, Previous: map[string]int{"v1": 100}}}
	done := &canaryRun{Config: run.Config, State: canary.State{Phase: canary.RolledBack, Weights: map[string]int{"v1": 100}}}
	model := func(w map[string]int, version string) *api.Model {
		m := &api.Model{Spec: api.Spec{Traffic: api.Traffic{Weights: w}}}
		if version != "" {
			m.Spec.Canary = &api.Canary{Version: version}
		}
		return m
	}
	cur := model(map[string]int{"v1": 80, "v2": 20}, "v2")
	for name, c := range map[string]struct {
		run         *canaryRun
		next        *api.Model
		weightsOnly bool
		want        writeOutcome
	}{
		"no canary":                         {nil, model(map[string]int{"v1": 10, "v2": 90}, "v2"), false, writePass},
		"finished canary":                   {done, model(map[string]int{"v1": 10, "v2": 90}, "v2"), true, writePass},
		"same split":                        {run, model(map[string]int{"v1": 4, "v2": 1}, "v2"), false, writePass},
		"same split by the weights API":     {run, model(map[string]int{"v1": 80, "v2": 20}, "v2"), true, writePass},
		"the split from before: a re-apply": {run, model(map[string]int{"v1": 100}, "v2"), false, writeKeep},
		"the split from before, by weights": {run, model(map[string]int{"v1": 100}, "v2"), true, writeConflict},
		"other weights":                     {run, model(map[string]int{"v1": 50, "v2": 50}, "v2"), false, writeConflict},
		"other weights by the weights API":  {run, model(map[string]int{"v1": 50, "v2": 50}, "v2"), true, writeConflict},
		"spec.canary removed":               {run, model(map[string]int{"v1": 50, "v2": 50}, ""), false, writeEnds},
		"spec.canary renamed":               {run, model(map[string]int{"v1": 100}, "v3"), false, writeEnds},
		"paused canary, other weights":      {&canaryRun{Config: run.Config, State: canary.State{Phase: canary.Paused, Weights: run.State.Weights, Previous: run.State.Previous}}, model(map[string]int{"v1": 0, "v2": 100}, "v2"), false, writeConflict},
	} {
		if got := judgeWrite(c.run, cur, c.next, c.weightsOnly); got != c.want {
			t.Errorf("%s: %d, want %d", name, got, c.want)
		}
	}
}

// TestLegacyCanaryStateImported: the separate <state>.canary file of an
// older control plane is read once into the state file: its failed
// versions become failed marks, its run the model's side state.
func TestLegacyCanaryStateImported(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	db, err := bolt.Open(path+".canary", 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	book := `{"model": "m", "run": {"config": {"Baseline": "v1", "Canary": "v2"}, "state": {"phase": "rolled_back", "step": 0, "weights": {"v1": 100}}, "revision": 3},
		"failed": ["v2"], "failedWhy": {"v2": "2026-11-27T01:00:00Z: nan_rate 12%"}}`
	if err := db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte("canary"))
		if err != nil {
			return err
		}
		return b.Put([]byte("m"), []byte(book))
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	e := newTickEnv(t, path)
	e.put(canaryModel(t, map[string]int{"v1": 100}, &api.Canary{Version: "v2"}))
	if m := e.failed()["v2"]; !strings.Contains(m.Reason, "nan_rate 12%") {
		t.Fatalf("imported marks %+v", e.failed())
	}
	if s := e.status(); s.Phase != "rolled_back" {
		t.Fatalf("imported run: %s", mustJSON(s))
	}
	if _, err := os.Stat(path + ".canary.imported"); err != nil {
		t.Fatalf("the legacy file was not set aside: %v", err)
	}
	e.tick() // v2 is failed: not started again
	if s := e.status(); s.Phase != "rolled_back" {
		t.Fatalf("after a tick: %s", mustJSON(s))
	}
}
