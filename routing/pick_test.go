package routing

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"

	"github.com/switchyard-dev/switchyard/api"
)

func pickModel(weights map[string]int, names ...string) *api.Model {
	m := &api.Model{Metadata: api.Metadata{Name: "recommender"}}
	for _, n := range names {
		m.Spec.Versions = append(m.Spec.Versions, api.Version{Name: n, Endpoints: []string{"127.0.0.1:1"}})
	}
	m.Spec.Traffic.Weights = weights
	return m
}

func mustPicker(t testing.TB, m *api.Model) *Picker {
	t.Helper()
	p, err := NewPicker(m)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPickTable(t *testing.T) {
	m := pickModel(map[string]int{"v1": 80, "v2": 20}, "v1", "v2", "v3")
	p := mustPicker(t, m)
	tests := map[string]struct {
		override, key string
		rnd           uint64
		want          Choice
	}{
		"override names a version":        {override: "v2", key: "u1", want: Choice{1, ReasonOverride}},
		"override wins at weight 0":       {override: "v3", want: Choice{2, ReasonOverride}},
		"unknown override is ignored":     {override: "v9", rnd: 0, want: Choice{0, ReasonRandom}},
		"random low end":                  {rnd: 0, want: Choice{0, ReasonRandom}},
		"random just below 80%":           {rnd: uint64(3431678869) << 32, want: Choice{0, ReasonRandom}},
		"random at 80%":                   {rnd: uint64(3435973837) << 32, want: Choice{1, ReasonRandom}},
		"random high end":                 {rnd: ^uint64(0), want: Choice{1, ReasonRandom}},
		"sticky key uses its bucket":      {key: "user-42", want: Choice{p.Owner(Bucket("user-42")), ReasonSticky}},
		"empty override and key are none": {rnd: 1, want: Choice{0, ReasonRandom}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := p.Pick(tc.override, tc.key, tc.rnd); got != tc.want {
				t.Fatalf("Pick(%q, %q, %#x) = %+v, want %+v", tc.override, tc.key, tc.rnd, got, tc.want)
			}
		})
	}
}

func TestNewPickerRejects(t *testing.T) {
	tests := map[string]*api.Model{
		"no versions":     pickModel(map[string]int{}),
		"zero total":      pickModel(map[string]int{"v1": 0}, "v1"),
		"negative":        pickModel(map[string]int{"v1": -1, "v2": 3}, "v1", "v2"),
		"too large":       pickModel(map[string]int{"v1": api.MaxWeight + 1}, "v1"),
		"unknown version": pickModel(map[string]int{"v1": 1, "v9": 1}, "v1"),
	}
	for name, m := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := NewPicker(m); err == nil {
				t.Fatal("NewPicker accepted an impossible split")
			}
		})
	}
}

func TestBucketSharesMatchWeights(t *testing.T) {
	cases := []map[string]int{
		{"v1": 80, "v2": 20},
		{"v1": 50, "v2": 50},
		{"v1": 1, "v2": 99},
		{"a": 1, "b": 1, "c": 1},
		{"a": 70, "b": 20, "c": 10},
		{"a": 5, "b": 3, "c": 0, "d": 2},
	}
	for _, w := range cases {
		t.Run(fmt.Sprint(w), func(t *testing.T) {
			names := slices.Sorted(maps.Keys(w))
			p := mustPicker(t, pickModel(w, names...))
			counts := make([]int, len(names))
			for b := 0; b < Buckets; b++ {
				counts[p.Owner(b)]++
			}
			total := 0
			for _, x := range w {
				total += x
			}
			for i, n := range names {
				want := float64(w[n]) / float64(total)
				got := float64(counts[i]) / Buckets
				if d := got - want; d > 0.02 || d < -0.02 {
					t.Errorf("version %s owns %.4f of buckets, weight share %.4f", n, got, want)
				}
				if w[n] == 0 && counts[i] != 0 {
					t.Errorf("version %s has weight 0 but owns %d buckets", n, counts[i])
				}
			}
		})
	}
}

func TestRandomSharesMatchWeights(t *testing.T) {
	p := mustPicker(t, pickModel(map[string]int{"v1": 80, "v2": 20, "v3": 0}, "v1", "v2", "v3"))
	r := rand.New(rand.NewPCG(1, 2))
	counts := [3]int{}
	const n = 100000
	for range n {
		counts[p.Pick("", "", r.Uint64()).Index]++
	}
	if counts[2] != 0 {
		t.Fatalf("weight-0 version picked %d times", counts[2])
	}
	if got := float64(counts[1]) / n; got < 0.19 || got > 0.21 {
		t.Fatalf("v2 share %.4f, want 0.20±0.01", got)
	}
}

func TestRelativeWeightsAreScaleFree(t *testing.T) {
	a := mustPicker(t, pickModel(map[string]int{"v1": 80, "v2": 20}, "v1", "v2"))
	b := mustPicker(t, pickModel(map[string]int{"v1": 4, "v2": 1}, "v1", "v2"))
	c := mustPicker(t, pickModel(map[string]int{"v1": 4, "v2": 1, "v3": 0}, "v1", "v2", "v3"))
	for i := 0; i < Buckets; i++ {
		if a.Owner(i) != b.Owner(i) || a.Owner(i) != c.Owner(i) {
			t.Fatalf("bucket %d: owners differ: %d %d %d", i, a.Owner(i), b.Owner(i), c.Owner(i))
		}
	}
}

// checkOnlyToward asserts that every bucket that changed owner between two
// layouts moved to version `to`.
func checkOnlyToward(t *testing.T, before, after *Picker, to string) (moved int) {
	t.Helper()
	for b := 0; b < Buckets; b++ {
		o, n := before.Name(before.Owner(b)), after.Name(after.Owner(b))
		if o != n {
			if n != to {
				t.Fatalf("bucket %d moved %s → %s while only %s's weight rose", b, o, n, to)
			}
			moved++
		}
	}
	return moved
}

func TestCanaryRampNeverBackAndForth(t *testing.T) {
	ramps := map[string]struct {
		names  []string
		canary string
		steps  []map[string]int
	}{
		"two versions 20/50/80/100": {
			names: []string{"v1", "v2"}, canary: "v2",
			steps: []map[string]int{
				{"v1": 100, "v2": 0}, {"v1": 80, "v2": 20}, {"v1": 50, "v2": 50},
				{"v1": 20, "v2": 80}, {"v1": 0, "v2": 100},
			},
		},
		"relative ints": {
			names: []string{"stable", "canary"}, canary: "canary",
			steps: []map[string]int{{"stable": 4, "canary": 1}, {"stable": 1, "canary": 1}, {"stable": 1, "canary": 4}, {"stable": 0, "canary": 1}},
		},
		"three versions, others keep their ratio": {
			names: []string{"v1", "v2", "v3"}, canary: "v3",
			steps: []map[string]int{
				{"v1": 60, "v2": 40, "v3": 0}, {"v1": 48, "v2": 32, "v3": 20}, {"v1": 30, "v2": 20, "v3": 50},
				{"v1": 12, "v2": 8, "v3": 80}, {"v1": 0, "v2": 0, "v3": 100},
			},
		},
		"canary listed first": {
			names: []string{"v2", "v1"}, canary: "v2",
			steps: []map[string]int{{"v1": 80, "v2": 20}, {"v1": 50, "v2": 50}, {"v1": 20, "v2": 80}},
		},
	}
	for name, r := range ramps {
		t.Run(name, func(t *testing.T) {
			prev := mustPicker(t, pickModel(r.steps[0], r.names...))
			for _, s := range r.steps[1:] {
				next := mustPicker(t, pickModel(s, r.names...))
				checkOnlyToward(t, prev, next, r.canary)
				prev = next
			}
			// Every user of the last step that is on the canary stays there.
			for b := 0; b < Buckets; b++ {
				if r.steps[len(r.steps)-1][r.canary] == 100 && prev.Name(prev.Owner(b)) != r.canary {
					t.Fatalf("bucket %d not on canary at 100%%", b)
				}
			}
		})
	}
}

// TestPropertyRaisingOneWeightOnlyMovesToIt: for random splits over 2..6
// versions, raising one version's weight (others unchanged) moves buckets
// only to that version, and lowering it moves buckets only away from it.
func TestPropertyRaisingOneWeightOnlyMovesToIt(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 11))
	iters := 200
	if testing.Short() {
		iters = 40
	}
	for it := range iters {
		n := 2 + r.IntN(5)
		names := make([]string, n)
		w := map[string]int{}
		for i := range names {
			names[i] = "v" + strconv.Itoa(r.IntN(1000)) + "-" + strconv.Itoa(i)
			w[names[i]] = r.IntN(101)
		}
		w[names[0]]++ // total > 0
		k := names[r.IntN(n)]
		w2 := map[string]int{}
		for n, x := range w {
			w2[n] = x
		}
		w2[k] += 1 + r.IntN(200)
		before := mustPicker(t, pickModel(w, names...))
		after := mustPicker(t, pickModel(w2, names...))
		t.Run(fmt.Sprintf("iter%d", it), func(t *testing.T) {
			checkOnlyToward(t, before, after, k)
			// And the reverse step (lowering k) only moves buckets away
			// from k: each changed bucket was k's.
			for b := 0; b < Buckets; b++ {
				if after.Owner(b) != before.Owner(b) && after.Name(after.Owner(b)) != k {
					t.Fatalf("bucket %d: lowering %s moved a bucket not owned by it", b, k)
				}
			}
		})
	}
}

func TestStickyKeyStableAcrossRebuilds(t *testing.T) {
	m := pickModel(map[string]int{"v1": 80, "v2": 20}, "v1", "v2")
	a, b := mustPicker(t, m), mustPicker(t, m)
	for i := range 1000 {
		k := "user-" + strconv.Itoa(i)
		if a.Pick("", k, uint64(i)) != b.Pick("", k, ^uint64(i)) {
			t.Fatalf("key %q picked differently by equal pickers or random sources", k)
		}
	}
}

func TestPickDoesNotAllocate(t *testing.T) {
	p := mustPicker(t, pickModel(map[string]int{"v1": 80, "v2": 20}, "v1", "v2"))
	allocs := testing.AllocsPerRun(1000, func() {
		p.Pick("", "user-1", 5)
		p.Pick("v2", "", 5)
		p.Pick("", "", 12345678901234)
	})
	if allocs != 0 {
		t.Fatalf("Pick allocates %.1f times per run", allocs)
	}
}

func BenchmarkPick(b *testing.B) {
	p := mustPicker(b, pickModel(map[string]int{"v1": 80, "v2": 20, "v3": 5}, "v1", "v2", "v3"))
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = "user-" + strconv.Itoa(i)
	}
	b.Run("sticky", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			p.Pick("", keys[i&1023], 0)
		}
	})
	b.Run("random", func(b *testing.B) {
		b.ReportAllocs()
		for i := uint64(0); b.Loop(); i++ {
			p.Pick("", "", i*0x9e3779b97f4a7c15)
		}
	})
	b.Run("override", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			p.Pick("v3", "", 0)
		}
	})
}

func BenchmarkNewPicker(b *testing.B) {
	m := pickModel(map[string]int{"v1": 80, "v2": 20, "v3": 5}, "v1", "v2", "v3")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := NewPicker(m); err != nil {
			b.Fatal(err)
		}
	}
}

func TestServing(t *testing.T) {
	for name, c := range map[string]struct {
		weights map[string]int
		want    string
	}{
		"the only weighted version":          {map[string]int{"v1": 100}, "v1"},
		"the larger share":                   {map[string]int{"v1": 20, "v2": 80}, "v2"},
		"a tie goes to document order":       {map[string]int{"v1": 50, "v2": 50}, "v1"},
		"weight 0 does not describe":         {map[string]int{"v1": 0, "v2": 1}, "v2"},
		"a later larger version among three": {map[string]int{"v1": 10, "v2": 10, "v3": 80}, "v3"},
	} {
		p := mustPicker(t, pickModel(c.weights, "v1", "v2", "v3"))
		if got := p.Name(p.Serving()); got != c.want {
			t.Errorf("%s: Serving = %s, want %s", name, got, c.want)
		}
	}
}
