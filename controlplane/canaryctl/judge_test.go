package canaryctl

import (
	"testing"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/canary"
)

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
		want        WriteOutcome
	}{
		"no canary":                         {nil, model(map[string]int{"v1": 10, "v2": 90}, "v2"), false, WritePass},
		"finished canary":                   {done, model(map[string]int{"v1": 10, "v2": 90}, "v2"), true, WritePass},
		"same split":                        {run, model(map[string]int{"v1": 4, "v2": 1}, "v2"), false, WritePass},
		"same split by the weights API":     {run, model(map[string]int{"v1": 80, "v2": 20}, "v2"), true, WritePass},
		"the split from before: a re-apply": {run, model(map[string]int{"v1": 100}, "v2"), false, WriteKeep},
		"the split from before, by weights": {run, model(map[string]int{"v1": 100}, "v2"), true, WriteConflict},
		"other weights":                     {run, model(map[string]int{"v1": 50, "v2": 50}, "v2"), false, WriteConflict},
		"other weights by the weights API":  {run, model(map[string]int{"v1": 50, "v2": 50}, "v2"), true, WriteConflict},
		"spec.canary removed":               {run, model(map[string]int{"v1": 50, "v2": 50}, ""), false, WriteEnds},
		"spec.canary renamed":               {run, model(map[string]int{"v1": 100}, "v3"), false, WriteEnds},
		"paused canary, other weights":      {&canaryRun{Config: run.Config, State: canary.State{Phase: canary.Paused, Weights: run.State.Weights, Previous: run.State.Previous}}, model(map[string]int{"v1": 0, "v2": 100}, "v2"), false, WriteConflict},
	} {
		if got := judgeWrite(c.run, cur, c.next, c.weightsOnly); got != c.want {
			t.Errorf("%s: %d, want %d", name, got, c.want)
		}
	}
}
