package backend

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/switchyard-dev/switchyard/oip"
)

// QueuePolicy is a model's admission queue (Triton's ModelQueuePolicy):
// requests wait for one of the version's execution slots (instance_count
// runs at once; with dynamic batching, instance_count × max_batch_size
// requests in the batcher), in order of priority level then arrival. A
// request that finds the queue full, or waits longer than its timeout, is
// rejected at once with 503 / UNAVAILABLE and Retry-After: an overload
// answer, not a failure of the model.
//
//	queue_policy:
//	  max_queue_size: 0           # requests waiting at most (0: no bound)
//	  default_timeout: 0s         # longest wait for a slot (0: no bound)
//	  allow_timeout_override: false # a request's "timeout" parameter (µs, as Triton's) replaces default_timeout
//	  timeout_action: reject      # the only action (Triton's DELAY is not offered)
//	priority_levels: 0            # 0: one level; N: a request's "priority" parameter 1..N (1 first)
//	default_priority_level: 0     # the level of a request without one (0: the lowest, N)
type QueuePolicy struct {
	MaxQueueSize         int           `yaml:"max_queue_size"`
	DefaultTimeout       time.Duration `yaml:"default_timeout"`
	AllowTimeoutOverride bool          `yaml:"allow_timeout_override"`
	TimeoutAction        string        `yaml:"timeout_action"`
}

// ParamPriority and ParamTimeout are the request parameters the queue
// reads (Triton's names; timeout in microseconds).
const (
	ParamPriority = "priority"
	ParamTimeout  = "timeout"
)

// admission is the queue's decision for an arriving request.
type admission uint8

const (
	admitRun    admission = iota // a slot is free: run now
	admitWait                    // wait in the queue
	admitReject                  // the queue is full
)

// admit is the pure rule for an arriving request.
func admit(busy, slots, waiting, maxQueue int) admission {
	switch {
	case busy < slots && waiting == 0:
		return admitRun
	case maxQueue > 0 && waiting >= maxQueue:
		return admitReject
	}
	return admitWait
}

// nextLevel is the pure rule for a freed slot: the highest-priority (lowest
// index) level with a waiter, or -1.
func nextLevel(waiting []int) int {
	for l, n := range waiting {
		if n > 0 {
			return l
		}
	}
	return -1
}

// requestQueue returns a request's priority level (0-based) and queue
// timeout from its parameters under the policy.
func requestQueue(levels, defaultLevel int, p *QueuePolicy, params map[string]any) (level int, timeout time.Duration, err error) {
	if levels < 1 {
		levels = 1
	}
	level = levels - 1
	if defaultLevel > 0 {
		level = defaultLevel - 1
	}
	if v, ok := params[ParamPriority]; ok {
		n, ok := paramInt(v)
		if !ok || n < 0 || n > int64(levels) {
			return 0, 0, oip.Errorf(oip.InvalidArgument, "parameter %q: %v is not a priority level in 0..%d (0: the default)", ParamPriority, v, levels)
		}
		if n > 0 {
			level = int(n) - 1
		}
	}
	if p != nil {
		timeout = p.DefaultTimeout
	}
	if v, ok := params[ParamTimeout]; ok && p != nil && p.AllowTimeoutOverride {
		n, ok := paramInt(v)
		if !ok || n < 0 {
			return 0, 0, oip.Errorf(oip.InvalidArgument, "parameter %q: %v is not a timeout in microseconds", ParamTimeout, v)
		}
		timeout = time.Duration(n) * time.Microsecond
	}
	return level, timeout, nil
}

// paramInt reads an integer request parameter (JSON numbers, gRPC int64 /
// uint64 parameters, decimal strings).
func paramInt(v any) (int64, bool) {
	switch x := v.(type) {
	case int64:
		return x, true
	case int:
		return int64(x), true
	case uint64:
		return int64(x), x < 1<<63
	case float64:
		return int64(x), x == float64(int64(x))
	case string:
		n, err := strconv.ParseInt(x, 10, 64)
		return n, err == nil
	case interface{ Int64() (int64, error) }: // json.Number
		n, err := x.Int64()
		return n, err == nil
	}
	return 0, false
}

// retryAfter is what a rejected request is told to wait.
const retryAfter = time.Second

// gate is a version's execution slots and their queue. Safe for
// concurrent use.
type gate struct {
	model, version string
	slots          int
	maxQueue       int
	onReject       func(reason string)
	depth          func(delta float64)

	mu      sync.Mutex
	busy    int
	levels  [][]*waiter // FIFO per level
	waiting []int
	total   int
}

type waiter struct {
	ready   chan struct{}
	granted bool
}

func newGate(model, version string, slots, levels, maxQueue int, onReject func(string), depth func(float64)) *gate {
	levels = max(levels, 1)
	return &gate{model: model, version: version, slots: max(slots, 1), maxQueue: maxQueue, onReject: onReject, depth: depth,
		levels: make([][]*waiter, levels), waiting: make([]int, levels)}
}

// acquire takes a slot, waiting at most timeout (0: no bound) at level.
func (g *gate) acquire(ctx context.Context, level int, timeout time.Duration) error {
	g.mu.Lock()
	switch admit(g.busy, g.slots, g.total, g.maxQueue) {
	case admitRun:
		g.busy++
		g.mu.Unlock()
		return nil
	case admitReject:
		n := g.total
		g.mu.Unlock()
		g.onReject("queue_full")
		return overloaded("model %q version %s: queue full (%d requests waiting, queue_policy.max_queue_size %d); retry later", g.model, g.version, n, g.maxQueue)
	}
	w := &waiter{ready: make(chan struct{})}
	g.levels[level] = append(g.levels[level], w)
	g.waiting[level]++
	g.total++
	g.mu.Unlock()
	g.depth(1)
	var timer <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		timer = t.C
	}
	var err error
	select {
	case <-w.ready:
		return nil
	case <-timer:
		err = overloaded("model %q version %s: waited %v in the queue for an execution slot (queue_policy timeout); retry later", g.model, g.version, timeout)
	case <-ctx.Done():
		err = oip.Errorf(oip.CodeOf(ctx.Err()), "model %q: request ended while queued: %v", g.model, ctx.Err())
	}
	g.mu.Lock()
	if w.granted { // the slot came as the wait ended: take it
		g.mu.Unlock()
		return nil
	}
	q := g.levels[level]
	for i, x := range q {
		if x == w {
			g.levels[level] = append(q[:i:i], q[i+1:]...)
			break
		}
	}
	g.waiting[level]--
	g.total--
	g.mu.Unlock()
	g.depth(-1)
	if oip.CodeOf(err) == oip.Unavailable {
		g.onReject("timeout")
	}
	return err
}

// release frees a slot: the first waiter of the highest level gets it.
func (g *gate) release() {
	g.mu.Lock()
	l := nextLevel(g.waiting)
	if l < 0 {
		g.busy--
		g.mu.Unlock()
		return
	}
	w := g.levels[l][0]
	g.levels[l] = g.levels[l][1:]
	g.waiting[l]--
	g.total--
	w.granted = true
	close(w.ready)
	g.mu.Unlock()
	g.depth(-1)
}

// queued is the number of requests waiting.
func (g *gate) queued() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.total
}

func overloaded(format string, args ...any) error {
	e := oip.Errorf(oip.Unavailable, format, args...)
	e.RetryAfter = retryAfter
	return e
}

// validate checks the policy; errors name the field.
func (p *QueuePolicy) validate() error {
	if p.MaxQueueSize < 0 {
		return fmt.Errorf("queue_policy.max_queue_size: %d is negative", p.MaxQueueSize)
	}
	if p.DefaultTimeout < 0 {
		return fmt.Errorf("queue_policy.default_timeout: %v is negative", p.DefaultTimeout)
	}
	switch p.TimeoutAction {
	case "", "reject", "REJECT":
	default:
		return fmt.Errorf("queue_policy.timeout_action: %q is not reject (the only action offered)", p.TimeoutAction)
	}
	return nil
}
