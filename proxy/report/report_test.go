package report

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/api/statspb"
	"github.com/switchyard-dev/switchyard/canary"
	"github.com/switchyard-dev/switchyard/controlplane"
	"github.com/switchyard-dev/switchyard/controlplane/cptest"
)

func entriesOf(t *testing.T, r *statspb.Report) map[string]canary.Stats {
	t.Helper()
	cr, err := canary.ReportFromProto(r, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]canary.Stats{}
	for _, e := range cr.Entries {
		out[e.Model+"/"+e.Version] = e.Stats
	}
	return out
}

func closedAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := l.Addr().String()
	l.Close()
	return a
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	cptest.WaitUntil(t, what, 15*time.Second, cond)
}

func TestRecorderDeltasAndBuffer(t *testing.T) {
	rec := NewRecorder()
	r := New(rec, Options{Addr: "127.0.0.1:1", Node: "node", Interval: time.Second, MaxBuffered: 3, BackoffMin: time.Millisecond, BackoffMax: time.Millisecond})
	a, b := rec.Slot("m", "v1"), rec.Slot("m", "v2")
	if rec.Slot("m", "v1") != a {
		t.Fatal("slot not reused")
	}
	for i := range 10 {
		a.Record(Outcome{Latency: time.Duration(i+1) * time.Millisecond, Kind: KindNone})
	}
	a.Record(Outcome{Latency: 50 * time.Millisecond, Kind: KindNaN, NaNOutput: true})
	b.Record(Outcome{Latency: time.Millisecond, Kind: KindNone, Fallback: true})
	r.Collect(time.Now())
	got := entriesOf(t, r.buf[0])
	v1 := got["m/v1"]
	if v1.Requests != 11 || v1.NaNOutputs != 1 || v1.Errors["nan_output"] != 1 || v1.Latency.Total != 11 || v1.Latency.MaxNS != uint64(50*time.Millisecond) {
		t.Fatalf("first report v1: %+v", v1)
	}
	if v2 := got["m/v2"]; v2.Requests != 1 || v2.Fallbacks != 1 {
		t.Fatalf("first report v2: %+v", v2)
	}
	// The next report carries only what happened since.
	a.Record(Outcome{Latency: 2 * time.Millisecond, Kind: KindTimeout})
	r.Collect(time.Now())
	got = entriesOf(t, r.buf[1])
	if v1 := got["m/v1"]; v1.Requests != 1 || v1.Errors["timeout"] != 1 || len(v1.Errors) != 1 || v1.Latency.Total != 1 || v1.Latency.MaxNS != uint64(2*time.Millisecond) {
		t.Fatalf("second report v1: %+v", v1)
	}
	if _, ok := got["m/v2"]; ok {
		t.Fatal("an idle version is reported")
	}
	if r.buf[0].Seq != 1 || r.buf[1].Seq != 2 || r.buf[0].BootId != r.buf[1].BootId || r.buf[0].BootId == "" {
		t.Fatalf("seq/boot: %d %d %q %q", r.buf[0].Seq, r.buf[1].Seq, r.buf[0].BootId, r.buf[1].BootId)
	}
	// Bounded: the oldest unacknowledged reports are dropped first.
	r.Collect(time.Now())
	r.Collect(time.Now())
	if s := r.Status(); s.Buffered != 3 || s.Dropped != 1 || r.buf[0].Seq != 2 || s.Seq != 4 {
		t.Fatalf("after 4 reports with room for 3: %+v, oldest seq %d", s, r.buf[0].Seq)
	}
	r.ack(3)
	if s := r.Status(); s.Buffered != 1 || s.Acked != 3 || r.buf[0].Seq != 4 {
		t.Fatalf("after ack 3: %+v", s)
	}
	if got := r.Pending(3); len(got) != 1 || got[0].Seq != 4 {
		t.Fatalf("pending after 3: %v", got)
	}
}

func TestRecordAllocatesNothing(t *testing.T) {
	rec := NewRecorder()
	rec.Slot("m", "v1")
	allocs := testing.AllocsPerRun(1000, func() {
		rec.Slot("m", "v1").Record(Outcome{Latency: 3 * time.Millisecond, Kind: KindNone})
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per recorded request", allocs)
	}
}

func BenchmarkRecordStats(b *testing.B) {
	rec := NewRecorder()
	rec.Slot("recommender", "v1")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			rec.Slot("recommender", "v1").Record(Outcome{Latency: time.Duration(1000000 + i*37), Kind: KindNone})
		}
	})
}

// Requests recorded while the reporter collects must not tear a report:
// the control plane refuses one whose latency buckets do not sum to its
// total (a torn snapshot used to read the total counter apart from the
// buckets, one request off), and the refused report then held up the
// whole stream (TestStory's canary saw 0 requests for 95 s).
func TestReportsConsistentUnderConcurrentRecording(t *testing.T) {
	rec := NewRecorder()
	r := New(rec, Options{Addr: "127.0.0.1:1", Node: "node", Interval: time.Second, MaxBuffered: 1 << 20, BackoffMin: time.Millisecond, BackoffMax: time.Millisecond})
	s := rec.Slot("m", "v1")
	var stop atomic.Bool
	var recorded [2]uint64
	var wg sync.WaitGroup
	for w := range recorded {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				s.Record(Outcome{Latency: time.Duration(i*7+w) * time.Microsecond, Kind: KindNone})
				recorded[w]++
			}
		}()
	}
	for range 20000 {
		r.Collect(time.Now())
	}
	stop.Store(true)
	wg.Wait()
	r.Collect(time.Now())
	var requests, total uint64
	for _, rep := range r.buf {
		cr, err := canary.ReportFromProto(rep, time.Now())
		if err != nil {
			t.Fatalf("the control plane would refuse report %d: %v", rep.Seq, err)
		}
		for _, e := range cr.Entries {
			requests += e.Stats.Requests
			total += e.Stats.Latency.Total
		}
	}
	if want := recorded[0] + recorded[1]; requests != want || total != want {
		t.Fatalf("reports sum to %d requests, %d latency samples; %d were recorded", requests, total, want)
	}
}

// A report the control plane refuses (InvalidArgument) is dropped, not
// resent on every reconnect ahead of the reports behind it.
func TestReporterDropsRefusedReport(t *testing.T) {
	cpAddr := closedAddr(t)
	cc := cptest.Start(t, controlplane.Config{XDSAddr: cpAddr, InsecureLoopbackNoAuth: true}, &controlplane.CanaryOptions{Interval: time.Hour}).Canary

	rec := NewRecorder()
	// Room for far more reports than the wait below lasts: the buffer
	// overflowing must not be what clears the refused one.
	r := New(rec, Options{Addr: cpAddr, Node: "edge-1", Interval: 20 * time.Millisecond, MaxBuffered: 1 << 20, BackoffMin: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond})
	s := rec.Slot("recommender", "v1")
	for range 5 {
		s.Record(Outcome{Latency: time.Millisecond, Kind: KindNone})
	}
	r.Collect(time.Now())
	r.buf[0].Entries[0].Latency.Total++ // malformed: buckets sum to 5, total says 6
	for range 7 {
		s.Record(Outcome{Latency: time.Millisecond, Kind: KindNone})
	}
	r.Collect(time.Now())

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	from := time.Now().Add(-time.Minute)
	count := func() uint64 {
		st, _ := cc.Stats().Stats(context.Background(), "recommender", "v1", from, time.Now().Add(time.Minute))
		return st.Requests
	}
	waitFor(t, "the reports behind the refused one to be counted", func() bool {
		st := r.Status()
		return count() == 7 && st.Rejected == 1 && st.Buffered == 0 && st.Connected
	})
	s.Record(Outcome{Latency: time.Millisecond, Kind: KindNone})
	waitFor(t, "a later report", func() bool { return count() == 8 })
	if st := r.Status(); st.Rejected != 1 {
		t.Fatalf("status %+v, want exactly the malformed report rejected", st)
	}
}
