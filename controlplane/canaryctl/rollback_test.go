package canaryctl

import (
	"testing"

	"github.com/switchyard-dev/switchyard/api"
)

func TestRollbackTarget(t *testing.T) {
	rec := func(rev int64, action string, canaryVersion string, w map[string]int) api.Record {
		m := api.Model{Spec: api.Spec{Traffic: api.Traffic{Weights: w}}}
		if canaryVersion != "" {
			m.Spec.Canary = &api.Canary{Version: canaryVersion}
		}
		return api.Record{Revision: rev, Action: action, Model: m}
	}
	v1 := map[string]int{"v1": 100}
	cases := map[string]struct {
		hist    []api.Record // newest first
		failed  []string     // the store's failed marks
		want    int64        // 0: none
		skipped int
	}{
		"plain previous": {hist: []api.Record{rec(3, "weights", "", map[string]int{"v1": 50, "v2": 50}), rec(2, "put", "", v1)}, want: 2},
		"skips mid-canary revisions": {hist: []api.Record{
			rec(5, ActionPromote, "v2", map[string]int{"v1": 50, "v2": 50}),
			rec(4, ActionPause, "v2", map[string]int{"v1": 80, "v2": 20}),
			rec(3, ActionStart, "v2", map[string]int{"v1": 80, "v2": 20}),
			rec(2, "put", "v2", v1)}, want: 2, skipped: 2},
		"skips splits with a failed version": {hist: []api.Record{
			rec(6, ActionRollback, "v3", v1),
			rec(5, "put", "v3", map[string]int{"v1": 90, "v3": 10}),
			rec(4, "put", "", v1)}, failed: []string{"v3"}, want: 4, skipped: 1},
		// Issue 15: a canary aborted by a weight change left no
		// canary-rollback revision; the mark alone says v2 failed.
		"a failed mark without a rollback revision": {hist: []api.Record{
			rec(5, "weights", "v2", map[string]int{"v1": 50, "v2": 50}),
			rec(4, ActionStart, "v2", map[string]int{"v1": 80, "v2": 20}),
			rec(3, "put", "v2", map[string]int{"v1": 90, "v2": 10}),
			rec(2, "put", "", v1)}, failed: []string{"v2"}, want: 2, skipped: 2},
		"a cleared mark": {hist: []api.Record{
			rec(7, "weights", "v3", map[string]int{"v1": 50, "v3": 50}),
			rec(6, ActionReset, "v3", map[string]int{"v1": 90, "v3": 10}),
			rec(5, "put", "v3", map[string]int{"v1": 90, "v3": 10})}, want: 6},
		"promoted split is healthy": {hist: []api.Record{
			rec(8, "weights", "v2", map[string]int{"v2": 50, "v3": 50}),
			rec(7, ActionPromoted, "v2", map[string]int{"v2": 100})}, want: 7},
		"deletion skipped": {hist: []api.Record{rec(3, "put", "", v1), {Revision: 2, Deleted: true}, rec(1, "put", "", v1)}, want: 1, skipped: 1},
		"nothing healthy":  {hist: []api.Record{rec(3, "put", "", v1), rec(2, ActionStart, "v2", v1)}, skipped: 1},
		"only the head":    {hist: []api.Record{rec(3, "put", "", v1)}},
		"empty history":    {},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			got, skipped := RollbackTarget(c.hist, c.failed)
			var rev int64
			if got != nil {
				rev = got.Revision
			}
			if rev != c.want || len(skipped) != c.skipped {
				t.Fatalf("target %d, skipped %+v; want %d, %d skipped", rev, skipped, c.want, c.skipped)
			}
		})
	}
}

func TestSameSplit(t *testing.T) {
	for _, c := range []struct {
		a, b map[string]int
		want bool
	}{
		{map[string]int{"v1": 80, "v2": 20}, map[string]int{"v1": 4, "v2": 1}, true},
		{map[string]int{"v1": 100}, map[string]int{"v1": 100, "v2": 0}, true},
		{map[string]int{"v1": 80, "v2": 20}, map[string]int{"v1": 50, "v2": 50}, false},
		{map[string]int{"v1": 100}, map[string]int{"v2": 100}, false},
		{nil, map[string]int{}, true},
	} {
		if got := SameSplit(c.a, c.b); got != c.want {
			t.Errorf("SameSplit(%v, %v) = %v", c.a, c.b, got)
		}
	}
}
