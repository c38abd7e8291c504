package fallback

import (
	"fmt"
	"sync"
	"time"
)

// BreakerState is a breaker's state; its String is used in metrics and on the
// admin page.
type BreakerState uint8

// Breaker states. The numeric values are exported as the state gauge.
const (
	StateClosed   BreakerState = 0
	StateHalfOpen BreakerState = 1
	StateOpen     BreakerState = 2
)

func (s BreakerState) String() string {
	switch s {
	case StateClosed:
		return "closed"
	case StateHalfOpen:
		return "half-open"
	case StateOpen:
		return "open"
	}
	return "unknown"
}

// BreakerConfig configures a circuit breaker (plain values; Defaults fills
// zero fields).
type BreakerConfig struct {
	// ConsecutiveFailures that open the breaker (default 5).
	ConsecutiveFailures int
	// FailureRatio opens the breaker when at least MinRequests calls
	// completed in the current Window and this share of them failed
	// (0: off).
	FailureRatio float64
	// MinRequests before FailureRatio applies (default 20).
	MinRequests int
	// Window over which the closed breaker counts calls for FailureRatio;
	// it rolls in ten buckets (default 10s).
	Window time.Duration
	// OpenFor is the longest the breaker stays open before it lets a
	// probe through (default 10s). The first open after a closed spell
	// lasts FirstOpenFor; each failed probe doubles it, up to OpenFor; a
	// probe that succeeds closes the breaker and resets it. So one probe
	// that came too early (a backend still starting) costs a short wait,
	// not a whole OpenFor, while a version that stays down is probed ever
	// more rarely.
	OpenFor time.Duration
	// FirstOpenFor is the first open's length (default min(1s, OpenFor)).
	FirstOpenFor time.Duration
	// HalfOpenProbes is the number of probe calls let through half-open;
	// that many successes in a row close the breaker, one failure opens it
	// again (default 1).
	HalfOpenProbes int
}

// Defaults returns c with zero fields set to their defaults.
func (c BreakerConfig) Defaults() BreakerConfig {
	if c.ConsecutiveFailures == 0 {
		c.ConsecutiveFailures = 5
	}
	if c.MinRequests == 0 {
		c.MinRequests = 20
	}
	if c.Window == 0 {
		c.Window = 10 * time.Second
	}
	if c.OpenFor == 0 {
		c.OpenFor = 10 * time.Second
	}
	if c.HalfOpenProbes == 0 {
		c.HalfOpenProbes = 1
	}
	if c.FirstOpenFor == 0 {
		c.FirstOpenFor = min(time.Second, c.OpenFor)
	}
	c.FirstOpenFor = min(c.FirstOpenFor, c.OpenFor)
	return c
}

// Validate names the first bad field.
func (c BreakerConfig) Validate() error {
	switch {
	case c.ConsecutiveFailures < 0:
		return fmt.Errorf("breaker.consecutiveFailures must be >= 0, got %d", c.ConsecutiveFailures)
	case c.FailureRatio < 0 || c.FailureRatio > 1:
		return fmt.Errorf("breaker.failureRatio must be within 0..1, got %g", c.FailureRatio)
	case c.MinRequests < 0:
		return fmt.Errorf("breaker.minRequests must be >= 0, got %d", c.MinRequests)
	case c.Window < 0:
		return fmt.Errorf("breaker.window must be >= 0, got %s", c.Window)
	case c.OpenFor < 0:
		return fmt.Errorf("breaker.openFor must be >= 0, got %s", c.OpenFor)
	case c.FirstOpenFor < 0:
		return fmt.Errorf("breaker.firstOpenFor must be >= 0, got %s", c.FirstOpenFor)
	case c.HalfOpenProbes < 0:
		return fmt.Errorf("breaker.halfOpenProbes must be >= 0, got %d", c.HalfOpenProbes)
	}
	return nil
}

// ShouldTrip is the breaker's trip rule as a pure function of its counts in
// the closed state: ConsecutiveFailures in a row, or (FailureRatio > 0) at
// least MinRequests completed calls of which at least FailureRatio failed.
// c must have been through Defaults.
func (c BreakerConfig) ShouldTrip(consecutiveFailures, successes, failures uint32) bool {
	if c.ConsecutiveFailures > 0 && consecutiveFailures >= uint32(c.ConsecutiveFailures) {
		return true
	}
	done := successes + failures
	return c.FailureRatio > 0 && done > 0 && done >= uint32(c.MinRequests) &&
		float64(failures)/float64(done) >= c.FailureRatio
}

// Result is how a call the breaker let through ended.
type Result uint8

// Results.
const (
	Succeeded Result = iota // the version answered (a good answer, or its verdict on the request)
	Failed                  // the version failed (Trigger.CountsForBreaker)
	Neutral                 // nobody's failure (the client went away, overload): counts for nothing
)

// ResultOf is the breaker's view of a trigger.
func ResultOf(t Trigger) Result {
	switch {
	case t.CountsForBreaker():
		return Failed
	case t == None || t.Fault() == FaultRequest:
		return Succeeded
	}
	return Neutral
}

// Ticket identifies one call the breaker let through (Allow); hand it back
// to Done.
type Ticket struct {
	gen   uint64
	probe bool
}

// Breaker guards calls to one model version: closed (calls pass; failures
// counted), open (calls refused), half-open (HalfOpenProbes probe calls
// pass; that many successes close it, one failure opens it again, for
// twice as long as before, up to OpenFor). The clock is injected, so its
// behaviour is a function of the calls and times it sees. Safe for
// concurrent use; no allocation per call.
type Breaker struct {
	cfg      BreakerConfig
	now      func() time.Time
	onChange func(from, to BreakerState)

	mu          sync.Mutex
	state       BreakerState
	gen         uint64 // bumped on every state change: late results of an older state are ignored
	consecutive int
	buckets     [breakerBuckets]bucket
	openUntil   time.Time
	openFor     time.Duration // the current (or next) open's length
	admitted    int           // probes let through in this half-open spell
	succeeded   int           // probes that succeeded in this half-open spell
}

const breakerBuckets = 10

type bucket struct {
	index               int64 // which Window/10 slice of time the counts are for
	successes, failures int
}

// NewBreaker returns a closed breaker for cfg (defaults applied). now is
// the clock (nil: time.Now); onChange, if not nil, is called on every
// state change, outside the breaker's lock.
func NewBreaker(cfg BreakerConfig, now func() time.Time, onChange func(from, to BreakerState)) *Breaker {
	if now == nil {
		now = time.Now
	}
	cfg = cfg.Defaults()
	return &Breaker{cfg: cfg, now: now, onChange: onChange, openFor: cfg.FirstOpenFor}
}

// Config is the breaker's configuration (defaults applied).
func (b *Breaker) Config() BreakerConfig { return b.cfg }

// State is the breaker's state now (an open breaker whose time is up
// reads half-open).
func (b *Breaker) State() BreakerState {
	b.mu.Lock()
	from, to := b.tickLocked(b.now())
	s := b.state
	b.mu.Unlock()
	b.notify(from, to)
	return s
}

// OpenUntil is when an open breaker lets its next probe through (zero
// unless open).
func (b *Breaker) OpenUntil() time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state != StateOpen {
		return time.Time{}
	}
	return b.openUntil
}

// Allow asks to make a call. When ok, make it and call Done with the
// ticket exactly once; when not, the breaker is open (or half-open with
// its probes taken): do not call the version.
func (b *Breaker) Allow() (t Ticket, ok bool) {
	b.mu.Lock()
	from, to := b.tickLocked(b.now())
	switch b.state {
	case StateClosed:
		t, ok = Ticket{gen: b.gen}, true
	case StateHalfOpen:
		if b.admitted < b.cfg.HalfOpenProbes {
			b.admitted++
			t, ok = Ticket{gen: b.gen, probe: true}, true
		}
	}
	b.mu.Unlock()
	b.notify(from, to)
	return t, ok
}

// Done reports how the call of ticket t ended. Results of calls let
// through before the last state change are ignored (a slow call admitted
// while closed does not close a breaker that opened meanwhile).
func (b *Breaker) Done(t Ticket, r Result) {
	b.mu.Lock()
	now := b.now()
	from, to := b.tickLocked(now)
	if t.gen == b.gen {
		switch b.state {
		case StateClosed:
			if r != Neutral {
				from, to = b.countLocked(now, r == Failed)
			}
		case StateHalfOpen:
			if t.probe {
				switch r {
				case Neutral: // the probe told nothing: let another one through
					b.admitted--
				case Succeeded:
					b.succeeded++
					if b.succeeded >= b.cfg.HalfOpenProbes {
						b.openFor = b.cfg.FirstOpenFor
						from, to = b.setLocked(StateClosed, now)
					}
				case Failed:
					b.openFor = min(2*b.openFor, b.cfg.OpenFor)
					from, to = b.setLocked(StateOpen, now)
				}
			}
		}
	}
	b.mu.Unlock()
	b.notify(from, to)
}

// tickLocked moves an open breaker whose time is up to half-open.
func (b *Breaker) tickLocked(now time.Time) (from, to BreakerState) {
	if b.state == StateOpen && !now.Before(b.openUntil) {
		return b.setLocked(StateHalfOpen, now)
	}
	return 0, 0
}

// countLocked counts one closed-state result and trips the breaker when
// the configuration says so.
func (b *Breaker) countLocked(now time.Time, failed bool) (from, to BreakerState) {
	slice := max(b.cfg.Window/breakerBuckets, time.Nanosecond)
	idx := now.UnixNano() / int64(slice)
	bk := &b.buckets[idx%breakerBuckets]
	if bk.index != idx {
		*bk = bucket{index: idx}
	}
	if failed {
		b.consecutive++
		bk.failures++
	} else {
		b.consecutive = 0
		bk.successes++
	}
	var ok, fails int
	for i := range b.buckets {
		if c := &b.buckets[i]; c.index > idx-breakerBuckets {
			ok += c.successes
			fails += c.failures
		}
	}
	if failed && b.cfg.ShouldTrip(uint32(b.consecutive), uint32(ok), uint32(fails)) {
		return b.setLocked(StateOpen, now)
	}
	return 0, 0
}

// setLocked enters state s and returns the change for notify.
func (b *Breaker) setLocked(s BreakerState, now time.Time) (from, to BreakerState) {
	from = b.state
	b.state = s
	b.gen++
	b.consecutive, b.admitted, b.succeeded = 0, 0, 0
	switch s {
	case StateOpen:
		b.openUntil = now.Add(b.openFor)
	case StateClosed:
		b.buckets = [breakerBuckets]bucket{}
	}
	return from, s
}

func (b *Breaker) notify(from, to BreakerState) {
	if from != to && b.onChange != nil {
		b.onChange(from, to)
	}
}

// BreakerStatus is one row of the admin page.
type BreakerStatus struct {
	Model   string `json:"model"`
	Version string `json:"version"`
	State   string `json:"state"`
}
