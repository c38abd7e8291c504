package fallback

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestShouldTrip(t *testing.T) {
	cfg := BreakerConfig{ConsecutiveFailures: 3, FailureRatio: 0.5, MinRequests: 10}.Defaults()
	cases := []struct {
		name              string
		consec, ok, fails uint32
		want              bool
	}{
		{"below consecutive", 2, 0, 2, false},
		{"consecutive reached", 3, 0, 3, true},
		{"ratio below min requests", 1, 2, 7, false},
		{"ratio reached", 1, 5, 5, true},
		{"ratio under threshold", 1, 6, 4, false},
	}
	for _, c := range cases {
		if got := cfg.ShouldTrip(c.consec, c.ok, c.fails); got != c.want {
			t.Errorf("%s: ShouldTrip = %v, want %v", c.name, got, c.want)
		}
	}
	noRatio := BreakerConfig{ConsecutiveFailures: 3}.Defaults()
	if noRatio.ShouldTrip(1, 0, 1000) {
		t.Error("failure ratio off must not trip on ratio")
	}
}

func TestBreakerConfigValidate(t *testing.T) {
	bad := []BreakerConfig{{ConsecutiveFailures: -1}, {FailureRatio: 1.5}, {MinRequests: -1}, {OpenFor: -time.Second}, {HalfOpenProbes: -2}}
	for _, c := range bad {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v: want error", c)
		}
	}
	if err := (BreakerConfig{}).Defaults().Validate(); err != nil {
		t.Error(err)
	}
}

// call runs one attempt through b and reports whether it was allowed.
func call(b Breaker, failed bool) bool {
	done, ok := b.Allow()
	if ok {
		done(failed)
	}
	return ok
}

// waitState polls until b reaches want (bounded); it asserts the transition,
// not how long it took.
func waitState(t *testing.T, b Breaker, want BreakerState) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for b.State() != want {
		if time.Now().After(deadline) {
			t.Fatalf("breaker state %v, want %v", b.State(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestGoBreakerConsecutiveTripAndRecover(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	b := NewBreaker("rec", "v1", BreakerConfig{ConsecutiveFailures: 3, OpenFor: 50 * time.Millisecond, HalfOpenProbes: 2}, m)
	gauge := m.breakerState.WithLabelValues("rec", "v1")

	if !call(b, true) || !call(b, false) || !call(b, true) || !call(b, true) {
		t.Fatal("closed breaker refused a call")
	}
	if b.State() != StateClosed {
		t.Fatalf("a success in between resets the run; state %v", b.State())
	}
	call(b, true)
	if b.State() != StateOpen {
		t.Fatalf("3 consecutive failures: state %v, want open", b.State())
	}
	if testutil.ToFloat64(gauge) != float64(StateOpen) {
		t.Errorf("gauge = %v, want 2", testutil.ToFloat64(gauge))
	}
	if call(b, false) {
		t.Fatal("open breaker allowed a call")
	}
	waitState(t, b, StateHalfOpen)
	// Two probes allowed, a third is refused while they are in flight.
	d1, ok1 := b.Allow()
	d2, ok2 := b.Allow()
	_, ok3 := b.Allow()
	if !ok1 || !ok2 || ok3 {
		t.Fatalf("half-open probes allowed = %v %v %v, want true true false", ok1, ok2, ok3)
	}
	d1(false)
	if b.State() != StateHalfOpen {
		t.Fatalf("one good probe of two: state %v", b.State())
	}
	d2(false)
	if b.State() != StateClosed {
		t.Fatalf("two good probes: state %v, want closed", b.State())
	}
	if got := testutil.ToFloat64(m.breakerTransitions.WithLabelValues("rec", "v1", "closed")); got != 1 {
		t.Errorf("transitions to closed = %v", got)
	}
}

func TestGoBreakerHalfOpenFailureReopens(t *testing.T) {
	b := NewBreaker("rec", "v1", BreakerConfig{ConsecutiveFailures: 1, OpenFor: 50 * time.Millisecond}, nil)
	call(b, true)
	if b.State() != StateOpen {
		t.Fatalf("state %v", b.State())
	}
	waitState(t, b, StateHalfOpen)
	if !call(b, true) {
		t.Fatal("probe refused")
	}
	if b.State() != StateOpen {
		t.Fatalf("failed probe: state %v, want open", b.State())
	}
}

func TestGoBreakerFailureRatio(t *testing.T) {
	b := NewBreaker("rec", "v1", BreakerConfig{ConsecutiveFailures: 100, FailureRatio: 0.5, MinRequests: 10, Window: time.Minute}, nil)
	// alternate: never 100 in a row, ratio 50 % reached at the 10th call
	for i := 0; i < 9; i++ {
		call(b, i%2 == 0)
		if b.State() != StateClosed {
			t.Fatalf("tripped after %d calls", i+1)
		}
	}
	call(b, true) // 10 calls, 6 failures
	if b.State() != StateOpen {
		t.Fatalf("ratio 6/10 >= 0.5: state %v, want open", b.State())
	}
}

func TestBreakersSet(t *testing.T) {
	s := NewBreakers(nil)
	cfg := BreakerConfig{ConsecutiveFailures: 1}
	a := s.Get("m", "v1", cfg)
	if s.Get("m", "v1", cfg) != a {
		t.Fatal("same config must return the same breaker")
	}
	call(a, true)
	if s.Get("m", "v2", cfg).State() != StateClosed {
		t.Fatal("versions must not share a breaker")
	}
	snap := s.Snapshot()
	if len(snap) != 2 || snap[0].Version != "v1" || snap[0].State != "open" || snap[1].State != "closed" {
		t.Fatalf("snapshot %+v", snap)
	}
	if b := s.Get("m", "v1", BreakerConfig{ConsecutiveFailures: 2}); b == a || b.State() != StateClosed {
		t.Fatal("changed config must give a fresh breaker")
	}
	s.Remove("m", "v2")
	if len(s.Snapshot()) != 1 {
		t.Fatal("remove")
	}
}

// TestBreakerNotify: NewBreakerNotify reports each state change.
func TestBreakerNotify(t *testing.T) {
	var changes []string
	b := NewBreakerNotify("rec", "v1", BreakerConfig{ConsecutiveFailures: 2, OpenFor: time.Hour}, nil,
		func(from, to BreakerState) { changes = append(changes, from.String()+">"+to.String()) })
	for range 2 {
		done, ok := b.Allow()
		if !ok {
			t.Fatal("closed breaker refused")
		}
		done(true)
	}
	if _, ok := b.Allow(); ok || b.State() != StateOpen {
		t.Fatalf("breaker %s after 2 failures", b.State())
	}
	if len(changes) != 1 || changes[0] != "closed>open" {
		t.Fatalf("changes %v", changes)
	}
}
