package fallback

import (
	"testing"
	"time"
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
	bad := []BreakerConfig{{ConsecutiveFailures: -1}, {FailureRatio: 1.5}, {MinRequests: -1}, {OpenFor: -time.Second}, {HalfOpenProbes: -2}, {FirstOpenFor: -time.Second}}
	for _, c := range bad {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v: want error", c)
		}
	}
	if err := (BreakerConfig{}).Defaults().Validate(); err != nil {
		t.Error(err)
	}
}

// clock is a settable time for the breaker.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newClock() *clock { return &clock{t: time.Unix(1_000_000, 0)} }

// call runs one attempt through b and reports whether it was allowed.
func call(b *Breaker, r Result) bool {
	tk, ok := b.Allow()
	if ok {
		b.Done(tk, r)
	}
	return ok
}

func TestBreakerConsecutiveTripAndRecover(t *testing.T) {
	c := newClock()
	var changes []string
	b := NewBreaker(BreakerConfig{ConsecutiveFailures: 3, OpenFor: 8 * time.Second, FirstOpenFor: time.Second, HalfOpenProbes: 2}, c.now,
		func(from, to BreakerState) { changes = append(changes, from.String()+">"+to.String()) })
	if !call(b, Failed) || !call(b, Succeeded) || !call(b, Failed) || !call(b, Failed) {
		t.Fatal("closed breaker refused a call")
	}
	if b.State() != StateClosed {
		t.Fatalf("a success in between resets the run; state %v", b.State())
	}
	call(b, Failed)
	if b.State() != StateOpen {
		t.Fatalf("3 consecutive failures: state %v, want open", b.State())
	}
	if call(b, Succeeded) {
		t.Fatal("open breaker allowed a call")
	}
	c.advance(time.Second - time.Millisecond)
	if b.State() != StateOpen {
		t.Fatalf("before firstOpenFor: state %v", b.State())
	}
	c.advance(time.Millisecond)
	if b.State() != StateHalfOpen {
		t.Fatalf("after firstOpenFor: state %v, want half-open", b.State())
	}
	// Two probes allowed, a third is refused while they are in flight.
	t1, ok1 := b.Allow()
	t2, ok2 := b.Allow()
	_, ok3 := b.Allow()
	if !ok1 || !ok2 || ok3 {
		t.Fatalf("half-open probes allowed = %v %v %v, want true true false", ok1, ok2, ok3)
	}
	b.Done(t1, Succeeded)
	if b.State() != StateHalfOpen {
		t.Fatalf("one good probe of two: state %v", b.State())
	}
	b.Done(t2, Succeeded)
	if b.State() != StateClosed {
		t.Fatalf("two good probes: state %v, want closed", b.State())
	}
	want := []string{"closed>open", "open>half-open", "half-open>closed"}
	if len(changes) != len(want) {
		t.Fatalf("changes %v, want %v", changes, want)
	}
	for i := range want {
		if changes[i] != want[i] {
			t.Fatalf("changes %v, want %v", changes, want)
		}
	}
}

// TestBreakerOpenGrowsWithFailedProbes: a probe that comes too early (the
// backend is still starting) costs a short open, not a whole openFor; each
// failed probe doubles the open up to openFor, and a success resets it.
func TestBreakerOpenGrowsWithFailedProbes(t *testing.T) {
	c := newClock()
	b := NewBreaker(BreakerConfig{ConsecutiveFailures: 1, OpenFor: 10 * time.Second}, c.now, nil)
	if got := b.Config().FirstOpenFor; got != time.Second {
		t.Fatalf("default firstOpenFor %v, want 1s", got)
	}
	call(b, Failed)
	var opens []time.Duration
	for range 6 {
		until := b.OpenUntil()
		if until.IsZero() {
			t.Fatalf("state %v, want open", b.State())
		}
		opens = append(opens, until.Sub(c.now()))
		c.t = until
		if !call(b, Failed) {
			t.Fatal("probe refused after the open time")
		}
	}
	want := []time.Duration{1 * time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 10 * time.Second, 10 * time.Second}
	for i := range want {
		if opens[i] != want[i] {
			t.Fatalf("opens %v, want %v", opens, want)
		}
	}
	c.t = b.OpenUntil()
	if !call(b, Succeeded) || b.State() != StateClosed {
		t.Fatalf("good probe: state %v, want closed", b.State())
	}
	call(b, Failed)
	if got := b.OpenUntil().Sub(c.now()); got != time.Second {
		t.Fatalf("open after a close %v, want the first open again (1s)", got)
	}
}

// TestBreakerNeutralResults: a cancelled call counts for nothing — it
// neither breaks a run of failures nor closes a half-open breaker, and a
// cancelled probe frees its slot for another probe.
func TestBreakerNeutralResults(t *testing.T) {
	c := newClock()
	b := NewBreaker(BreakerConfig{ConsecutiveFailures: 2, OpenFor: time.Second}, c.now, nil)
	call(b, Failed)
	for range 100 {
		call(b, Neutral)
	}
	if b.State() != StateClosed {
		t.Fatal("neutral results tripped the breaker")
	}
	call(b, Failed)
	if b.State() != StateOpen {
		t.Fatalf("neutral results broke the run of failures: state %v", b.State())
	}
	c.advance(time.Second)
	tk, ok := b.Allow()
	if !ok {
		t.Fatal("probe refused")
	}
	if _, ok := b.Allow(); ok {
		t.Fatal("a second probe while the first is in flight")
	}
	b.Done(tk, Neutral)
	if b.State() != StateHalfOpen {
		t.Fatalf("cancelled probe: state %v, want half-open", b.State())
	}
	if !call(b, Succeeded) || b.State() != StateClosed {
		t.Fatalf("the next probe closes it: state %v", b.State())
	}
}

// TestBreakerIgnoresLateResults: a slow call let through while closed that
// ends after the breaker opened does not close it.
func TestBreakerIgnoresLateResults(t *testing.T) {
	c := newClock()
	b := NewBreaker(BreakerConfig{ConsecutiveFailures: 1, OpenFor: time.Second}, c.now, nil)
	slow, _ := b.Allow()
	call(b, Failed)
	b.Done(slow, Succeeded)
	if b.State() != StateOpen {
		t.Fatalf("late success: state %v, want open", b.State())
	}
}

func TestBreakerFailureRatio(t *testing.T) {
	c := newClock()
	b := NewBreaker(BreakerConfig{ConsecutiveFailures: 100, FailureRatio: 0.5, MinRequests: 10, Window: time.Minute}, c.now, nil)
	// alternate: never 100 in a row, ratio 50 % reached at the 10th call
	for i := 0; i < 9; i++ {
		r := Succeeded
		if i%2 == 0 {
			r = Failed
		}
		call(b, r)
		if b.State() != StateClosed {
			t.Fatalf("tripped after %d calls", i+1)
		}
	}
	call(b, Failed) // 10 calls, 6 failures
	if b.State() != StateOpen {
		t.Fatalf("ratio 6/10 >= 0.5: state %v, want open", b.State())
	}
}

// TestBreakerFailureRatioWindowRolls: failures older than the window are
// forgotten.
func TestBreakerFailureRatioWindowRolls(t *testing.T) {
	c := newClock()
	b := NewBreaker(BreakerConfig{ConsecutiveFailures: 100, FailureRatio: 0.5, MinRequests: 4, Window: 10 * time.Second}, c.now, nil)
	call(b, Failed)
	call(b, Failed)
	call(b, Succeeded)
	c.advance(11 * time.Second)
	call(b, Succeeded)
	call(b, Failed) // in the window: 1 of 2 failed, below min requests
	if b.State() != StateClosed {
		t.Fatalf("old failures counted: state %v", b.State())
	}
	call(b, Succeeded)
	call(b, Failed) // 2 of 4 in the window
	if b.State() != StateOpen {
		t.Fatalf("2/4 in the window: state %v, want open", b.State())
	}
}
