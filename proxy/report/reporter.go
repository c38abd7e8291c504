package report

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/api/statspb"
	"github.com/switchyard-dev/switchyard/canary"
	"github.com/switchyard-dev/switchyard/internal/backoff"
)

// Defaults of the reporter.
const (
	DefaultInterval    = time.Second
	DefaultMaxBuffered = 120
)

// Status is the reporter's state, for tests and /stats.
type Status struct {
	BootID    string `json:"bootId"`
	Seq       uint64 `json:"seq"`       // newest report made
	Acked     uint64 `json:"acked"`     // newest report the control plane took
	Buffered  int    `json:"buffered"`  // made, not yet acknowledged
	Dropped   uint64 `json:"dropped"`   // dropped unsent when the buffer was full
	Rejected  uint64 `json:"rejected"`  // refused by the control plane as malformed, dropped
	Connected bool   `json:"connected"` // a stream is open
	// LastError is why the control plane last refused the stream
	// (UNAUTHENTICATED, PERMISSION_DENIED: a credential that is missing or
	// is not this node's); "" once a report is acknowledged again.
	LastError string `json:"lastError,omitempty"`
}

// Options configure a Reporter.
type Options struct {
	Addr string // the control plane's Stats service (its xDS address)
	Node string // the proxy's node id
	// Interval between reports (0: DefaultInterval); MaxBuffered
	// unacknowledged reports kept (0: DefaultMaxBuffered).
	Interval    time.Duration
	MaxBuffered int
	// BackoffMin and BackoffMax bound the reconnect delay.
	BackoffMin, BackoffMax time.Duration
	Log                    *slog.Logger
	Dial                   []grpc.DialOption // TLS and token
}

// Reporter ships the recorder's deltas each interval.
type Reporter struct {
	rec  *Recorder
	opt  Options
	boot string

	last map[*Slot]*canary.Stats // cumulative figures at the last collect
	cur  canary.Stats            // scratch

	mu     sync.Mutex
	status Status
	buf    []*statspb.Report // unacknowledged, oldest first
}

func newBootID() string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		binary.LittleEndian.PutUint64(b[:], uint64(time.Now().UnixNano()))
	}
	return hex.EncodeToString(b[:])
}

// New returns a reporter of rec's counters; Run ships them.
func New(rec *Recorder, opt Options) *Reporter {
	if opt.Interval <= 0 {
		opt.Interval = DefaultInterval
	}
	if opt.MaxBuffered <= 0 {
		opt.MaxBuffered = DefaultMaxBuffered
	}
	if opt.Log == nil {
		opt.Log = slog.New(slog.DiscardHandler)
	}
	r := &Reporter{rec: rec, opt: opt, boot: newBootID(), last: map[*Slot]*canary.Stats{}}
	r.status.BootID = r.boot
	return r
}

// Collect turns the counters since the last collect into one report and
// buffers it (dropping the oldest unacknowledged one when full). Run calls
// it each interval.
func (r *Reporter) Collect(now time.Time) {
	slots := *r.rec.slots.Load()
	rep := &statspb.Report{Proxy: r.opt.Node, BootId: r.boot, AtUnixNano: now.UnixNano()}
	for _, s := range slots {
		s.Snapshot(&r.cur)
		prev := r.last[s]
		if prev == nil {
			prev = &canary.Stats{}
			r.last[s] = prev
		}
		d := r.cur.Since(prev)
		// Keep the cumulative figures (max is per interval already).
		prev.Requests, prev.Fallbacks, prev.NaNOutputs = r.cur.Requests, r.cur.Fallbacks, r.cur.NaNOutputs
		prev.ShadowCompared, prev.ShadowDisagreed = r.cur.ShadowCompared, r.cur.ShadowDisagreed
		prev.BackupAnswers = r.cur.BackupAnswers
		prev.Latency = r.cur.Latency
		prev.Errors = canary.CopyCounts(prev.Errors, r.cur.Errors)
		prev.UpstreamFailures = canary.CopyCounts(prev.UpstreamFailures, r.cur.UpstreamFailures)
		if d.Requests == 0 && d.ShadowCompared == 0 && d.Latency.Total == 0 && d.BackupAnswers == 0 {
			continue // idle (latency samples read past the request count still go out)
		}
		rep.Entries = append(rep.Entries, canary.EntryToProto(&canary.Entry{Model: s.model, Version: s.version, Stats: d}))
	}
	sort.Slice(rep.Entries, func(i, j int) bool {
		if rep.Entries[i].Model != rep.Entries[j].Model {
			return rep.Entries[i].Model < rep.Entries[j].Model
		}
		return rep.Entries[i].Version < rep.Entries[j].Version
	})
	r.mu.Lock()
	defer r.mu.Unlock()
	r.status.Seq++
	rep.Seq = r.status.Seq
	r.buf = append(r.buf, rep)
	if over := len(r.buf) - r.opt.MaxBuffered; over > 0 {
		r.buf = r.buf[over:]
		r.status.Dropped += uint64(over)
	}
	r.status.Buffered = len(r.buf)
}

func (r *Reporter) ack(seq uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if seq > r.status.Acked {
		r.status.Acked = seq
	}
	r.status.LastError = ""
	n := sort.Search(len(r.buf), func(i int) bool { return r.buf[i].Seq > seq })
	r.buf = r.buf[n:]
	r.status.Buffered = len(r.buf)
}

// reject drops the oldest unacknowledged report: the one the control
// plane refused as malformed (InvalidArgument) when it ended the stream.
// It acknowledges the reports before it, in order, so that is the first
// one left. Resending it would be refused again, and every report after
// it would wait behind it until the buffer overflowed.
func (r *Reporter) reject() (uint64, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.buf) == 0 {
		return 0, false
	}
	seq := r.buf[0].Seq
	r.buf = r.buf[1:]
	r.status.Rejected++
	r.status.Buffered = len(r.buf)
	return seq, true
}

// Pending returns the buffered reports with seq > after.
func (r *Reporter) Pending(after uint64) []*statspb.Report {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := sort.Search(len(r.buf), func(i int) bool { return r.buf[i].Seq > after })
	return append([]*statspb.Report(nil), r.buf[n:]...)
}

func (r *Reporter) setConnected(c bool) {
	r.mu.Lock()
	r.status.Connected = c
	r.mu.Unlock()
}

// Status returns the reporter's state.
func (r *Reporter) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.status
}

// Run collects every interval and keeps a stream to the control plane open,
// resending what it has not acknowledged after each reconnect. On ctx done
// it makes one last report and sends it if a stream is open.
func (r *Reporter) Run(ctx context.Context) {
	conn, err := grpc.NewClient(r.opt.Addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, r.opt.Dial...)...)
	if err != nil {
		r.opt.Log.Error("stats reporter: bad control plane address", "addr", r.opt.Addr, "error", err)
		return
	}
	defer conn.Close()
	client := statspb.NewStatsClient(conn)
	tick := time.NewTicker(r.opt.Interval)
	defer tick.Stop()

	var (
		stream   grpc.BidiStreamingClient[statspb.Report, statspb.Ack]
		cancel   context.CancelFunc
		sent     uint64 // newest seq sent on the current stream
		streamWG sync.WaitGroup
		broken   = make(chan struct{}, 1)
		gotAck   atomic.Bool // the current stream has been acknowledged
		retry    = backoff.Backoff{Initial: r.opt.BackoffMin, Max: r.opt.BackoffMax, Jitter: true}
		retryAt  time.Time
	)
	retryLater := func() {
		if gotAck.Load() {
			retry.Reset()
		}
		retryAt = time.Now().Add(retry.Next())
	}
	closeStream := func() {
		if cancel != nil {
			cancel()
			streamWG.Wait()
		}
		stream, cancel = nil, nil
		r.setConnected(false)
	}
	defer closeStream()
	open := func() {
		// Not derived from ctx: the last report is sent after ctx is done.
		sctx, c := context.WithCancel(context.WithoutCancel(ctx))
		gotAck.Store(false)
		s, err := client.Stream(sctx)
		if err != nil {
			c()
			r.opt.Log.Debug("stats reporter: connect failed", "addr", r.opt.Addr, "error", err)
			retryLater()
			return
		}
		stream, cancel = s, c
		select { // a stale signal of the previous stream
		case <-broken:
		default:
		}
		r.setConnected(true)
		acked := r.Status().Acked
		sent = acked
		streamWG.Add(1)
		go func() {
			defer streamWG.Done()
			for {
				a, err := s.Recv()
				if err != nil {
					if status.Code(err) == codes.InvalidArgument && sctx.Err() == nil {
						if seq, ok := r.reject(); ok {
							r.opt.Log.Warn("stats reporter: the control plane refused a report; dropped it", "seq", seq, "error", err)
						}
					} else if c := status.Code(err); (c == codes.Unauthenticated || c == codes.PermissionDenied) && sctx.Err() == nil {
						r.opt.Log.Warn("stats reporter: the control plane refused the stream; retrying with backoff", "error", err)
						r.mu.Lock()
						r.status.LastError = err.Error()
						r.mu.Unlock()
					} else if !errors.Is(err, io.EOF) && sctx.Err() == nil {
						r.opt.Log.Debug("stats reporter: stream ended", "error", err)
					}
					select {
					case broken <- struct{}{}:
					default:
					}
					return
				}
				r.ack(a.GetSeq())
				gotAck.Store(true)
			}
		}()
	}
	send := func() bool {
		for _, rep := range r.Pending(sent) {
			if err := stream.Send(rep); err != nil {
				return false
			}
			sent = rep.Seq
		}
		return true
	}
	for {
		select {
		case <-ctx.Done():
			r.Collect(time.Now())
			if stream != nil && send() {
				_ = stream.CloseSend()
				done := make(chan struct{})
				go func() { streamWG.Wait(); close(done) }()
				select { // let the control plane take the last report
				case <-done:
				case <-time.After(time.Second):
				}
			}
			return
		case now := <-tick.C:
			r.Collect(now)
		case <-broken:
			closeStream()
			retryLater()
		}
		if stream == nil && !time.Now().Before(retryAt) {
			open()
		}
		if stream != nil && !send() {
			closeStream()
			retryLater()
		}
	}
}
