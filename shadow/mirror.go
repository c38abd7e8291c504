package shadow

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchyard-dev/switchyard/oip"
)

// Job is one mirrored request. The proxy fills it after answering the
// client; nothing in it may be modified after Enqueue.
type Job struct {
	// Kind is KindShadow (call the shadow version) or KindNoiseFloor (call
	// the primary version a second time).
	Kind           string
	RequestID      string
	Model          string
	PrimaryVersion string
	// TargetVersion is the version to call: the shadow version, or the
	// primary version for a noise-floor job.
	TargetVersion string
	Request       *oip.InferRequest
	// Primary is the primary's outcome as the client got it.
	Primary Result
	// Time is when the primary request arrived.
	Time time.Time
	// Payload is the caller's own data for its CallFunc (e.g. the request
	// bytes as received and the target's endpoints). When it implements
	// Preparer, the worker calls Prepare before the call, so that decoding
	// (Request, Primary.Response) happens off the request path.
	Payload any
}

// Preparer is implemented by a Job.Payload that fills the job's decoded
// fields in the worker. An error ends the job: it is counted as dropped
// (reason "prepare") and logged.
type Preparer interface {
	Prepare(j *Job) error
}

// ErrNaNOutput marks a call whose answer held NaN/Inf but could not carry
// it (e.g. an OIP REST JSON answer, which the backend turns into an error
// naming the output). Wrap it into Result.Err: Compare then counts the side
// as a NaN answer, not as a failure.
var ErrNaNOutput = errors.New("output has NaN/Inf")

// CallFunc calls job.TargetVersion with job.Request (the proxy supplies it:
// the real upstream call, marked as shadow traffic). It must respect ctx.
type CallFunc func(ctx context.Context, job *Job) (*oip.InferResponse, error)

// BatchCallFunc calls one target for several jobs at once.
type BatchCallFunc func(ctx context.Context, jobs []*Job) ([]*oip.InferResponse, error)

// BatchConfig bounds a batched shadow call: at most MaxRows rows (the
// requests' dimension 0, summed), waiting at most MaxDelay for more jobs
// after the first (0: only what is already queued).
type BatchConfig struct {
	MaxRows  int
	MaxDelay time.Duration
}

// MirrorConfig configures a Mirror (plain values; zero fields take
// defaults).
type MirrorConfig struct {
	QueueSize int           // bounded queue (default 1024)
	Workers   int           // fixed worker pool (default 4)
	Timeout   time.Duration // per mirrored call (default 1s)
	Compare   Config        // how answers are compared
	// RecordAgreements is the share of agreeing pairs written to the
	// record sink, 0..1 (default 0.01; disagreements are always written).
	RecordAgreements float64
	// RingSize is how many recent records the in-memory ring keeps
	// (default 1024).
	RingSize int
	// Batch joins mirrored requests into one call of the target (see
	// JoinRequests); MaxRows <= 1: every job is called on its own.
	Batch BatchConfig
	// BatchCall calls the target once for jobs of the same kind and target
	// version with Joinable requests and returns one answer per job, in
	// order (e.g. JoinRequests, one upstream call, SplitResponse). An
	// InvalidArgument error switches batching off for the mirror. Needed
	// for Batch.
	BatchCall BatchCallFunc
	// OnCompared, if set, is called by the worker after each comparison
	// (e.g. to feed the canary's shadow-disagreement gate). It must not
	// block.
	OnCompared func(j *Job, c *Comparison)
}

func (c MirrorConfig) defaults() MirrorConfig {
	if c.QueueSize <= 0 {
		c.QueueSize = 1024
	}
	if c.Workers <= 0 {
		c.Workers = 4
	}
	if c.Timeout <= 0 {
		c.Timeout = time.Second
	}
	if c.RecordAgreements == 0 {
		c.RecordAgreements = 0.01
	}
	c.Compare = c.Compare.Defaults()
	return c
}

// Mirror runs mirrored calls off the request path: a bounded queue and a
// fixed pool of workers. Enqueue never blocks; a full queue drops the job
// and counts it. Each worker calls the target with a timeout, compares the
// answers, updates metrics, keeps the record in its ring and writes it to
// the sink (disagreements always, agreements sampled).
type Mirror struct {
	cfg   MirrorConfig
	call  CallFunc
	sink  RecordSink
	m     *Metrics
	log   *slog.Logger
	ring  *Ring
	queue chan *Job

	mu      sync.RWMutex
	closed  bool
	closing chan struct{} // closed by Close: a batch wait ends
	// collecting is held by the worker taking jobs for a batch.
	collecting sync.Mutex
	noBatch    atomic.Bool // the target refused a joined request
	// mirrored caches the mirrored counter per label set (copy on write).
	mirrored atomic.Pointer[[]labelledCounter]

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// NewMirror starts the workers. sink, m and log may be nil.
func NewMirror(cfg MirrorConfig, call CallFunc, sink RecordSink, m *Metrics, log *slog.Logger) *Mirror {
	cfg = cfg.defaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	mr := &Mirror{
		cfg: cfg, call: call, sink: sink, m: m, log: log,
		ring:    NewRing(cfg.RingSize),
		queue:   make(chan *Job, cfg.QueueSize),
		closing: make(chan struct{}),
		ctx:     ctx, cancel: cancel,
	}
	mr.wg.Add(cfg.Workers)
	for i := 0; i < cfg.Workers; i++ {
		go mr.worker(newWorkerState(m))
	}
	return mr
}

// workerState is what one worker reuses from job to job: the comparison's
// float buffers, its metric series, its batch timer.
type workerState struct {
	sc     scratch
	series seriesCache
	timer  *time.Timer // the batch wait (Go >= 1.23: no stale tick after Stop or Reset)
	batch  []*Job
}

func newWorkerState(m *Metrics) *workerState {
	return &workerState{series: seriesCache{m: m}}
}

// Enqueue offers a job without blocking; false means it was dropped
// (queue full or mirror closed) and counted.
func (mr *Mirror) Enqueue(j *Job) bool {
	if j.Kind == "" {
		j.Kind = KindShadow
	}
	mr.mu.RLock()
	defer mr.mu.RUnlock()
	if mr.closed {
		mr.drop(j, "closed")
		return false
	}
	select {
	case mr.queue <- j:
		if mr.m != nil {
			mr.mirroredCounter(j).Inc()
		}
		return true
	default:
		mr.drop(j, "queue_full")
		return false
	}
}

// mirroredCounter is the mirrored series of j's labels, looked up once per
// label set (Enqueue runs on the request path).
func (mr *Mirror) mirroredCounter(j *Job) prometheus.Counter {
	if cs := mr.mirrored.Load(); cs != nil {
		for i := range *cs {
			if c := &(*cs)[i]; c.model == j.Model && c.version == j.TargetVersion && c.kind == j.Kind {
				return c.c
			}
		}
	}
	c := mr.m.mirrored.WithLabelValues(j.Model, j.TargetVersion, j.Kind)
	for {
		old := mr.mirrored.Load()
		var cs []labelledCounter
		if old != nil {
			if len(*old) >= seriesCacheMax {
				return c
			}
			cs = append(cs, *old...)
		}
		cs = append(cs, labelledCounter{model: j.Model, version: j.TargetVersion, kind: j.Kind, c: c})
		if mr.mirrored.CompareAndSwap(old, &cs) {
			return c
		}
	}
}

// labelledCounter is a counter with its model, version and kind labels.
type labelledCounter struct {
	model, version, kind string
	c                    prometheus.Counter
}

func (mr *Mirror) drop(j *Job, reason string) {
	if mr.m != nil {
		mr.m.dropped.WithLabelValues(j.Model, j.TargetVersion, j.Kind, reason).Inc()
	}
}

// QueueLen is the number of jobs waiting.
func (mr *Mirror) QueueLen() int { return len(mr.queue) }

// Ring is the in-memory ring of recent records (Ring.Summary gives the
// report without the file).
func (mr *Mirror) Ring() *Ring { return mr.ring }

// Close stops accepting jobs and lets the workers drain the queue until
// ctx ends; then in-flight calls are cancelled, the rest of the queue is
// dropped, and Close returns ctx's error after the workers have stopped.
func (mr *Mirror) Close(ctx context.Context) error {
	mr.mu.Lock()
	if !mr.closed {
		mr.closed = true
		close(mr.queue)
		close(mr.closing)
	}
	mr.mu.Unlock()
	done := make(chan struct{})
	go func() { mr.wg.Wait(); close(done) }()
	select {
	case <-done:
		mr.cancel()
		return nil
	case <-ctx.Done():
		mr.cancel()
		<-done
		return fmt.Errorf("shadow mirror: queue not drained: %w", ctx.Err())
	}
}

func (mr *Mirror) worker(w *workerState) {
	defer mr.wg.Done()
	defer func() {
		if w.timer != nil {
			w.timer.Stop()
		}
	}()
	var carry *Job // taken from the queue and prepared, not joinable with the last batch
	for {
		j := carry
		carry = nil
		// While batching, one worker at a time takes jobs from the queue
		// and gathers a batch; the others wait their turn here, so that a
		// new job wakes no idle worker to start a batch of its own.
		batching := mr.batching()
		if batching {
			if j == nil {
				mr.collecting.Lock()
			} else if !mr.collecting.TryLock() {
				// The job carried from this worker's last batch does not
				// wait for the queue: the worker holding it may be
				// waiting there for a next job, however long that takes.
				mr.callOne(w, j)
				continue
			}
		}
		if j == nil {
			var ok bool
			if j, ok = <-mr.queue; !ok {
				if batching {
					mr.collecting.Unlock()
				}
				return
			}
			if !mr.prepare(j) {
				if batching {
					mr.collecting.Unlock()
				}
				continue
			}
		}
		if !batching || Rows(j.Request) >= int64(mr.cfg.Batch.MaxRows) {
			if batching {
				mr.collecting.Unlock()
			}
			mr.callOne(w, j)
			continue
		}
		var batch []*Job
		batch, carry = mr.collect(w, j)
		mr.collecting.Unlock()
		if len(batch) == 1 {
			mr.callOne(w, j)
		} else {
			mr.callBatch(w, batch)
		}
		clear(batch) // w's slice: keep no finished job alive
	}
}

// prepare drops a job taken after Close cancelled the mirror, and lets its
// Preparer decode it; false: dropped.
func (mr *Mirror) prepare(j *Job) bool {
	if mr.ctx.Err() != nil {
		mr.drop(j, "closed")
		return false
	}
	if p, ok := j.Payload.(Preparer); ok {
		if err := p.Prepare(j); err != nil {
			mr.drop(j, "prepare")
			mr.log.Warn("shadow job not prepared", "model", j.Model, "err", err)
			return false
		}
	}
	return true
}

func (mr *Mirror) batching() bool {
	return mr.cfg.Batch.MaxRows > 1 && mr.cfg.BatchCall != nil && !mr.noBatch.Load()
}

// collect gathers jobs joinable with first (same kind and target, Joinable
// requests) until MaxRows rows or MaxDelay after first was taken; the first
// job that does not fit is returned as carry, prepared. It takes what is
// queued; when the queue runs dry before the batch is full, it sleeps
// MaxDelay once (until Close) and then takes what arrived meanwhile: one
// wake-up per batch, not one per job. The batch reuses w's slice (callers
// keep it only until the call is done).
func (mr *Mirror) collect(w *workerState, first *Job) (batch []*Job, carry *Job) {
	batch = append(w.batch[:0], first)
	defer func() { w.batch = batch[:0] }()
	rows := Rows(first.Request)
	slept := false
	for rows < int64(mr.cfg.Batch.MaxRows) {
		var j *Job
		var ok bool
		select {
		case j, ok = <-mr.queue:
		default:
			if slept || mr.cfg.Batch.MaxDelay <= 0 {
				return batch, nil
			}
			if w.timer == nil {
				w.timer = time.NewTimer(mr.cfg.Batch.MaxDelay)
			} else {
				w.timer.Reset(mr.cfg.Batch.MaxDelay) // Go >= 1.23: no stale tick
			}
			select {
			case <-w.timer.C:
			case <-mr.closing:
				w.timer.Stop()
			}
			slept = true
			continue
		}
		if !ok || !mr.prepare(j) {
			if !ok {
				return batch, nil
			}
			continue
		}
		if j.Kind != first.Kind || j.TargetVersion != first.TargetVersion || !Joinable(first.Request, j.Request) ||
			rows+Rows(j.Request) > int64(mr.cfg.Batch.MaxRows) {
			return batch, j
		}
		batch = append(batch, j)
		rows += Rows(j.Request)
	}
	return batch, nil
}

func (mr *Mirror) callOne(w *workerState, j *Job) {
	ctx, cancel := context.WithTimeout(mr.ctx, mr.cfg.Timeout)
	start := time.Now()
	resp, err := mr.callSafe(ctx, j)
	s := Result{Response: resp, Err: mr.timedOut(err), Latency: time.Since(start)}
	cancel()
	mr.afterCall(w, j, s)
}

func (mr *Mirror) timedOut(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("shadow call timed out after %s", mr.cfg.Timeout)
	}
	return err
}

// callBatch makes one call for the jobs. Each job's shadow latency is the
// joined call's. If the target refuses the joined request as invalid (e.g.
// a model whose batch dimension is fixed), batching is switched off for
// this mirror and the jobs are called one by one.
func (mr *Mirror) callBatch(w *workerState, jobs []*Job) {
	ctx, cancel := context.WithTimeout(mr.ctx, mr.cfg.Timeout)
	start := time.Now()
	resps, err := mr.batchCallSafe(ctx, jobs)
	lat := time.Since(start)
	cancel()
	if err == nil && len(resps) != len(jobs) {
		err = oip.Errorf(oip.InvalidArgument, "batched shadow call returned %d answers for %d requests", len(resps), len(jobs))
	}
	if err != nil && oip.CodeOf(err) == oip.InvalidArgument {
		if !mr.noBatch.Swap(true) {
			mr.log.Warn("shadow calls are not batched any more: the target refused a joined request", "model", jobs[0].Model,
				"version", jobs[0].TargetVersion, "err", err)
		}
		for _, j := range jobs {
			mr.callOne(w, j)
		}
		return
	}
	if mr.m != nil {
		mr.m.batchJobs.WithLabelValues(jobs[0].Model, jobs[0].TargetVersion, jobs[0].Kind).Observe(float64(len(jobs)))
	}
	err = mr.timedOut(err)
	for i, j := range jobs {
		s := Result{Err: err, Latency: lat}
		if err == nil {
			s.Response = resps[i]
		}
		mr.afterCall(w, j, s)
	}
}

func (mr *Mirror) batchCallSafe(ctx context.Context, jobs []*Job) (resps []*oip.InferResponse, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("batched shadow call panicked: %v", r)
		}
	}()
	return mr.cfg.BatchCall(ctx, jobs)
}

// afterCall compares the answers, counts, keeps and writes the record.
func (mr *Mirror) afterCall(w *workerState, j *Job, s Result) {
	c := compareWith(j.Primary, s, mr.cfg.Compare, &w.sc)
	w.series.observe(j, &c, j.Primary, s)
	if mr.cfg.OnCompared != nil {
		mr.cfg.OnCompared(j, &c)
	}
	rec := newRecordHead(j, &c, s, 1)
	if mr.sink == nil || !KeepRecord(c.Agree, mr.cfg.RecordAgreements, rand.Float64()) {
		mr.ring.AddDeferred(rec, j.Request, j.Primary.Response, s.Response)
		return
	}
	(&deferredParts{req: j.Request, primary: j.Primary.Response, shadow: s.Response}).fill(&rec)
	mr.ring.Add(rec)
	rec.Weight = RecordWeight(c.Agree, mr.cfg.RecordAgreements)
	result := "written"
	if err := mr.sink.Write(rec); err != nil {
		result = "error"
		mr.log.Warn("shadow record not written", "model", j.Model, "err", err)
	}
	if mr.m != nil {
		mr.m.records.WithLabelValues(j.Model, result).Inc()
	}
}

func (mr *Mirror) callSafe(ctx context.Context, j *Job) (resp *oip.InferResponse, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("shadow call panicked: %v", r)
		}
	}()
	return mr.call(ctx, j)
}

// NewRecord builds the record of one compared pair.
func NewRecord(j *Job, c *Comparison, s Result, weight float64) Record {
	r := newRecordHead(j, c, s, weight)
	(&deferredParts{req: j.Request, primary: j.Primary.Response, shadow: s.Response}).fill(&r)
	return r
}

// newRecordHead is NewRecord without the input digest and output summaries.
func newRecordHead(j *Job, c *Comparison, s Result, weight float64) Record {
	kind := j.Kind
	if kind == "" {
		kind = KindShadow
	}
	r := Record{
		Time: j.Time, RequestID: j.RequestID, Model: j.Model,
		PrimaryVersion: j.PrimaryVersion, ShadowVersion: j.TargetVersion, Kind: kind,
		Weight: weight,
		Agree:  c.Agree, Reason: c.Reason, Diff: c.Outputs,
		Primary: Side{LatencyMS: ms(j.Primary.Latency), Error: c.PrimaryError, NaN: c.PrimaryNaN},
		Shadow:  Side{LatencyMS: ms(s.Latency), Error: c.ShadowError, NaN: c.ShadowNaN},
	}
	return r
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
