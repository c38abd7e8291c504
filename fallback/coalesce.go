package fallback

import (
	"context"
	"fmt"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Coalescer shares one upstream call among identical requests in flight at
// the same moment (singleflight keyed by the cache Key). Safe for concurrent
// use.
//
// The shared call runs on its own goroutine with a context that keeps the
// first caller's values and deadline but not its cancellation; it is
// cancelled only when every caller waiting for it has gone. Each caller
// waits on its own context, so one impatient caller never cuts short the
// others.
type Coalescer[V any] struct {
	mu        sync.Mutex
	calls     map[Key]*flight[V]
	coalesced prometheus.Counter
}

type flight[V any] struct {
	done    chan struct{}
	val     V
	err     error
	waiters int
	cancel  context.CancelFunc
}

// NewCoalescer builds a coalescer for model; m may be nil.
func NewCoalescer[V any](model string, m *Metrics) *Coalescer[V] {
	c := &Coalescer[V]{calls: map[Key]*flight[V]{}}
	if m != nil {
		c.coalesced = m.coalesced.WithLabelValues(model)
	}
	return c
}

// Do returns the result of fn for key, calling fn only if no call for key is
// in flight; shared reports that this caller joined a call another caller
// started. When ctx ends first, Do returns ctx's error at once.
func (c *Coalescer[V]) Do(ctx context.Context, key Key, fn func(context.Context) (V, error)) (v V, shared bool, err error) {
	c.mu.Lock()
	f, shared := c.calls[key]
	if shared {
		f.waiters++
		c.mu.Unlock()
		inc(c.coalesced)
	} else {
		cctx := context.WithoutCancel(ctx)
		var cancel context.CancelFunc
		if dl, ok := ctx.Deadline(); ok {
			cctx, cancel = context.WithDeadline(cctx, dl)
		} else {
			cctx, cancel = context.WithCancel(cctx)
		}
		f = &flight[V]{done: make(chan struct{}), waiters: 1, cancel: cancel}
		c.calls[key] = f
		c.mu.Unlock()
		go c.run(cctx, key, f, fn)
	}
	select {
	case <-f.done:
		return f.val, shared, f.err
	case <-ctx.Done():
		c.mu.Lock()
		f.waiters--
		if f.waiters == 0 {
			// Nobody waits: stop the call, and let the next caller start
			// a fresh one rather than join a cancelled one.
			f.cancel()
			if c.calls[key] == f {
				delete(c.calls, key)
			}
		}
		c.mu.Unlock()
		var zero V
		return zero, shared, ctx.Err()
	}
}

func (c *Coalescer[V]) run(ctx context.Context, key Key, f *flight[V], fn func(context.Context) (V, error)) {
	defer func() {
		if r := recover(); r != nil {
			f.err = fmt.Errorf("coalesced call panicked: %v", r)
		}
		f.cancel()
		c.mu.Lock()
		if c.calls[key] == f {
			delete(c.calls, key)
		}
		c.mu.Unlock()
		close(f.done)
	}()
	f.val, f.err = fn(ctx)
}

// InFlight is the number of distinct calls in flight.
func (c *Coalescer[V]) InFlight() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.calls)
}

// Flight is one shared call in flight, for callers that make the call on
// their own goroutine (Join / Finish / Wait) instead of through Do.
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
		f.waiters++
		c.mu.Unlock()
		inc(c.coalesced)
		return Flight[V]{f: f}, false
	}
	f = &flight[V]{done: make(chan struct{}), waiters: 1, cancel: func() {}}
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
