package canaryctl_test

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
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/controlplane"
	"github.com/switchyard-dev/switchyard/controlplane/canaryctl"
	"github.com/switchyard-dev/switchyard/controlplane/cptest"
	"github.com/switchyard-dev/switchyard/controlplane/store"
	bolt "go.etcd.io/bbolt"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

type tickEnv struct {
	t     *testing.T
	cp    *cptest.CP
	cc    *canaryctl.Controller
	clock *cptest.Clock
	src   *cptest.Source
	path  string
}

// newTickEnv starts a control plane whose canary controller only ticks
// when the test calls tick.
func newTickEnv(t *testing.T, statePath string) *tickEnv {
	t.Helper()
	if statePath == "" {
		statePath = filepath.Join(t.TempDir(), "state.db")
	}
	e := &tickEnv{t: t, clock: cptest.NewClock(time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)), src: &cptest.Source{}, path: statePath}
	cp := cptest.Start(t, controlplane.Config{StatePath: statePath, AllowAnonymousXDS: true}, &controlplane.CanaryOptions{Interval: time.Hour, Now: e.clock.Now, Source: e.src, AckWait: time.Millisecond}) // xDS authentication: controlplane/xds/xdsauth_test.go
	e.cp, e.cc = cp, cp.Canary
	e.src.Set("v1", cptest.Figures(2000, 0, ""))
	e.src.Set("v2", cptest.Figures(500, 0, ""))
	return e
}

func (e *tickEnv) tick() {
	e.clock.Add(time.Second)
	e.cc.TickOnce(context.Background())
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
	e.put(cptest.CanaryModel(e.t, w, &api.Canary{Version: "v2", StepDuration: api.Duration(time.Hour), MinRequests: 10, ConsecutiveFailures: 1}))
	e.tick()
	if s := e.status(); s.Phase != "progressing" {
		e.t.Fatalf("canary did not start: %s", cptest.MustJSON(s))
	}
}

// TestAutomaticRollbackRemovesTheFailedVersion: from {v1: 80, v2: 20} with
// a canary of v2, the rollback after a 100 % error rate writes v1=100
// v2=0 and marks v2 failed (issue 15: it wrote v1=80 v2=20).
func TestAutomaticRollbackRemovesTheFailedVersion(t *testing.T) {
	e := newTickEnv(t, "")
	e.startCanary(map[string]int{"v1": 80, "v2": 20})
	e.src.Set("v2", cptest.Figures(200, 200, "status_5xx"))
	e.tick()
	s := e.status()
	if s.Phase != "rolled_back" {
		t.Fatalf("after a 100%% error rate: %s", cptest.MustJSON(s))
	}
	cur := e.get()
	if w := cur.Model.Spec.Traffic.Weights; w["v2"] != 0 || w["v1"] != 100 || cur.Action != canaryctl.ActionRollback {
		t.Fatalf("rollback revision %d (%s) has weights %v; want v1=100 v2=0", cur.Revision, cur.Action, w)
	}
	if m, ok := e.failed()["v2"]; !ok || m.Revision != cur.Revision || !strings.Contains(m.Reason, "error_rate") {
		t.Fatalf("failed marks %+v; want v2, marked with revision %d", e.failed(), cur.Revision)
	}
	if _, ok := s.FailedVersions["v2"]; !ok {
		t.Errorf("status failedVersions %v", s.FailedVersions)
	}
	r := cptest.Call(t, e.cp, "GET", "/v1/models/m", cptest.ViewerToken, nil)
	var got api.ModelResponse
	r.Decode(t, &got)
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

	r := cptest.Call(t, e.cp, "PUT", "/v1/models/m/weights", cptest.EditorToken, map[string]any{"weights": map[string]int{"v1": 50, "v2": 50}})
	var refusal api.ErrorResponse
	r.Decode(t, &refusal)
	if r.Code != http.StatusConflict || len(refusal.Hints) != 2 || refusal.Hints[0].Action != api.HintCanaryAbort || refusal.Hints[0].Path != "/v1/models/m/canary/abort" ||
		refusal.Hints[1].Action != api.HintForce || refusal.Hints[1].Body["force"] != true || !strings.Contains(refusal.Error, "canary of v2 in progress") {
		t.Fatalf("weights during a canary: %d %s", r.Code, r.Body)
	}
	if cur := e.get(); cur.Revision != started.Revision {
		t.Fatalf("a refused change wrote revision %d", cur.Revision)
	}
	e.tick()
	if s := e.status(); s.Phase != "progressing" || len(e.failed()) != 0 {
		t.Fatalf("a refused change touched the canary: %s", cptest.MustJSON(s))
	}

	r = cptest.Call(t, e.cp, "PUT", "/v1/models/m/weights", cptest.EditorToken, map[string]any{"weights": map[string]int{"v1": 50, "v2": 50}, "force": true, "reason": "A/B"})
	var forced api.ModelResponse
	r.Decode(t, &forced)
	if r.Code != http.StatusOK || forced.AbortedCanary == nil || forced.AbortedCanary.Canary != "v2" || forced.Model.Spec.Traffic.Weights["v2"] != 50 {
		t.Fatalf("forced weights: %d %s", r.Code, r.Body)
	}
	hist, _ := e.cp.Store().History(context.Background(), "m", 2)
	if hist[0].Action != "weights" || hist[1].Action != canaryctl.ActionAbort || hist[1].Subject != "eddie" {
		t.Fatalf("history after force: %s by %s, %s by %s", hist[0].Action, hist[0].Subject, hist[1].Action, hist[1].Subject)
	}
	if _, ok := e.failed()["v2"]; !ok {
		t.Fatalf("v2 not marked failed by the forced abort: %+v", e.failed())
	}
	e.tick()
	if s := e.status(); s.Phase != "rolled_back" || !canaryctl.SameSplit(s.Weights, map[string]int{"v1": 50, "v2": 50}) {
		t.Fatalf("after the forced change: %s", cptest.MustJSON(s))
	}

	// One source of truth: rollback skips splits with v2, canary start
	// refuses v2 (hint: reset), a rollback to a named revision with v2
	// traffic is refused too.
	r = cptest.Call(t, e.cp, "POST", "/v1/models/m/rollback", cptest.OperatorToken, map[string]any{"waitForAck": "1ms"})
	var rb api.ModelResponse
	r.Decode(t, &rb)
	if r.Code != http.StatusOK || rb.Model.Spec.Traffic.Weights["v2"] != 0 || rb.AbortedCanary != nil {
		t.Fatalf("rollback after the forced change: %d %s", r.Code, r.Body)
	}
	r = cptest.Call(t, e.cp, "POST", "/v1/models/m/canary/start", cptest.EditorToken, map[string]any{"version": "v2"})
	refusal = api.ErrorResponse{}
	r.Decode(t, &refusal)
	if r.Code != http.StatusConflict || len(refusal.Hints) != 1 || refusal.Hints[0].Action != api.HintCanaryReset || refusal.Hints[0].Version != "v2" {
		t.Fatalf("start of the failed version: %d %s", r.Code, r.Body)
	}
	r = cptest.Call(t, e.cp, "POST", "/v1/models/m/rollback", cptest.OperatorToken, map[string]any{"revision": started.Revision, "waitForAck": "1ms"})
	refusal = api.ErrorResponse{}
	r.Decode(t, &refusal)
	if r.Code != http.StatusConflict || len(refusal.Hints) != 1 || refusal.Hints[0].Action != api.HintCanaryReset {
		t.Fatalf("rollback to a revision with traffic to the failed version: %d %s", r.Code, r.Body)
	}
}

// TestApplyDuringCanary: re-applying the document that started a canary is
// a no-op (no revision, the canary goes on); retuning a gate is written
// with the canary's weights kept; other weights are refused unless forced
// (issue 15: a re-apply wrote the old weights and aborted the canary).
func TestApplyDuringCanary(t *testing.T) {
	e := newTickEnv(t, "")
	doc := cptest.CanaryModel(t, map[string]int{"v1": 100}, &api.Canary{Version: "v2", StepDuration: api.Duration(time.Hour), MinRequests: 10, ConsecutiveFailures: 1})
	if r := cptest.Call(t, e.cp, "PUT", "/v1/models/m", cptest.EditorToken, doc); r.Code != http.StatusCreated {
		t.Fatalf("create: %d %s", r.Code, r.Body)
	}
	e.tick()
	started := e.get()
	if started.Action != canaryctl.ActionStart {
		t.Fatalf("not started: %s", started.Action)
	}
	r := cptest.Call(t, e.cp, "PUT", "/v1/models/m", cptest.EditorToken, doc)
	var resp api.ModelResponse
	r.Decode(t, &resp)
	if r.Code != http.StatusOK || !resp.Unchanged || resp.Revision != started.Revision || e.get().Revision != started.Revision {
		t.Fatalf("re-apply during the canary: %d %s", r.Code, r.Body)
	}
	retuned := doc.Clone()
	retuned.Spec.Canary.MaxErrorRate = 0.02
	r = cptest.Call(t, e.cp, "PUT", "/v1/models/m", cptest.EditorToken, retuned)
	resp = api.ModelResponse{}
	r.Decode(t, &resp)
	if r.Code != http.StatusOK || resp.Unchanged || !canaryctl.SameSplit(resp.Model.Spec.Traffic.Weights, map[string]int{"v1": 80, "v2": 20}) || resp.Model.Spec.Canary.MaxErrorRate != 0.02 {
		t.Fatalf("retune during the canary: %d %s", r.Code, r.Body)
	}
	e.tick()
	if s := e.status(); s.Phase != "progressing" || len(e.failed()) != 0 {
		t.Fatalf("after a retune: %s", cptest.MustJSON(s))
	}
	other := doc.Clone()
	other.Spec.Traffic.Weights = map[string]int{"v1": 60, "v2": 40}
	r = cptest.Call(t, e.cp, "PUT", "/v1/models/m", cptest.EditorToken, other)
	var refusal api.ErrorResponse
	r.Decode(t, &refusal)
	if r.Code != http.StatusConflict || len(refusal.Hints) != 2 || refusal.Hints[1].Path != "/v1/models/m?force=true" {
		t.Fatalf("apply with other weights during the canary: %d %s", r.Code, r.Body)
	}
	r = cptest.Call(t, e.cp, "PUT", "/v1/models/m?force=true", cptest.EditorToken, other)
	resp = api.ModelResponse{}
	r.Decode(t, &resp)
	if r.Code != http.StatusOK || !canaryctl.SameSplit(resp.Model.Spec.Traffic.Weights, other.Spec.Traffic.Weights) {
		t.Fatalf("forced apply: %d %s", r.Code, r.Body)
	}
	if _, ok := e.failed()["v2"]; !ok {
		t.Fatal("the forced apply did not abort the canary first")
	}
	// An unchanged document outside a canary still writes nothing new to
	// the canary: no 409 either.
	if r := cptest.Call(t, e.cp, "PUT", "/v1/models/m", cptest.EditorToken, other); r.Code != http.StatusOK {
		t.Fatalf("re-apply after the canary: %d %s", r.Code, r.Body)
	}
	bad := other.Clone()
	bad.Spec.Canary.MaxClientErrorExcess = 2
	if r := cptest.Call(t, e.cp, "PUT", "/v1/models/m", cptest.EditorToken, bad); r.Code != http.StatusBadRequest || !strings.Contains(string(r.Body), "spec.canary.maxClientErrorExcess") {
		t.Fatalf("maxClientErrorExcess 2: %d %s", r.Code, r.Body)
	}
}

// TestRollbackDuringCanary: POST .../rollback aborts the running canary
// first (v2 marked failed) and answers with the abort's split, from
// {v1: 80, v2: 20} v1=100 v2=0.
func TestRollbackDuringCanary(t *testing.T) {
	e := newTickEnv(t, "")
	e.startCanary(map[string]int{"v1": 80, "v2": 20})
	if r := cptest.Call(t, e.cp, "POST", "/v1/models/m/canary/promote", cptest.EditorToken, map[string]any{"waitForAck": "0s"}); r.Code != http.StatusOK {
		t.Fatalf("promote: %d %s", r.Code, r.Body)
	}
	r := cptest.Call(t, e.cp, "POST", "/v1/models/m/rollback", cptest.OperatorToken, map[string]any{"reason": "pager", "waitForAck": "1ms"})
	var rb api.ModelResponse
	r.Decode(t, &rb)
	if r.Code != http.StatusOK || rb.AbortedCanary == nil || rb.AbortedCanary.Canary != "v2" || rb.Revision != rb.AbortedCanary.Revision ||
		rb.Model.Spec.Traffic.Weights["v1"] != 100 || rb.Model.Spec.Traffic.Weights["v2"] != 0 || !strings.Contains(rb.AbortedCanary.Reason, "rollback requested by olga: pager") {
		t.Fatalf("rollback during a canary: %d %s", r.Code, r.Body)
	}
	if _, ok := e.failed()["v2"]; !ok {
		t.Fatal("v2 not marked failed")
	}
	e.tick()
	if s := e.status(); s.Phase != "rolled_back" {
		t.Fatalf("after the rollback: %s", cptest.MustJSON(s))
	}
	// Again, with no canary: the revision before the canary sent v2 20 %,
	// which failed: nothing healthy is left to restore.
	r = cptest.Call(t, e.cp, "POST", "/v1/models/m/rollback", cptest.OperatorToken, nil)
	if r.Code != http.StatusConflict || !strings.Contains(string(r.Body), "healthy split") {
		t.Fatalf("second rollback: %d %s", r.Code, r.Body)
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
	e.src.Set("v2", cptest.Figures(200, 200, "status_5xx"))
	e.tick()
	if !strings.Contains(cptest.Metrics(t, e.cp), `switchyard_canary_phase{model="m",phase="rolled_back"} 1`) {
		t.Fatal("no rolled_back phase after the rollback")
	}
	e.put(cptest.CanaryModel(t, map[string]int{"v1": 100}, nil))
	e.tick()
	s := e.status()
	if s.Phase != "none" || s.Step != 0 || len(s.History) != 0 || !strings.Contains(s.Reason, "spec.canary is not set") || !strings.Contains(s.Reason, "last run: the canary of v2 was rolled_back") {
		t.Fatalf("status after removing spec.canary: %s", cptest.MustJSON(s))
	}
	body := cptest.Metrics(t, e.cp)
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
	if r := cptest.Call(t, e.cp, "POST", "/v1/models/m/canary/reset", cptest.OperatorToken, map[string]any{"version": "v2"}); r.Code != http.StatusOK {
		t.Fatalf("reset: %d %s", r.Code, r.Body)
	}
	e.src.Set("v2", cptest.Figures(500, 0, ""))
	e.startCanary(map[string]int{"v1": 100})
	e.put(cptest.CanaryModel(t, map[string]int{"v1": 100}, nil))
	e.tick()
	if s := e.status(); s.Phase != "none" || !strings.Contains(s.Reason, "ended at step 1/4: spec.canary removed by t") {
		t.Fatalf("status after removing spec.canary mid-ramp: %s", cptest.MustJSON(s))
	}
	if !strings.Contains(cptest.Metrics(t, e.cp), `switchyard_canary_phase{model="m",phase="none"} 1`) {
		t.Error("phase metric after a mid-ramp removal")
	}
	// Deleting the model drops its series.
	if _, err := e.cp.Store().Delete(context.Background(), "m", store.Precondition{}, store.Change{}); err != nil {
		t.Fatal(err)
	}
	e.tick()
	if strings.Contains(cptest.Metrics(t, e.cp), `switchyard_canary_phase{model="m"`) {
		t.Error("a deleted model keeps its canary series")
	}
}

// TestStepNumberingAgrees: the status, the history and the step metric
// count steps alike (issue 15: status step 4, history step 3).
func TestStepNumberingAgrees(t *testing.T) {
	e := newTickEnv(t, "")
	e.startCanary(map[string]int{"v1": 100})
	for range 4 {
		if r := cptest.Call(t, e.cp, "POST", "/v1/models/m/canary/promote", cptest.EditorToken, map[string]any{"waitForAck": "0s"}); r.Code != http.StatusOK {
			t.Fatalf("promote: %d %s", r.Code, r.Body)
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
	if !strings.Contains(cptest.Metrics(t, e.cp), `switchyard_canary_step{model="m"} 4`) {
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
		t.Fatalf("after a restart:\n%s\nbefore:\n%s", cptest.MustJSON(after), cptest.MustJSON(before))
	}
	e2.tick() // its own revision: no abort for "weights changed outside the canary"
	if s := e2.status(); s.Phase != "progressing" {
		t.Fatalf("after a restart and a tick: %s", cptest.MustJSON(s))
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
	e.put(cptest.CanaryModel(t, map[string]int{"v1": 100}, &api.Canary{Version: "v2"}))
	if m := e.failed()["v2"]; !strings.Contains(m.Reason, "nan_rate 12%") {
		t.Fatalf("imported marks %+v", e.failed())
	}
	if s := e.status(); s.Phase != "rolled_back" {
		t.Fatalf("imported run: %s", cptest.MustJSON(s))
	}
	if _, err := os.Stat(path + ".canary.imported"); err != nil {
		t.Fatalf("the legacy file was not set aside: %v", err)
	}
	e.tick() // v2 is failed: not started again
	if s := e.status(); s.Phase != "rolled_back" {
		t.Fatalf("after a tick: %s", cptest.MustJSON(s))
	}
}
