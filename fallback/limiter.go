package fallback

import "sync/atomic"

// Limiter caps the requests in flight to one model version; a request over
// the cap falls back at once with trigger Overload. Safe for concurrent use;
// no allocation.
type Limiter struct {
	max      int64
	inflight atomic.Int64
}

// NewLimiter allows max requests in flight; max <= 0 means unlimited.
func NewLimiter(max int) *Limiter { return &Limiter{max: int64(max)} }

// TryAcquire takes a slot, or reports false (overload) without taking one.
// Every successful TryAcquire must be followed by one Release.
func (l *Limiter) TryAcquire() bool {
	n := l.inflight.Add(1)
	if l.max > 0 && n > l.max {
		l.inflight.Add(-1)
		return false
	}
	return true
}

// Release returns a slot.
func (l *Limiter) Release() { l.inflight.Add(-1) }

// InFlight is the number of slots taken.
func (l *Limiter) InFlight() int { return int(l.inflight.Load()) }

// Max is the cap (0: unlimited).
func (l *Limiter) Max() int { return int(l.max) }
