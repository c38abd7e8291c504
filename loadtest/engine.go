// Package loadtest is the engine behind `syctl loadtest`: open-loop,
// fixed-rate load against one OIP v2 endpoint (REST or gRPC) with latency
// measured from each request's scheduled send time, a bounded worker pool, a
// mergeable latency histogram, error counts by kind, a ramp mode that finds
// one replica's capacity, backend process stats from /proc and a cold-start
// measurement through the repository extension.
//
// Decision logic (capacity, replicas, ramp steps, /proc parsing, percentile
// summaries) is pure and table-tested; Run, Ramp, ColdStart and the targets
// are the thin I/O around it.
package loadtest

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/switchyard-dev/switchyard/canary"
)

// Sender sends one request and reports how it ended: kind is "" on
// success, otherwise an error kind such as "http_404", "grpc_NotFound",
// "timeout", "connect" or "canceled" (see ClassifyHTTPError and
// ClassifyGRPCError). Implementations must be safe for concurrent use.
type Sender interface {
	Send(ctx context.Context, i int) (kind string)
}

// Config bounds one fixed-rate run.
type Config struct {
	Rate        float64       // requests per second (> 0)
	Duration    time.Duration // scheduling window (> 0)
	MaxRequests int           // at most this many are scheduled (> 0)
	Workers     int           // bounded worker pool (> 0)
	Timeout     time.Duration // per-request timeout, from the send (> 0)
	// Grace is how long after the scheduling window queued requests may
	// still be sent; those left unsent are counted as Unsent. 0: Timeout.
	Grace time.Duration
	// Progress, if set, is called about once per second with a snapshot.
	Progress func(Progress)
}

// Progress is a running snapshot.
type Progress struct {
	Elapsed   time.Duration
	Scheduled int
	Completed int
	Errors    int
	InFlight  int
	P99       time.Duration
}

// Validate rejects an unbounded or empty run.
func (c Config) Validate() error {
	switch {
	case !(c.Rate > 0):
		return fmt.Errorf("rate must be > 0 requests per second, got %v", c.Rate)
	case c.Duration <= 0:
		return fmt.Errorf("duration must be > 0, got %v", c.Duration)
	case c.MaxRequests <= 0:
		return fmt.Errorf("max-requests must be > 0, got %d", c.MaxRequests)
	case c.Workers <= 0:
		return fmt.Errorf("workers must be > 0, got %d", c.Workers)
	case c.Timeout <= 0:
		return fmt.Errorf("timeout must be > 0, got %v", c.Timeout)
	}
	return nil
}

// Planned is how many requests a run schedules: rate × duration (at least
// one), capped at maxRequests.
func Planned(rate float64, d time.Duration, maxRequests int) int {
	n := int(rate * d.Seconds())
	if n < 1 {
		n = 1
	}
	return min(n, maxRequests)
}

// Result is one fixed-rate run.
type Result struct {
	TargetRate float64        `json:"target_rate"`
	Scheduled  int            `json:"scheduled"`
	Completed  int            `json:"completed"` // sent and answered (OK or error)
	OK         int            `json:"ok"`
	Errors     map[string]int `json:"errors,omitempty"` // by kind
	Unsent     int            `json:"unsent"`           // still queued when the grace ran out
	Elapsed    time.Duration  `json:"elapsed_ns"`
	// Hist holds the latency of every completed request (OK or error),
	// measured from its scheduled send time.
	Hist canary.Histogram `json:"-"`
	// OKHist holds successful requests only.
	OKHist canary.Histogram `json:"-"`
	// ServiceHist is the time from the actual send to the answer (every
	// completed request): what a closed-loop tool would report. LagHist is
	// the generator's own send lag, scheduled send time to actual send:
	// timer wake-up, handing the request to a worker, and waiting for a
	// free worker when all are busy. Latency = lag + service time.
	ServiceHist canary.Histogram `json:"-"`
	LagHist     canary.Histogram `json:"-"`
	// Seconds is the per-second latency, by scheduled second.
	Seconds []SecondStats `json:"-"`
}

// ErrorCount is the number of failed requests.
func (r *Result) ErrorCount() int {
	n := 0
	for _, c := range r.Errors {
		n += c
	}
	return n
}

// AchievedRate is completed requests per second of the run.
func (r *Result) AchievedRate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Completed) / r.Elapsed.Seconds()
}

// ErrorKinds are the error kinds sorted by name.
func (r *Result) ErrorKinds() []string {
	ks := make([]string, 0, len(r.Errors))
	for k := range r.Errors {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// SecondStats summarises the requests scheduled in one second of a run.
type SecondStats struct {
	Second int           `json:"second"`
	Count  int           `json:"count"`
	Errors int           `json:"errors"`
	P50    time.Duration `json:"p50_ns"`
	P99    time.Duration `json:"p99_ns"`
}

type job struct {
	i  int
	at time.Time
}

type recorder struct {
	mu        sync.Mutex
	res       *Result
	perSecond []canary.Histogram
	errSecond []int
	inFlight  int
}

func (r *recorder) record(sec int, lat, lag time.Duration, kind string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.inFlight--
	r.res.Completed++
	r.res.Hist.Record(lat)
	r.res.LagHist.Record(lag)
	r.res.ServiceHist.Record(lat - lag)
	if kind == "" {
		r.res.OK++
		r.res.OKHist.Record(lat)
	} else {
		r.res.Errors[kind]++
	}
	if sec >= 0 && sec < len(r.perSecond) {
		r.perSecond[sec].Record(lat)
		if kind != "" {
			r.errSecond[sec]++
		}
	}
}

// Run drives cfg's fixed rate at s until the schedule is done (duration
// and max-requests), every sent request has answered, and the grace after
// the window has not run out. Cancelling ctx stops scheduling and sending;
// the partial result is returned with ctx's error.
//
// Latency is measured from each request's scheduled send time, so a
// request that waits for a busy worker (or behind a slow scheduler) has
// that wait in its latency: coordinated omission is avoided.
func Run(ctx context.Context, cfg Config, s Sender) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Grace <= 0 {
		cfg.Grace = cfg.Timeout
	}
	planned := Planned(cfg.Rate, cfg.Duration, cfg.MaxRequests)
	interval := float64(time.Second) / cfg.Rate
	nsec := int(cfg.Duration/time.Second) + 2
	rec := &recorder{
		res:       &Result{TargetRate: cfg.Rate, Errors: map[string]int{}},
		perSecond: make([]canary.Histogram, nsec),
		errSecond: make([]int, nsec),
	}
	// Requests queue here when every worker is busy; the queue holds the
	// whole plan at most, so the scheduler never blocks on it.
	queue := make(chan job, min(planned, 1<<16))
	start := time.Now()
	hardStop := start.Add(cfg.Duration + cfg.Grace)
	runCtx, cancel := context.WithDeadline(ctx, hardStop)
	defer cancel()

	var wg sync.WaitGroup
	for range cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range queue {
				if runCtx.Err() != nil {
					continue // drained as unsent below
				}
				rec.mu.Lock()
				rec.inFlight++
				rec.mu.Unlock()
				rctx, rcancel := context.WithTimeout(runCtx, cfg.Timeout)
				sent := time.Now()
				kind := s.Send(rctx, j.i)
				rcancel()
				lat := time.Since(j.at)
				lag := max(sent.Sub(j.at), 0)
				if kind != "" && runCtx.Err() != nil && ctx.Err() != nil {
					kind = "canceled"
				}
				rec.record(int(j.at.Sub(start)/time.Second), lat, lag, kind)
			}
		}()
	}

	var progWG sync.WaitGroup
	progDone := make(chan struct{})
	if cfg.Progress != nil {
		progWG.Add(1)
		go func() {
			defer progWG.Done()
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for {
				select {
				case <-progDone:
					return
				case now := <-t.C:
					cfg.Progress(rec.progress(now.Sub(start)))
				}
			}
		}()
	}

	// Scheduler: request i is due at start + i×interval, whatever happened
	// to the ones before it.
	scheduled := 0
	timer := time.NewTimer(time.Hour)
	timer.Stop()
sched:
	for i := range planned {
		at := start.Add(time.Duration(float64(i) * interval))
		if at.Sub(start) >= cfg.Duration && i > 0 {
			break
		}
		if d := time.Until(at); d > 0 {
			timer.Reset(d)
			select {
			case <-runCtx.Done():
				timer.Stop()
				break sched
			case <-timer.C:
			}
		} else if runCtx.Err() != nil {
			break
		}
		rec.mu.Lock()
		rec.res.Scheduled++
		rec.mu.Unlock()
		scheduled++
		select {
		case queue <- job{i: i, at: at}:
		case <-runCtx.Done():
			break sched
		}
	}
	close(queue)
	wg.Wait()
	close(progDone)
	progWG.Wait()

	res := rec.res
	res.Elapsed = time.Since(start)
	res.Unsent = res.Scheduled - res.Completed
	res.Seconds = rec.seconds()
	if len(res.Errors) == 0 {
		res.Errors = nil
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	return res, nil
}

func (r *recorder) progress(elapsed time.Duration) Progress {
	r.mu.Lock()
	defer r.mu.Unlock()
	return Progress{
		Elapsed: elapsed, Scheduled: r.res.Scheduled, Completed: r.res.Completed,
		Errors: r.res.Completed - r.res.OK, InFlight: r.inFlight, P99: r.res.Hist.Quantile(0.99),
	}
}

func (r *recorder) seconds() []SecondStats {
	var out []SecondStats
	for i := range r.perSecond {
		h := &r.perSecond[i]
		if h.Total == 0 {
			continue
		}
		out = append(out, SecondStats{Second: i, Count: int(h.Total), Errors: r.errSecond[i], P50: h.Quantile(0.5), P99: h.Quantile(0.99)})
	}
	return out
}
