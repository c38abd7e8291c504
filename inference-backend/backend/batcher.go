package backend

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/switchyard-dev/switchyard/oip"
)

// job is one request's trip through a batcher. Jobs are pooled; the caller
// owns a job from get until it has read the result after done.
type job struct {
	ctx    context.Context
	inputs []*oip.Tensor // bound, in signature order
	rows   int64         // dimension 0 of every input
	enq    time.Time

	done    chan struct{} // cap 1; one send per trip
	outputs []oip.Tensor
	err     error
	queued  time.Duration
	compute time.Duration
}

func (b *batcher) getJob() *job {
	if j, ok := b.pool.Get().(*job); ok {
		return j
	}
	return &job{done: make(chan struct{}, 1)}
}

func (b *batcher) putJob(j *job) {
	j.ctx, j.inputs, j.outputs, j.err = nil, nil, nil, nil
	b.pool.Put(j)
}

// runFunc runs the model once on bound inputs.
type runFunc func(inputs []*oip.Tensor) ([]oip.Tensor, error)

// batcher joins concurrent requests to one model version along dimension 0:
// a collector goroutine gathers up to maxRows rows (waiting at most delay
// after the first request, and stopping early at a preferred size), runs the
// model once and splits the outputs back. Requests whose non-batch
// dimensions differ are never joined. A batch of one runs on the request's
// own tensors. With instances > 1, that many collectors share the queue, so
// up to that many batches run at once (one collects while another runs).
type batcher struct {
	queue     chan *job
	maxRows   int64
	delay     time.Duration
	preferred map[int64]bool
	run       runFunc
	observe   func(rows int, compute time.Duration, ok bool) // one run of the model: its rows, duration, success
	loops     sync.WaitGroup
	pool      sync.Pool // of *job
}

func newBatcher(maxRows, instances int, delay time.Duration, preferred []int, run runFunc, observe func(rows int, compute time.Duration, ok bool)) *batcher {
	instances = max(instances, 1)
	b := &batcher{
		queue:     make(chan *job, 4*maxRows*instances),
		maxRows:   int64(maxRows),
		delay:     delay,
		preferred: map[int64]bool{},
		run:       run,
		observe:   observe,
	}
	for _, p := range preferred {
		b.preferred[int64(p)] = true
	}
	for range instances {
		b.loops.Go(b.loop)
	}
	return b
}

// submit queues j and waits for its result. The caller must not submit
// after stop.
func (b *batcher) submit(j *job) {
	j.enq = time.Now()
	b.queue <- j
	<-j.done
}

// stop ends the batcher once every queued job has been answered. Only call
// it when no submit can start any more (the version is drained).
func (b *batcher) stop() {
	close(b.queue)
	b.loops.Wait()
}

func (b *batcher) loop() {
	var (
		carry *job
		batch []*job
		timer = time.NewTimer(time.Hour)
	)
	timer.Stop()
	for {
		first := carry
		carry = nil
		if first == nil {
			var ok bool
			if first, ok = <-b.queue; !ok {
				return
			}
		}
		batch = append(batch[:0], first)
		rows := first.rows
		closed := false
		waiting := false
	collect:
		for rows < b.maxRows {
			var j *job
			var ok bool
			select {
			case j, ok = <-b.queue:
			default:
				if b.delay <= 0 || (b.preferred[rows] && len(b.queue) == 0) {
					break collect
				}
				if !waiting {
					timer.Reset(b.delay - time.Since(first.enq))
					waiting = true
				}
				select {
				case j, ok = <-b.queue:
				case <-timer.C:
					waiting = false
					break collect
				}
			}
			if !ok {
				closed = true
				break collect
			}
			if rows+j.rows > b.maxRows || !joinable(first, j) {
				carry = j
				break collect
			}
			batch = append(batch, j)
			rows += j.rows
			if b.preferred[rows] && len(b.queue) == 0 {
				break collect
			}
		}
		if waiting {
			timer.Stop() // Go 1.23+: no stale tick is delivered after Stop
		}
		b.execute(batch, rows)
		clear(batch)
		if closed {
			if carry != nil {
				b.execute([]*job{carry}, carry.rows)
			}
			return
		}
	}
}

// joinable reports whether two requests can share a run: every input has the
// same non-batch dimensions.
func joinable(a, b *job) bool {
	for i := range a.inputs {
		sa, sb := a.inputs[i].Shape, b.inputs[i].Shape
		if len(sa) != len(sb) {
			return false
		}
		for d := 1; d < len(sa); d++ {
			if sa[d] != sb[d] {
				return false
			}
		}
	}
	return true
}

func (b *batcher) execute(batch []*job, rows int64) {
	start := time.Now()
	// Skip requests whose caller has gone.
	live := batch[:0]
	for _, j := range batch {
		if err := j.ctx.Err(); err != nil {
			code := oip.Canceled
			if errors.Is(err, context.DeadlineExceeded) {
				code = oip.DeadlineExceeded
			}
			j.err = oip.Errorf(code, "request ended while queued for a batch: %v", err)
			j.queued = start.Sub(j.enq)
			j.done <- struct{}{}
			continue
		}
		live = append(live, j)
	}
	if len(live) == 0 {
		return
	}
	rows = 0
	for _, j := range live {
		rows += j.rows
	}
	if len(live) == 1 {
		j := live[0]
		j.queued = start.Sub(j.enq)
		j.outputs, j.err = safeRun(b.run, j.inputs)
		j.compute = time.Since(start)
		b.observe(int(rows), j.compute, j.err == nil)
		j.done <- struct{}{}
		return
	}
	outs, err := b.runJoined(live)
	compute := time.Since(start)
	if err != nil {
		// The model did not keep the batch dimension (or the joined run
		// failed): answer each request on its own so one bad request
		// cannot fail the others.
		for _, j := range live {
			s := time.Now()
			j.queued = s.Sub(j.enq)
			j.outputs, j.err = safeRun(b.run, j.inputs)
			j.compute = time.Since(s)
			b.observe(int(j.rows), j.compute, j.err == nil)
			j.done <- struct{}{}
		}
		return
	}
	b.observe(int(rows), compute, true)
	for i, j := range live {
		j.queued = start.Sub(j.enq)
		j.compute = compute
		j.outputs = outs[i]
		j.done <- struct{}{}
	}
}

// runJoined concatenates the batch's inputs along dimension 0, runs once,
// and cuts every output back into each job's rows (an error if an output
// did not keep the batch dimension).
func (b *batcher) runJoined(batch []*job) ([][]oip.Tensor, error) {
	first := batch[0]
	joined := make([]oip.Tensor, len(first.inputs))
	ptrs := make([]*oip.Tensor, len(first.inputs))
	parts := make([]*oip.Tensor, len(batch))
	for i := range first.inputs {
		for k, j := range batch {
			parts[k] = j.inputs[i]
		}
		joined[i] = oip.JoinRows(parts)
		ptrs[i] = &joined[i]
	}
	outs, err := safeRun(b.run, ptrs)
	if err != nil {
		return nil, err
	}
	rows := make([]int64, len(batch))
	for k, j := range batch {
		rows[k] = j.rows
	}
	perJob := make([][]oip.Tensor, len(batch))
	for k := range perJob {
		perJob[k] = make([]oip.Tensor, len(outs))
	}
	for o := range outs {
		pieces, err := oip.SplitRows(&outs[o], rows)
		if err != nil {
			return nil, err
		}
		for k := range pieces {
			perJob[k][o] = pieces[k]
		}
	}
	return perJob, nil
}

// safeRun calls run, turning a panic into an Internal error: no input may
// take the server down.
func safeRun(run runFunc, inputs []*oip.Tensor) (outs []oip.Tensor, err error) {
	defer func() {
		if r := recover(); r != nil {
			outs, err = nil, oip.Errorf(oip.Internal, "internal error running the model: %v", r)
		}
	}()
	return run(inputs)
}
