package canary

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func cfg() Config {
	return Config{Baseline: "v1", Canary: "v2", StepDuration: time.Minute, FailuresBeforeRollback: 2,
		Gates: Gates{MinRequests: 100, MinLatencySamples: 50}}
}

func TestRampHealthy(t *testing.T) {
	c := cfg()
	s, tr, err := Start(c, map[string]int{"v1": 100}, nil, t0)
	if err != nil {
		t.Fatal(err)
	}
	if !tr.Changed || !reflect.DeepEqual(tr.Weights, map[string]int{"v1": 80, "v2": 20}) {
		t.Fatalf("start weights %v", tr.Weights)
	}
	base, can := stats(2000, 1, 10*time.Millisecond), stats(500, 0, 10*time.Millisecond)
	now := t0.Add(30 * time.Second)
	s, tr = Tick(s, c, base, can, now)
	if tr.Changed || tr.Decision != Hold || tr.Reason != "waiting: 30s left in step" {
		t.Fatalf("young step: %+v", tr)
	}
	want := []map[string]int{{"v1": 50, "v2": 50}, {"v1": 20, "v2": 80}, {"v2": 100}, {"v2": 100}}
	for i, w := range want {
		now = now.Add(time.Minute)
		s, tr = Tick(s, c, base, can, now)
		if !tr.Changed || tr.Decision != Promote || !reflect.DeepEqual(tr.Weights, w) {
			t.Fatalf("promotion %d: %+v", i, tr)
		}
		if !s.StepStarted.Equal(now) && s.Phase == Progressing {
			t.Fatalf("step clock not restarted")
		}
	}
	if s.Phase != Promoted || s.Step != 3 {
		t.Fatalf("phase %s step %d", s.Phase, s.Step)
	}
	// a promoted canary no longer changes
	s2, tr := Tick(s, c, base, stats(10, 10, time.Second), now.Add(time.Hour))
	if tr.Changed || s2.Phase != Promoted {
		t.Fatal("terminal state moved")
	}
	var kinds []string
	for _, e := range s.History {
		kinds = append(kinds, e.Kind)
	}
	if got := strings.Join(kinds, ","); got != "start,hold,promote,promote,promote,promoted" {
		t.Errorf("history %s", got)
	}
}

func TestRampRollbackAfterConsecutiveFailures(t *testing.T) {
	c := cfg()
	s, _, _ := Start(c, map[string]int{"v1": 90, "lite": 10}, nil, t0)
	base := stats(2000, 0, 10*time.Millisecond)
	bad := withNaN(stats(60, 0, 10*time.Millisecond), 6)
	good := stats(60, 0, 10*time.Millisecond)

	s, tr := Tick(s, c, base, bad, t0.Add(time.Second))
	if tr.Changed || tr.Decision != Hold || !strings.Contains(tr.Reason, "failing check 1/2: nan_rate") {
		t.Fatalf("first failure: %+v", tr)
	}
	// a passing check in between resets the count (noisy window)
	s, _ = Tick(s, c, base, good, t0.Add(2*time.Second))
	if s.ConsecutiveFailures != 0 {
		t.Fatalf("failures %d after a clean check", s.ConsecutiveFailures)
	}
	s, _ = Tick(s, c, base, bad, t0.Add(3*time.Second))
	before := s
	s, tr = Tick(s, c, base, bad, t0.Add(4*time.Second))
	if !tr.Changed || tr.Decision != Rollback || !reflect.DeepEqual(tr.Weights, map[string]int{"v1": 90, "lite": 10}) {
		t.Fatalf("rollback: %+v", tr)
	}
	if s.Phase != RolledBack || s.Failed != "v2" || !strings.Contains(s.History[len(s.History)-1].Reason, "nan_rate 10.00% (6/60") {
		t.Fatalf("state %+v", s)
	}
	if before.Phase != Progressing || len(before.History) == len(s.History) {
		t.Fatal("Tick modified its input state")
	}
	if _, _, err := Start(c, map[string]int{"v1": 100}, []string{s.Failed}, t0.Add(time.Hour)); err == nil || !strings.Contains(err.Error(), `"v2" failed an earlier canary`) {
		t.Errorf("restart of a failed version: %v", err)
	}
}

// TestRollbackRemovesTheFailedVersion: a canary of v2 started from a split
// that already sent v2 some traffic rolls back to that split with v2's
// share given to the baseline (issue 15: it restored v1=80 v2=20, leaving
// the failing version 20 %).
func TestRollbackRemovesTheFailedVersion(t *testing.T) {
	c := cfg()
	c.FailuresBeforeRollback = 1
	s, _, err := Start(c, map[string]int{"v1": 80, "v2": 20}, nil, t0)
	if err != nil {
		t.Fatal(err)
	}
	allErrors := stats(200, 200, 10*time.Millisecond)
	s, tr := Tick(s, c, stats(2000, 0, 10*time.Millisecond), allErrors, t0.Add(time.Second))
	if tr.Decision != Rollback || s.Phase != RolledBack {
		t.Fatalf("a 100 %% error rate: %+v", tr)
	}
	if want := map[string]int{"v1": 100, "v2": 0}; !reflect.DeepEqual(tr.Weights, want) || !reflect.DeepEqual(s.Weights, want) {
		t.Fatalf("rollback writes %v (state %v), want %v", tr.Weights, s.Weights, want)
	}
	// A manual abort restores the same.
	s, _, _ = Start(c, map[string]int{"v1": 80, "v2": 20}, nil, t0)
	_, tr, err = Act(s, c, Abort, t0.Add(time.Second), "")
	if err != nil || !reflect.DeepEqual(tr.Weights, map[string]int{"v1": 100, "v2": 0}) {
		t.Fatalf("abort: %v %v", err, tr.Weights)
	}
}

func TestRestoreSplit(t *testing.T) {
	for name, c := range map[string]struct {
		prev, want map[string]int
	}{
		"canary had no traffic":     {map[string]int{"v1": 100}, map[string]int{"v1": 100}},
		"canary had a share":        {map[string]int{"v1": 80, "v2": 20}, map[string]int{"v1": 100, "v2": 0}},
		"a third version keeps its": {map[string]int{"v1": 70, "v2": 20, "lite": 10}, map[string]int{"v1": 90, "v2": 0, "lite": 10}},
		"relative weights":          {map[string]int{"v1": 4, "v2": 1}, map[string]int{"v1": 5, "v2": 0}},
		"no previous split":         {nil, map[string]int{"v1": 100}},
	} {
		if got := RestoreSplit(c.prev, "v1", "v2"); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: RestoreSplit(%v) = %v, want %v", name, c.prev, got, c.want)
		}
	}
}

// TestStepNumbering: events count steps from 1, as the status and the
// step metric do (issue 15: the status said step 4 where the history said
// step 3).
func TestStepNumbering(t *testing.T) {
	c := cfg()
	s, _, _ := Start(c, map[string]int{"v1": 100}, nil, t0)
	if got := s.History[0].Step; got != 1 || s.StepNumber() != 1 {
		t.Fatalf("start event at step %d, state step number %d; want 1", got, s.StepNumber())
	}
	for range 4 {
		s, _, _ = Act(s, c, PromoteNow, t0, "")
	}
	last := s.History[len(s.History)-1]
	if last.Kind != "promoted" || last.Step != 4 || s.StepNumber() != 4 {
		t.Fatalf("promoted event at step %d, state step number %d; want 4 (of 4)", last.Step, s.StepNumber())
	}
	var steps []int
	for _, e := range s.History {
		steps = append(steps, e.Step)
	}
	if !reflect.DeepEqual(steps, []int{1, 2, 3, 4, 4}) {
		t.Errorf("event steps %v", steps)
	}
}

func TestRampLowTrafficHolds(t *testing.T) {
	c := cfg()
	s, _, _ := Start(c, map[string]int{"v1": 100}, nil, t0)
	for i := 1; i <= 50; i++ {
		var tr Transition
		s, tr = Tick(s, c, stats(40, 0, time.Millisecond), stats(10, 0, time.Millisecond), t0.Add(time.Duration(i)*time.Minute))
		if tr.Changed || tr.Decision != Hold || tr.Reason != "waiting: 10/100 canary requests" {
			t.Fatalf("tick %d: %+v", i, tr)
		}
	}
	if len(s.History) != 2 {
		t.Errorf("repeated holds with one reason must be recorded once, history %d", len(s.History))
	}
}

func TestManualActions(t *testing.T) {
	c := cfg()
	prev := map[string]int{"v1": 100}
	s, _, _ := Start(c, prev, nil, t0)
	base, can := stats(2000, 0, time.Millisecond), stats(500, 0, time.Millisecond)

	s, _, err := Act(s, c, Pause, t0.Add(time.Second), "investigating")
	if err != nil || s.Phase != Paused {
		t.Fatal(err, s.Phase)
	}
	s, tr := Tick(s, c, base, can, t0.Add(time.Hour))
	if tr.Changed || tr.Reason != "paused" || s.Step != 0 {
		t.Fatalf("paused tick %+v", tr)
	}
	if _, _, err := Act(s, c, Pause, t0, ""); err == nil {
		t.Error("pause while paused accepted")
	}
	resumeAt := t0.Add(2 * time.Hour)
	s, _, err = Act(s, c, Resume, resumeAt, "")
	if err != nil || s.Phase != Progressing || !s.StepStarted.Equal(resumeAt) {
		t.Fatalf("resume: %v %+v", err, s)
	}
	s, tr = Tick(s, c, base, can, resumeAt.Add(10*time.Second))
	if tr.Decision != Hold || !strings.Contains(tr.Reason, "left in step") {
		t.Fatalf("time paused must not count: %+v", tr)
	}
	s, tr, err = Act(s, c, PromoteNow, resumeAt.Add(20*time.Second), "")
	if err != nil || !tr.Changed || !reflect.DeepEqual(tr.Weights, map[string]int{"v1": 50, "v2": 50}) {
		t.Fatalf("promote now: %v %+v", err, tr)
	}
	s, tr, err = Act(s, c, Abort, resumeAt.Add(30*time.Second), "bad dashboards")
	if err != nil || !tr.Changed || !reflect.DeepEqual(tr.Weights, prev) || s.Phase != RolledBack || s.Failed != "v2" {
		t.Fatalf("abort: %v %+v %+v", err, tr, s)
	}
	last := s.History[len(s.History)-1]
	if !last.Manual || last.Reason != "aborted by hand: bad dashboards" {
		t.Errorf("abort event %+v", last)
	}
	if _, _, err := Act(s, c, Resume, t0, ""); err == nil || !strings.Contains(err.Error(), "rolled_back") {
		t.Errorf("action on a rolled back canary: %v", err)
	}
	// promote now all the way
	s, _, _ = Start(c, prev, nil, t0)
	for i := 0; i < 4; i++ {
		s, tr, _ = Act(s, c, PromoteNow, t0, "")
	}
	if s.Phase != Promoted || !reflect.DeepEqual(tr.Weights, map[string]int{"v2": 100}) {
		t.Fatalf("promote to the end: %s %v", s.Phase, tr.Weights)
	}
}

func TestConfigValidate(t *testing.T) {
	bad := map[string]Config{
		"no canary":       {Baseline: "v1"},
		"same version":    {Baseline: "v1", Canary: "v1"},
		"steps decrease":  {Baseline: "v1", Canary: "v2", Steps: []int{50, 20, 100}},
		"steps not 100":   {Baseline: "v1", Canary: "v2", Steps: []int{20, 50}},
		"step over 100":   {Baseline: "v1", Canary: "v2", Steps: []int{20, 150}},
		"bad error rate":  {Baseline: "v1", Canary: "v2", Gates: Gates{MaxErrorRate: 3}},
		"negative checks": {Baseline: "v1", Canary: "v2", FailuresBeforeRollback: -1},
	}
	for name, c := range bad {
		if _, _, err := Start(c, nil, nil, t0); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	c := Config{Baseline: "v1", Canary: "v2"}.Defaults()
	if !reflect.DeepEqual(c.Steps, []int{20, 50, 80, 100}) || c.StepDuration != 5*time.Minute || c.Gates.MinRequests != 500 {
		t.Errorf("defaults %+v", c)
	}
}
