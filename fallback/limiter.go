package fallback

import (
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchyard-dev/switchyard/api"
)

// Limiter caps the requests in flight to one model version; a request over
// the cap is shed at once with trigger Overload (the chain answers it
// where the route has one, else 503 + Retry-After). The cap is fixed
// (NewLimiter) or adaptive (NewAdaptiveLimiter): a gradient limiter in the
// spirit of Netflix's Gradient2 and Envoy's adaptive concurrency filter,
// which lowers the cap when latency rises over the version's no-load
// latency and raises it while latency holds, so queues are shed before
// latency collapses. Safe for concurrent use; TryAcquire and Release do
// not allocate.
type Limiter struct {
	limit    atomic.Int64 // the cap now (0: unlimited)
	inflight atomic.Int64

	adaptive bool
	mu       sync.Mutex
	g        gradient
}

// NewLimiter allows max requests in flight; max <= 0 means unlimited.
func NewLimiter(max int) *Limiter {
	l := &Limiter{}
	l.limit.Store(int64(max))
	return l
}

// AdaptiveConfig configures an adaptive limiter. Zero values get defaults.
type AdaptiveConfig struct {
	// Initial is the cap before any measurement (default 32), MinLimit
	// and MaxLimit bound it (defaults 4 and 1000).
	Initial, MinLimit, MaxLimit int
	// Tolerance is how far latency may rise over the no-load latency
	// before the cap shrinks (default 1.5: 50 % over).
	Tolerance float64
}

// Defaults of AdaptiveConfig.
const (
	DefaultAdaptiveInitial   = 32
	DefaultAdaptiveMinLimit  = 4
	DefaultAdaptiveMaxLimit  = api.DefaultConcurrencyMaxLimit
	DefaultAdaptiveTolerance = 1.5
)

// NewAdaptiveLimiter returns a limiter whose cap follows Sample.
func NewAdaptiveLimiter(cfg AdaptiveConfig) *Limiter {
	if cfg.MinLimit <= 0 {
		cfg.MinLimit = DefaultAdaptiveMinLimit
	}
	if cfg.MaxLimit <= 0 {
		cfg.MaxLimit = DefaultAdaptiveMaxLimit
	}
	if cfg.Initial <= 0 {
		cfg.Initial = DefaultAdaptiveInitial
	}
	cfg.Initial = min(max(cfg.Initial, cfg.MinLimit), cfg.MaxLimit)
	if cfg.Tolerance < 1 {
		cfg.Tolerance = DefaultAdaptiveTolerance
	}
	l := &Limiter{adaptive: true, g: gradient{cfg: cfg, limit: float64(cfg.Initial)}}
	l.limit.Store(int64(cfg.Initial))
	return l
}

// TryAcquire takes a slot, or reports false (overload) without taking one.
// Every successful TryAcquire must be followed by one Release.
func (l *Limiter) TryAcquire() bool {
	n := l.inflight.Add(1)
	if m := l.limit.Load(); m > 0 && n > m {
		l.inflight.Add(-1)
		return false
	}
	return true
}

// Release returns a slot.
func (l *Limiter) Release() { l.inflight.Add(-1) }

// Sample is what one finished request tells an adaptive limiter.
type Sample uint8

// Samples.
const (
	SampleIgnore  Sample = iota // says nothing about the version's load (the client's fault, a cancel)
	SampleLatency               // a measured answer (good, or the version's own error answer)
	SampleDropped               // the version did not keep up: a timeout or its own overload answer
)

// SampleOf is what a request judged t tells the limiter.
func SampleOf(t Trigger) Sample {
	switch {
	case t == Timeout || t == Overload:
		return SampleDropped
	case t == BreakerOpen: // no call was made
		return SampleIgnore
	case t == None, t.Fault() == FaultVersion:
		return SampleLatency
	}
	return SampleIgnore
}

// Observe feeds an adaptive limiter one finished request: its latency and
// what it says (a fixed limiter ignores it). inflight is the requests in
// flight when it started (InFlight).
func (l *Limiter) Observe(rtt time.Duration, s Sample, inflight int) {
	if !l.adaptive || s == SampleIgnore {
		return
	}
	l.mu.Lock()
	l.limit.Store(l.g.observe(rtt.Seconds(), s == SampleDropped, inflight))
	l.mu.Unlock()
}

// InFlight is the number of slots taken.
func (l *Limiter) InFlight() int { return int(l.inflight.Load()) }

// Max is the cap now (0: unlimited).
func (l *Limiter) Max() int { return int(l.limit.Load()) }

// gradient is the adaptive limiter's arithmetic (pure: samples in, the cap
// out). longRTT is the no-load estimate: it falls to any faster answer at
// once and rises as a slow average (2000 samples); shortRTT is a fast
// average (10 samples). The cap moves toward
//
//	limit × clamp(tolerance × long / short, 0.5, 1) + √limit
//
// smoothed (a fifth of the way per sample): while latency holds, the
// gradient is 1 and the √limit headroom grows the cap; when latency rises
// past tolerance × the no-load estimate the gradient falls below 1 and the
// cap shrinks. A dropped request (timeout, overload) cuts the cap by a
// tenth. A cap that is not being used (in flight under half of it) does
// not grow.
type gradient struct {
	cfg               AdaptiveConfig
	limit             float64
	longRTT, shortRTT float64
	samples           int
}

const (
	longWindow  = 2000.0
	shortWindow = 10.0
	smoothing   = 0.2
)

func (g *gradient) observe(rtt float64, dropped bool, inflight int) int64 {
	if dropped {
		g.limit = max(g.limit*0.9, float64(g.cfg.MinLimit))
		return int64(g.limit)
	}
	if rtt <= 0 {
		return int64(g.limit)
	}
	if g.samples == 0 {
		g.longRTT, g.shortRTT = rtt, rtt
	}
	g.samples++
	// The no-load estimate falls to any faster answer at once and rises
	// only slowly: under sustained overload every answer is slow, and an
	// average would soon take the queueing for the version's own latency.
	if rtt < g.longRTT {
		g.longRTT = rtt
	} else {
		g.longRTT += (rtt - g.longRTT) / longWindow
	}
	g.shortRTT += (rtt - g.shortRTT) / shortWindow
	if float64(inflight) < g.limit/2 && g.shortRTT <= g.cfg.Tolerance*g.longRTT {
		return int64(g.limit) // app-limited: the cap was not what held latency
	}
	grad := math.Max(0.5, math.Min(1, g.cfg.Tolerance*g.longRTT/g.shortRTT))
	next := g.limit*grad + math.Sqrt(g.limit)
	g.limit = g.limit*(1-smoothing) + next*smoothing
	g.limit = min(max(g.limit, float64(g.cfg.MinLimit)), float64(g.cfg.MaxLimit))
	return int64(g.limit)
}
