package backoff

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const ms = time.Millisecond

func TestNext(t *testing.T) {
	lowest := func(int64) int64 { return 0 }
	highest := func(n int64) int64 { return n - 1 }
	tests := map[string]struct {
		b     Backoff
		steps string // n: Next, r: Reset
		want  []time.Duration
	}{
		"doubles up to the cap": {b: Backoff{Initial: 100 * ms, Max: 1000 * ms}, steps: "nnnnnn",
			want: []time.Duration{100 * ms, 200 * ms, 400 * ms, 800 * ms, 1000 * ms, 1000 * ms}},
		"reset starts again": {b: Backoff{Initial: 100 * ms, Max: 5 * time.Second}, steps: "nnnrnn",
			want: []time.Duration{100 * ms, 200 * ms, 400 * ms, 100 * ms, 200 * ms}},
		"max below initial caps at initial": {b: Backoff{Initial: 300 * ms, Max: 10 * ms}, steps: "nnn",
			want: []time.Duration{300 * ms, 300 * ms, 300 * ms}},
		"zero max caps at initial": {b: Backoff{Initial: 20 * ms}, steps: "nn",
			want: []time.Duration{20 * ms, 20 * ms}},
		"jitter lowest is half": {b: Backoff{Initial: 100 * ms, Max: 400 * ms, Jitter: true, Rand: lowest}, steps: "nnnn",
			want: []time.Duration{50 * ms, 100 * ms, 200 * ms, 200 * ms}},
		"jitter highest is the delay": {b: Backoff{Initial: 100 * ms, Max: 400 * ms, Jitter: true, Rand: highest}, steps: "nnnn",
			want: []time.Duration{100 * ms, 200 * ms, 400 * ms, 400 * ms}},
		"zero initial never waits": {b: Backoff{Jitter: true, Rand: highest}, steps: "nn",
			want: []time.Duration{0, 0}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			b := tc.b
			var got []time.Duration
			for _, s := range tc.steps {
				switch s {
				case 'n':
					got = append(got, b.Next())
				case 'r':
					b.Reset()
				}
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("waits (-want +got):\n%s", d)
			}
		})
	}
}

func TestDelayIsTheNextBase(t *testing.T) {
	b := Backoff{Initial: 100 * ms, Max: 300 * ms}
	for i, want := range []time.Duration{100 * ms, 200 * ms, 300 * ms, 300 * ms} {
		if got := b.Delay(); got != want {
			t.Fatalf("step %d: Delay %v, want %v", i, got, want)
		}
		b.Next()
	}
	b.Reset()
	if got := b.Delay(); got != 100*ms {
		t.Errorf("after Reset: Delay %v, want 100ms", got)
	}
}

func TestJitterStaysInRange(t *testing.T) {
	b := Backoff{Initial: 10 * ms, Max: 80 * ms, Jitter: true}
	for i := range 1000 {
		base := b.Delay()
		w := b.Next()
		if w < base/2 || w > base {
			t.Fatalf("wait %d: %v outside [%v, %v]", i, w, base/2, base)
		}
		if i%7 == 6 {
			b.Reset()
		}
	}
}
