package proxy

// The stats stream: every request's outcome is counted per (model, version)
// by a lock-free recorder (atomic counters, sharded, no allocation per
// request), and a reporter goroutine ships the deltas of each interval to
// the control plane's Stats gRPC service (on its xDS address) as
// (proxy, boot id, seq) reports, so a resend is counted once and a restart
// is a new reporter. Unacknowledged reports are kept (bounded: the oldest
// are dropped first) and resent after a reconnect, which backs off
// exponentially.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"math"
	mrand "math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchyard-dev/switchyard/fallback"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/api/statspb"
	"github.com/switchyard-dev/switchyard/canary"
	"github.com/switchyard-dev/switchyard/internal/backoff"
	pb "github.com/switchyard-dev/switchyard/oip/inferencepb"
)

// Error kinds counted per (model, version) for the canary, by the answer
// the caller got and its trigger (Result.Trigger). client_4xx (the version
// rejected the request; the canary compares its rate with the baseline's)
// and overload (too busy; a fallback may have answered) are not errors of
// the version for the error-rate gate; the canary reads them apart.
const (
	errKind5xx = iota
	errKindTimeout
	errKindUnavailable
	errKindNaN
	errKindClient4xx
	errKindOverload
	numErrKinds
	errKindNone = -1
)

var errKindNames = [numErrKinds]string{
	errKind5xx:         "status_5xx",
	errKindTimeout:     "timeout",
	errKindUnavailable: "unavailable",
	errKindNaN:         "nan_output",
	errKindClient4xx:   canary.ErrClient4xx,
	errKindOverload:    canary.ErrOverload,
}

// statsShards spreads concurrent requests of one variant over several
// counter sets (picked by the low bits of the latency), so cores do not
// fight over one cache line.
const statsShards = 8

type statsShard struct {
	requests, fallbacks, nan   atomic.Uint64
	shadowCompared, shadowDiff atomic.Uint64
	backupAnswers              atomic.Uint64
	errors                     [numErrKinds]atomic.Uint64
	failures                   [fallback.NumTriggers]atomic.Uint64 // by trigger
	buckets                    [canary.NumBuckets]atomic.Uint64
	sumNS                      atomic.Uint64
	maxNS                      atomic.Uint64 // since the last collect (swapped to 0)
	_                          [64]byte
}

type statsSlot struct {
	model, version string
	shards         [statsShards]statsShard
}

type statsKey struct{ model, version string }

// statsRecorder holds one slot per (model, version), created on first use
// and kept for the life of the proxy (so configuration changes do not reset
// counters). Lookups read an immutable map through an atomic pointer.
type statsRecorder struct {
	mu    sync.Mutex // serialises slot creation
	slots atomic.Pointer[map[statsKey]*statsSlot]
}

func newStatsRecorder() *statsRecorder {
	r := &statsRecorder{}
	m := map[statsKey]*statsSlot{}
	r.slots.Store(&m)
	return r
}

func (r *statsRecorder) slot(model, version string) *statsSlot {
	if s, ok := (*r.slots.Load())[statsKey{model, version}]; ok {
		return s
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	cur := *r.slots.Load()
	if s, ok := cur[statsKey{model, version}]; ok {
		return s
	}
	next := make(map[statsKey]*statsSlot, len(cur)+1)
	for k, v := range cur {
		next[k] = v
	}
	s := &statsSlot{model: model, version: version}
	next[statsKey{model, version}] = s
	r.slots.Store(&next)
	return s
}

// outcome is one answered request, as the recorder sees it.
type outcome struct {
	latency   time.Duration
	errKind   int // errKindNone: no error
	fallback  bool
	nanOutput bool
	// failure is the version's own failure on the request's attempt
	// (fallback.None if none), whether or not a fallback answered.
	failure fallback.Trigger
}

func (s *statsSlot) record(o outcome) {
	ns := uint64(max(o.latency, 0))
	sh := &s.shards[ns&(statsShards-1)]
	sh.requests.Add(1)
	if o.errKind >= 0 {
		sh.errors[o.errKind].Add(1)
	}
	if o.fallback {
		sh.fallbacks.Add(1)
	}
	if o.nanOutput {
		sh.nan.Add(1)
	}
	if o.failure != fallback.None {
		sh.failures[o.failure].Add(1)
	}
	sh.buckets[canary.BucketIndex(ns)].Add(1)
	sh.sumNS.Add(ns)
	for {
		m := sh.maxNS.Load()
		if ns <= m || sh.maxNS.CompareAndSwap(m, ns) {
			break
		}
	}
}

// snapshot sums the shards into cumulative stats (maxNS: since the last
// snapshot). Requests are recorded while it reads, so the latency total is
// the sum of the bucket counts it read, never a counter of its own: a
// total read apart from the buckets can be one request ahead of (or
// behind) them, and the control plane rejects such a report (its buckets
// must sum to its total), which stalled the reporter's stream behind it.
func (s *statsSlot) snapshot(out *canary.Stats) {
	*out = canary.Stats{Errors: out.Errors, UpstreamFailures: out.UpstreamFailures}
	clear(out.Errors)
	clear(out.UpstreamFailures)
	for i := range s.shards {
		sh := &s.shards[i]
		out.Requests += sh.requests.Load()
		out.Fallbacks += sh.fallbacks.Load()
		out.NaNOutputs += sh.nan.Load()
		out.ShadowCompared += sh.shadowCompared.Load()
		out.ShadowDisagreed += sh.shadowDiff.Load()
		out.BackupAnswers += sh.backupAnswers.Load()
		for t := range sh.failures {
			if n := sh.failures[t].Load(); n > 0 {
				if out.UpstreamFailures == nil {
					out.UpstreamFailures = map[string]uint64{}
				}
				out.UpstreamFailures[fallback.Trigger(t).String()] += n
			}
		}
		for k := range sh.errors {
			if n := sh.errors[k].Load(); n > 0 {
				if out.Errors == nil {
					out.Errors = map[string]uint64{}
				}
				out.Errors[errKindNames[k]] += n
			}
		}
		for b := range sh.buckets {
			n := sh.buckets[b].Load()
			out.Latency.Counts[b] += n
			out.Latency.Total += n
		}
		out.Latency.SumNS += sh.sumNS.Load()
		out.Latency.MaxNS = max(out.Latency.MaxNS, sh.maxNS.Swap(0))
	}
}

// recordStats counts one finished inference request for the canary: v is
// the variant the request was routed to (a fallback's answer still counts
// against it, as a fallback), status the HTTP status sent (gRPC: its HTTP
// equivalent). Requests that never reached a variant, and requests the
// client cancelled (nobody's failure), are not counted.
func (p *Proxy) recordStats(v *Variant, x *Exchange, res *Result, status int, latency time.Duration) {
	if p.stats == nil || v == nil || res.Trigger == fallback.Cancelled {
		return
	}
	o := outcome{latency: latency, fallback: res.Fallback != "" && res.Trigger != fallback.Overload}
	o.nanOutput = hasNaNOutput(v.Route, res, status) && (status >= 500 || !x.inputsHaveNaN())
	o.errKind = errKindOf(res.Trigger, status, o.nanOutput)
	o.failure = versionFailure(res)
	p.stats.slot(v.Route.Name, v.Name).record(o)
	if res.Fallback == fallbackBackup && res.Variant != nil && res.Variant != v {
		// The backup's answer: counted as the backup's, apart from the
		// requests routed to it.
		sh := &p.stats.slot(v.Route.Name, res.Variant.Name).shards[uint64(max(latency, 0))&(statsShards-1)]
		sh.backupAnswers.Add(1)
	}
}

// fallbackBackup is Result.Fallback for an answer of the backup version.
var fallbackBackup = fallback.StepBackup.String()

// versionFailure is the routed version's own failure on the request
// (fallback.None if it did not fail): the chain's reason when a fallback
// answered (res.Trigger is then the last link's outcome), else the
// attempt's trigger when the version is at fault.
func versionFailure(res *Result) fallback.Trigger {
	t := res.Trigger
	if res.Fallback != "" {
		t, _ = fallback.ParseTrigger(res.FallbackReason)
	}
	if t.Fault() != fallback.FaultVersion {
		return fallback.None
	}
	return t
}

// errKindOf is the canary's error kind of an answer (an index into
// errKindNames; -1: not an error).
func errKindOf(t fallback.Trigger, status int, nan bool) int {
	switch {
	case t == fallback.Overload:
		return errKindOverload
	case nan && status >= 500:
		return errKindNaN
	case status == 504:
		return errKindTimeout
	case status == 503:
		return errKindUnavailable
	case status >= 500:
		return errKind5xx
	case status >= 400 && t == fallback.Rejected:
		return errKindClient4xx
	}
	return errKindNone
}

// nanMessage is how an OIP v2 backend (Switchyard's; Triton's JSON writer
// also names NaN) says an answer held NaN/Inf that JSON cannot carry.
var nanMessage = []byte("NaN")

// hasNaNOutput reports a NaN/Inf answer: a backend's 5xx saying so, a
// decoded answer holding one, or (for routes with a canary, where it is
// worth the scan) a gRPC answer holding one. REST answers passed through
// as bytes are not decoded for this.
func hasNaNOutput(r *Route, res *Result, status int) bool {
	switch {
	case res.Fallback != "" && res.FallbackReason == fallback.NaNOutput.String():
		// The chosen version answered NaN and a fallback replaced it: the
		// answer the client got is clean, the version's was not.
		return true
	case status >= 500:
		return res.Status >= 500 && bytes.Contains(res.Body, nanMessage)
	case res.parsed != nil:
		for i := range res.parsed.Outputs {
			if res.parsed.Outputs[i].HasNaNOrInf() {
				return true
			}
		}
	case res.PB != nil && r != nil && r.Model != nil && r.Model.Spec.Canary != nil:
		return pbHasNaN(res.PB)
	}
	return false
}

func pbHasNaN(resp *pb.ModelInferResponse) bool {
	raw := resp.GetRawOutputContents()
	for i, o := range resp.GetOutputs() {
		if i < len(raw) {
			if rawHasNaN(o.GetDatatype(), raw[i]) {
				return true
			}
			continue
		}
		c := o.GetContents()
		for _, f := range c.GetFp32Contents() {
			if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
				return true
			}
		}
		for _, f := range c.GetFp64Contents() {
			if math.IsNaN(f) || math.IsInf(f, 0) {
				return true
			}
		}
	}
	return false
}

func rawHasNaN(datatype string, b []byte) bool {
	switch datatype {
	case "FP32":
		for i := 0; i+4 <= len(b); i += 4 {
			if binary.LittleEndian.Uint32(b[i:])&0x7f800000 == 0x7f800000 {
				return true
			}
		}
	case "FP64":
		for i := 0; i+8 <= len(b); i += 8 {
			if binary.LittleEndian.Uint64(b[i:])&0x7ff0000000000000 == 0x7ff0000000000000 {
				return true
			}
		}
	case "FP16":
		for i := 0; i+2 <= len(b); i += 2 {
			if binary.LittleEndian.Uint16(b[i:])&0x7c00 == 0x7c00 {
				return true
			}
		}
	}
	return false
}

// RecordShadow counts one shadow comparison of (model, version) as the
// shadow, for the canary's shadow-disagreement gate.
func (p *Proxy) RecordShadow(model, version string, disagreed bool) {
	if p.stats == nil {
		return
	}
	sh := &p.stats.slot(model, version).shards[mrand.Uint64()&(statsShards-1)]
	sh.shadowCompared.Add(1)
	if disagreed {
		sh.shadowDiff.Add(1)
	}
}

// Defaults of the stats reporter.
const (
	DefaultStatsInterval    = time.Second
	DefaultStatsMaxBuffered = 120
)

// ReporterStatus is the stats reporter's state, for tests and /stats.
type ReporterStatus struct {
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

// statsReporter ships the recorder's deltas each interval.
type statsReporter struct {
	rec      *statsRecorder
	addr     string
	node     string
	boot     string
	interval time.Duration
	maxBuf   int
	bmin     time.Duration
	bmax     time.Duration
	log      *slog.Logger
	dial     []grpc.DialOption // TLS and token (Config.ControlPlaneTLS, ControlPlaneToken)

	last map[*statsSlot]*canary.Stats // cumulative figures at the last collect
	cur  canary.Stats                 // scratch

	mu     sync.Mutex
	status ReporterStatus
	buf    []*statspb.Report // unacknowledged, oldest first
}

func newBootID() string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		binary.LittleEndian.PutUint64(b[:], uint64(time.Now().UnixNano()))
	}
	return hex.EncodeToString(b[:])
}

func newStatsReporter(rec *statsRecorder, addr, node string, interval time.Duration, maxBuf int, bmin, bmax time.Duration, log *slog.Logger) *statsReporter {
	if interval <= 0 {
		interval = DefaultStatsInterval
	}
	if maxBuf <= 0 {
		maxBuf = DefaultStatsMaxBuffered
	}
	r := &statsReporter{rec: rec, addr: addr, node: node, boot: newBootID(), interval: interval, maxBuf: maxBuf,
		bmin: bmin, bmax: bmax, log: log, last: map[*statsSlot]*canary.Stats{}}
	r.status.BootID = r.boot
	return r
}

// collect turns the counters since the last collect into one report and
// buffers it (dropping the oldest unacknowledged one when full).
func (r *statsReporter) collect(now time.Time) {
	slots := *r.rec.slots.Load()
	rep := &statspb.Report{Proxy: r.node, BootId: r.boot, AtUnixNano: now.UnixNano()}
	for _, s := range slots {
		s.snapshot(&r.cur)
		prev := r.last[s]
		if prev == nil {
			prev = &canary.Stats{}
			r.last[s] = prev
		}
		d := delta(&r.cur, prev)
		// Keep the cumulative figures (max is per interval already).
		prev.Requests, prev.Fallbacks, prev.NaNOutputs = r.cur.Requests, r.cur.Fallbacks, r.cur.NaNOutputs
		prev.ShadowCompared, prev.ShadowDisagreed = r.cur.ShadowCompared, r.cur.ShadowDisagreed
		prev.BackupAnswers = r.cur.BackupAnswers
		prev.Latency = r.cur.Latency
		prev.Errors = keepCounts(prev.Errors, r.cur.Errors)
		prev.UpstreamFailures = keepCounts(prev.UpstreamFailures, r.cur.UpstreamFailures)
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
	if over := len(r.buf) - r.maxBuf; over > 0 {
		r.buf = r.buf[over:]
		r.status.Dropped += uint64(over)
	}
	r.status.Buffered = len(r.buf)
}

// keepCounts copies the cumulative counts cur into dst (allocated on
// first use) and returns it.
func keepCounts(dst, cur map[string]uint64) map[string]uint64 {
	if dst == nil && len(cur) > 0 {
		dst = map[string]uint64{}
	}
	for k, v := range cur {
		dst[k] = v
	}
	return dst
}

// deltaCounts is cur - prev per key (nil when nothing grew).
func deltaCounts(cur, prev map[string]uint64) map[string]uint64 {
	var d map[string]uint64
	for k, v := range cur {
		if n := v - prev[k]; n > 0 {
			if d == nil {
				d = map[string]uint64{}
			}
			d[k] = n
		}
	}
	return d
}

func delta(cur, prev *canary.Stats) canary.Stats {
	d := canary.Stats{
		Requests:         cur.Requests - prev.Requests,
		Fallbacks:        cur.Fallbacks - prev.Fallbacks,
		NaNOutputs:       cur.NaNOutputs - prev.NaNOutputs,
		ShadowCompared:   cur.ShadowCompared - prev.ShadowCompared,
		ShadowDisagreed:  cur.ShadowDisagreed - prev.ShadowDisagreed,
		BackupAnswers:    cur.BackupAnswers - prev.BackupAnswers,
		Errors:           deltaCounts(cur.Errors, prev.Errors),
		UpstreamFailures: deltaCounts(cur.UpstreamFailures, prev.UpstreamFailures),
	}
	for i := range cur.Latency.Counts {
		d.Latency.Counts[i] = cur.Latency.Counts[i] - prev.Latency.Counts[i]
	}
	d.Latency.Total = cur.Latency.Total - prev.Latency.Total
	d.Latency.SumNS = cur.Latency.SumNS - prev.Latency.SumNS
	d.Latency.MaxNS = cur.Latency.MaxNS
	return d
}

func (r *statsReporter) ack(seq uint64) {
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
func (r *statsReporter) reject() (uint64, bool) {
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

// pending returns the buffered reports with seq > after.
func (r *statsReporter) pending(after uint64) []*statspb.Report {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := sort.Search(len(r.buf), func(i int) bool { return r.buf[i].Seq > after })
	return append([]*statspb.Report(nil), r.buf[n:]...)
}

func (r *statsReporter) setConnected(c bool) {
	r.mu.Lock()
	r.status.Connected = c
	r.mu.Unlock()
}

// Status returns the reporter's state.
func (r *statsReporter) Status() ReporterStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.status
}

// run collects every interval and keeps a stream to the control plane open,
// resending what it has not acknowledged after each reconnect. On ctx done
// it makes one last report and sends it if a stream is open.
func (r *statsReporter) run(ctx context.Context) {
	conn, err := grpc.NewClient(r.addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, r.dial...)...)
	if err != nil {
		r.log.Error("stats reporter: bad control plane address", "addr", r.addr, "error", err)
		return
	}
	defer conn.Close()
	client := statspb.NewStatsClient(conn)
	tick := time.NewTicker(r.interval)
	defer tick.Stop()

	var (
		stream   grpc.BidiStreamingClient[statspb.Report, statspb.Ack]
		cancel   context.CancelFunc
		sent     uint64 // newest seq sent on the current stream
		streamWG sync.WaitGroup
		broken   = make(chan struct{}, 1)
		gotAck   atomic.Bool // the current stream has been acknowledged
		retry    = backoff.Backoff{Initial: r.bmin, Max: r.bmax, Jitter: true}
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
			r.log.Debug("stats reporter: connect failed", "addr", r.addr, "error", err)
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
							r.log.Warn("stats reporter: the control plane refused a report; dropped it", "seq", seq, "error", err)
						}
					} else if c := status.Code(err); (c == codes.Unauthenticated || c == codes.PermissionDenied) && sctx.Err() == nil {
						r.log.Warn("stats reporter: the control plane refused the stream; retrying with backoff", "error", err)
						r.mu.Lock()
						r.status.LastError = err.Error()
						r.mu.Unlock()
					} else if !errors.Is(err, io.EOF) && sctx.Err() == nil {
						r.log.Debug("stats reporter: stream ended", "error", err)
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
		for _, rep := range r.pending(sent) {
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
			r.collect(time.Now())
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
			r.collect(now)
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

// StatsReporterStatus returns the stats reporter's state (zero without
// one).
func (p *Proxy) StatsReporterStatus() ReporterStatus {
	if p.reporter == nil {
		return ReporterStatus{}
	}
	return p.reporter.Status()
}

// startReporter starts the stats reporter (Start calls it when the proxy has
// a control plane and reporting is on).
func (p *Proxy) startReporter(ctx context.Context) {
	addr := p.cfg.StatsAddr
	if addr == "" {
		addr = p.cfg.XDSAddr
	}
	p.reporter = newStatsReporter(p.stats, addr, p.cfg.NodeID, p.cfg.StatsInterval, 0, p.cfg.XDSBackoffMin, p.cfg.XDSBackoffMax, p.log)
	p.reporter.dial = p.cpDial
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.reporter.run(ctx)
	}()
}
