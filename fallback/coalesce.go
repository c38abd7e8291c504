package fallback

import (
	"context"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Coalescer shares one upstream call among identical requests in flight at
// the same moment (singleflight keyed by the cache Key). Safe for concurrent
// use. The first caller for a key (the leader) makes the call on its own
// goroutine and publishes the result (Join / Finish); the others
// (followers) wait for it, each on its own context (Wait), so one
// impatient caller never cuts short the others. The leader's call should
// not end with its own client (the proxy runs it detached, within its
// deadline), since it answers the followers too.
type Coalescer[V any] struct {
	mu        sync.Mutex
	calls     map[Key]*flight[V]
	coalesced prometheus.Counter
}

type flight[V any] struct {
	done chan struct{}
	val  V
	err  error
}

// NewCoalescer builds a coalescer for model; m may be nil.
func NewCoalescer[V any](model string, m *Metrics) *Coalescer[V] {
	c := &Coalescer[V]{calls: map[Key]*flight[V]{}}
	if m != nil {
		c.coalesced = m.coalesced.WithLabelValues(model)
	}
	return c
}

// InFlight is the number of distinct calls in flight.
func (c *Coalescer[V]) InFlight() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.calls)
}

// Flight is one shared call in flight.
type Flight[V any] struct {
	f *flight[V]
}

// Join registers a caller for key. The first caller is the leader
// (leader true): it makes the call itself and must call Finish exactly
// once, whatever happens. Later callers (followers, counted as coalesced)
// call Wait. No goroutine is started.
func (c *Coalescer[V]) Join(key Key) (fl Flight[V], leader bool) {
	c.mu.Lock()
	f, ok := c.calls[key]
	if ok {
		c.mu.Unlock()
		inc(c.coalesced)
		return Flight[V]{f: f}, false
	}
	f = &flight[V]{done: make(chan struct{})}
	c.calls[key] = f
	c.mu.Unlock()
	return Flight[V]{f: f}, true
}

// Finish publishes the leader's result to the followers and ends the
// flight: the next caller for key starts a new one.
func (c *Coalescer[V]) Finish(key Key, fl Flight[V], v V, err error) {
	c.mu.Lock()
	if c.calls[key] == fl.f {
		delete(c.calls, key)
	}
	c.mu.Unlock()
	fl.f.val, fl.f.err = v, err
	close(fl.f.done)
}

// Wait returns the leader's result, or ctx's error if ctx ends first (the
// leader's call goes on for the others).
func (fl Flight[V]) Wait(ctx context.Context) (V, error) {
	select {
	case <-fl.f.done:
		return fl.f.val, fl.f.err
	case <-ctx.Done():
		var zero V
		return zero, ctx.Err()
	}
}
