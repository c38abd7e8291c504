// Package backoff is the one retry delay policy of Switchyard's reconnect
// and restart loops (the proxy's xDS client, its stats reporter, the shadow
// agent's supervisor): exponential, doubling from Initial up to Max, with
// optional "equal jitter" (a wait drawn from [d/2, d]) so that many proxies
// do not reconnect in step. It is pure: the random source can be injected,
// and nothing sleeps here.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Backoff yields the delays of successive retries. The zero value is not
// useful; set Initial (and Max). Not safe for concurrent use: each loop owns
// one.
type Backoff struct {
	// Initial is the first delay and the one after Reset.
	Initial time.Duration
	// Max caps the delay (a Max below Initial caps at Initial).
	Max time.Duration
	// Jitter draws each wait uniformly from [d/2, d] instead of d.
	Jitter bool
	// Rand returns a uniform int64 in [0, n) (nil: math/rand/v2.Int64N).
	Rand func(n int64) int64

	cur     time.Duration
	started bool
}

// Delay is the un-jittered delay the next call to Next is based on.
func (b *Backoff) Delay() time.Duration {
	if !b.started {
		return b.Initial
	}
	return b.cur
}

// Next returns the wait before the next attempt, then doubles the delay
// (capped at Max).
func (b *Backoff) Next() time.Duration {
	d := b.Delay()
	b.started = true
	b.cur = min(2*d, max(b.Max, b.Initial))
	if !b.Jitter || d <= 0 {
		return max(d, 0)
	}
	rnd := b.Rand
	if rnd == nil {
		rnd = rand.Int64N
	}
	return d/2 + time.Duration(rnd(int64(d/2)+1))
}

// Reset makes the next delay Initial again (the last attempt succeeded).
func (b *Backoff) Reset() { b.started, b.cur = false, 0 }
