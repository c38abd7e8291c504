package fallback

import (
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"
)

// Breaker guards calls to one model version. Allow asks to make a call; when
// it returns ok, the caller makes the call and then calls done exactly once,
// with failed = the call's Trigger.CountsForBreaker(). When ok is false the
// breaker is open (or half-open with its probes in flight): fall back with
// trigger BreakerOpen without calling the upstream.
type Breaker interface {
	Allow() (done func(failed bool), ok bool)
	State() BreakerState
}

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

func fromGo(s gobreaker.State) BreakerState {
	switch s {
	case gobreaker.StateHalfOpen:
		return StateHalfOpen
	case gobreaker.StateOpen:
		return StateOpen
	}
	return StateClosed
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
	// OpenFor is how long the breaker stays open before it lets probes
	// through (default 10s).
	OpenFor time.Duration
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

// GoBreaker is a Breaker backed by sony/gobreaker's two-step breaker.
type GoBreaker struct {
	cfg BreakerConfig
	cb  *gobreaker.TwoStepCircuitBreaker[struct{}]
}

var _ Breaker = (*GoBreaker)(nil)

// errFailed is what done(true) reports to gobreaker.
var errFailed = fmt.Errorf("upstream failed")

// NewBreaker builds the breaker of one model version. m may be nil; with
// it, the state gauge and transition counter of (model, version) follow
// the breaker.
func NewBreaker(model, version string, cfg BreakerConfig, m *Metrics) *GoBreaker {
	return NewBreakerNotify(model, version, cfg, m, nil)
}

// NewBreakerNotify is NewBreaker that also calls onChange (if not nil) on
// every state change, after the metrics are updated. The proxy uses it to
// keep its own per-variant gauge and log line.
func NewBreakerNotify(model, version string, cfg BreakerConfig, m *Metrics, onChange func(from, to BreakerState)) *GoBreaker {
	cfg = cfg.Defaults()
	st := gobreaker.Settings{
		Name:         model + "/" + version,
		MaxRequests:  uint32(cfg.HalfOpenProbes),
		Interval:     cfg.Window,
		BucketPeriod: cfg.Window / 10,
		Timeout:      cfg.OpenFor,
		ReadyToTrip: func(c gobreaker.Counts) bool {
			return cfg.ShouldTrip(c.ConsecutiveFailures, c.TotalSuccesses, c.TotalFailures)
		},
	}
	if m != nil || onChange != nil {
		var gauge prometheus.Gauge
		if m != nil {
			gauge = m.breakerState.WithLabelValues(model, version)
			gauge.Set(float64(StateClosed))
		}
		st.OnStateChange = func(_ string, from, to gobreaker.State) {
			s := fromGo(to)
			if m != nil {
				gauge.Set(float64(s))
				m.breakerTransitions.WithLabelValues(model, version, s.String()).Inc()
			}
			if onChange != nil {
				onChange(fromGo(from), s)
			}
		}
	}
	return &GoBreaker{cfg: cfg, cb: gobreaker.NewTwoStepCircuitBreaker[struct{}](st)}
}

// Allow implements Breaker.
func (b *GoBreaker) Allow() (func(failed bool), bool) {
	done, err := b.cb.Allow()
	if err != nil {
		return nil, false
	}
	return func(failed bool) {
		if failed {
			done(errFailed)
		} else {
			done(nil)
		}
	}, true
}

// State implements Breaker.
func (b *GoBreaker) State() BreakerState { return fromGo(b.cb.State()) }

// Config is the breaker's configuration (defaults applied).
func (b *GoBreaker) Config() BreakerConfig { return b.cfg }

// Breakers holds one breaker per (model, version), created on first use. It
// is safe for concurrent use.
type Breakers struct {
	metrics *Metrics
	mu      sync.Mutex
	m       map[[2]string]*GoBreaker
}

// NewBreakers returns an empty set; m may be nil.
func NewBreakers(m *Metrics) *Breakers {
	return &Breakers{metrics: m, m: map[[2]string]*GoBreaker{}}
}

// Get returns the breaker of (model, version) for cfg. A breaker whose
// configuration changed is replaced by a fresh, closed one.
func (s *Breakers) Get(model, version string, cfg BreakerConfig) *GoBreaker {
	cfg = cfg.Defaults()
	k := [2]string{model, version}
	s.mu.Lock()
	defer s.mu.Unlock()
	if b, ok := s.m[k]; ok && b.cfg == cfg {
		return b
	}
	b := NewBreaker(model, version, cfg, s.metrics)
	s.m[k] = b
	return b
}

// Remove forgets the breaker of a deleted version, so it stops being
// reported.
func (s *Breakers) Remove(model, version string) {
	s.mu.Lock()
	delete(s.m, [2]string{model, version})
	s.mu.Unlock()
	if s.metrics != nil {
		s.metrics.breakerState.DeleteLabelValues(model, version)
	}
}

// BreakerStatus is one row of the admin page.
type BreakerStatus struct {
	Model   string `json:"model"`
	Version string `json:"version"`
	State   string `json:"state"`
}

// Snapshot lists every breaker's state, sorted by model and version.
func (s *Breakers) Snapshot() []BreakerStatus {
	s.mu.Lock()
	out := make([]BreakerStatus, 0, len(s.m))
	for k, b := range s.m {
		out = append(out, BreakerStatus{Model: k[0], Version: k[1], State: b.State().String()})
	}
	s.mu.Unlock()
	sortStatus(out)
	return out
}
