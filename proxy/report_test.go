package proxy

import (
	"context"
	"encoding/binary"
	"log/slog"
	"math"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/api/statspb"
	"github.com/switchyard-dev/switchyard/canary"
	"github.com/switchyard-dev/switchyard/controlplane"
	"github.com/switchyard-dev/switchyard/inference-backend/backendtest"
	pb "github.com/switchyard-dev/switchyard/oip/inferencepb"
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

func TestRecorderDeltasAndBuffer(t *testing.T) {
	rec := newStatsRecorder()
	r := newStatsReporter(rec, "127.0.0.1:1", "node", time.Second, 3, time.Millisecond, time.Millisecond, slog.New(slog.DiscardHandler))
	a, b := rec.slot("m", "v1"), rec.slot("m", "v2")
	if rec.slot("m", "v1") != a {
		t.Fatal("slot not reused")
	}
	for i := range 10 {
		a.record(outcome{latency: time.Duration(i+1) * time.Millisecond, errKind: -1})
	}
	a.record(outcome{latency: 50 * time.Millisecond, errKind: 3, nanOutput: true})
	b.record(outcome{latency: time.Millisecond, errKind: -1, fallback: true})
	r.collect(time.Now())
	got := entriesOf(t, r.buf[0])
	v1 := got["m/v1"]
	if v1.Requests != 11 || v1.NaNOutputs != 1 || v1.Errors["nan_output"] != 1 || v1.Latency.Total != 11 || v1.Latency.MaxNS != uint64(50*time.Millisecond) {
		t.Fatalf("first report v1: %+v", v1)
	}
	if v2 := got["m/v2"]; v2.Requests != 1 || v2.Fallbacks != 1 {
		t.Fatalf("first report v2: %+v", v2)
	}
	// The next report carries only what happened since.
	a.record(outcome{latency: 2 * time.Millisecond, errKind: 1})
	r.collect(time.Now())
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
	r.collect(time.Now())
	r.collect(time.Now())
	if s := r.Status(); s.Buffered != 3 || s.Dropped != 1 || r.buf[0].Seq != 2 || s.Seq != 4 {
		t.Fatalf("after 4 reports with room for 3: %+v, oldest seq %d", s, r.buf[0].Seq)
	}
	r.ack(3)
	if s := r.Status(); s.Buffered != 1 || s.Acked != 3 || r.buf[0].Seq != 4 {
		t.Fatalf("after ack 3: %+v", s)
	}
	if got := r.pending(3); len(got) != 1 || got[0].Seq != 4 {
		t.Fatalf("pending after 3: %v", got)
	}
}

func TestRecordAllocatesNothing(t *testing.T) {
	rec := newStatsRecorder()
	rec.slot("m", "v1")
	allocs := testing.AllocsPerRun(1000, func() {
		rec.slot("m", "v1").record(outcome{latency: 3 * time.Millisecond, errKind: -1})
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per recorded request", allocs)
	}
}

func TestNaNDetection(t *testing.T) {
	f32 := func(vs ...float32) []byte {
		b := make([]byte, 4*len(vs))
		for i, v := range vs {
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
		}
		return b
	}
	nan := float32(math.NaN())
	canaryRoute := &Route{Model: &api.Model{Spec: api.Spec{Canary: &api.Canary{Version: "v2"}}}}
	plainRoute := &Route{Model: &api.Model{}}
	withRaw := func(raw []byte) *Result {
		return &Result{PB: &pb.ModelInferResponse{Outputs: []*pb.ModelInferResponse_InferOutputTensor{{Name: "scores", Datatype: "FP32", Shape: []int64{1, 2}}},
			RawOutputContents: [][]byte{raw}}}
	}
	cases := map[string]struct {
		route  *Route
		res    *Result
		status int
		want   bool
	}{
		"backend 500 naming NaN":               {plainRoute, &Result{Status: 500, Body: []byte(`{"error":"output \"scores\": element 3 is NaN or infinite, which JSON cannot carry"}`)}, 500, true},
		"backend 500 for another reason":       {plainRoute, &Result{Status: 500, Body: []byte(`{"error":"boom"}`)}, 500, false},
		"proxy's own 503":                      {plainRoute, &Result{}, 503, false},
		"NaN replaced by a fallback":           {plainRoute, &Result{Fallback: "backup", FallbackReason: "nan_output"}, 200, true},
		"fallback for another reason":          {plainRoute, &Result{Fallback: "backup", FallbackReason: "connect_error"}, 200, false},
		"gRPC raw NaN, canary route":           {canaryRoute, withRaw(f32(1, nan)), 200, true},
		"gRPC raw Inf, canary route":           {canaryRoute, withRaw(f32(float32(math.Inf(1)), 0)), 200, true},
		"gRPC raw finite":                      {canaryRoute, withRaw(f32(1, 2)), 200, false},
		"gRPC raw NaN, no canary: not scanned": {plainRoute, withRaw(f32(nan)), 200, false},
	}
	for name, c := range cases {
		if got := hasNaNOutput(c.route, c.res, c.status); got != c.want {
			t.Errorf("%s: %v, want %v", name, got, c.want)
		}
	}
	if !rawHasNaN("FP64", binary.LittleEndian.AppendUint64(nil, math.Float64bits(math.NaN()))) || rawHasNaN("FP64", binary.LittleEndian.AppendUint64(nil, math.Float64bits(1))) {
		t.Error("FP64")
	}
	if !rawHasNaN("FP16", []byte{0x00, 0x7e}) || rawHasNaN("FP16", []byte{0x00, 0x3c}) || rawHasNaN("INT32", f32(nan)) {
		t.Error("FP16 / INT32")
	}
}

// TestReporterBuffersReconnectsAndRestarts: a proxy with a static config
// serves traffic while its control plane is down; its reports are kept and
// delivered once the real control plane comes up on that address, exactly
// once; a restarted proxy's reports add to them.
func TestReporterBuffersReconnectsAndRestarts(t *testing.T) {
	be := backendtest.Start(t, backendtest.Options{})
	cpAddr := closedAddr(t)
	cfg := Config{Models: []api.Model{demoModel(be, map[string]int{"v1": 100})}, NodeID: "edge-1", StatsAddr: cpAddr,
		StatsInterval: 50 * time.Millisecond, XDSBackoffMin: 20 * time.Millisecond, XDSBackoffMax: 100 * time.Millisecond}
	p := startProxy(t, cfg)
	for _, a := range load(t, inferURL(p, "recommender"), 30, 3, nil) {
		if a.status != 200 {
			t.Fatalf("answer %d %s", a.status, a.body)
		}
	}
	waitFor(t, "reports buffered while the control plane is down", func() bool {
		s := p.StatsReporterStatus()
		return s.Seq >= 3 && s.Buffered >= 3 && !s.Connected
	})

	cp, err := controlplane.New(controlplane.Config{StatePath: filepath.Join(t.TempDir(), "state.db"), APIAddr: "127.0.0.1:0", XDSAddr: cpAddr, InsecureLoopbackNoAuth: true})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := cp.EnableCanary(controlplane.CanaryOptions{Interval: time.Hour})
	if err != nil {
		cp.Close()
		t.Fatal(err)
	}
	if err := cp.Start(context.Background()); err != nil {
		cp.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { cp.Close() })
	from := time.Now().Add(-time.Minute)
	count := func() uint64 {
		s, _ := cc.Stats().Stats(context.Background(), "recommender", "v1", from, time.Now().Add(time.Minute))
		return s.Requests
	}
	waitFor(t, "the buffered reports to arrive", func() bool {
		s := p.StatsReporterStatus()
		return s.Connected && s.Buffered == 0 && count() == 30
	})
	for _, a := range load(t, inferURL(p, "recommender"), 20, 2, nil) {
		if a.status != 200 {
			t.Fatalf("answer %d", a.status)
		}
	}
	p.Close() // its last report goes out on close
	if n := count(); n != 50 {
		t.Fatalf("after the proxy closed: %d requests counted, want 50", n)
	}
	// A restart: a new boot id, seq from 1 again, counted in addition.
	p2 := startProxy(t, cfg)
	for _, a := range load(t, inferURL(p2, "recommender"), 10, 2, nil) {
		if a.status != 200 {
			t.Fatalf("answer %d", a.status)
		}
	}
	waitFor(t, "the restarted proxy's reports", func() bool { return count() == 60 })
	if len(cc.Stats().Proxies()) != 2 {
		t.Fatalf("reporting proxies %v, want the old and the new process", cc.Stats().Proxies())
	}
	time.Sleep(200 * time.Millisecond)
	if n := count(); n != 60 {
		t.Fatalf("counted %d, want 60 (no double counting)", n)
	}
}

func BenchmarkRecordStats(b *testing.B) {
	rec := newStatsRecorder()
	rec.slot("recommender", "v1")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			rec.slot("recommender", "v1").record(outcome{latency: time.Duration(1000000 + i*37), errKind: -1})
		}
	})
}

// Requests recorded while the reporter collects must not tear a report:
// the control plane refuses one whose latency buckets do not sum to its
// total (a torn snapshot used to read the total counter apart from the
// buckets, one request off), and the refused report then held up the
// whole stream (TestStory's canary saw 0 requests for 95 s).
func TestReportsConsistentUnderConcurrentRecording(t *testing.T) {
	rec := newStatsRecorder()
	r := newStatsReporter(rec, "127.0.0.1:1", "node", time.Second, 1<<20, time.Millisecond, time.Millisecond, slog.New(slog.DiscardHandler))
	s := rec.slot("m", "v1")
	var stop atomic.Bool
	var recorded [2]uint64
	var wg sync.WaitGroup
	for w := range recorded {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				s.record(outcome{latency: time.Duration(i*7+w) * time.Microsecond, errKind: -1})
				recorded[w]++
			}
		}()
	}
	for range 20000 {
		r.collect(time.Now())
	}
	stop.Store(true)
	wg.Wait()
	r.collect(time.Now())
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
	cp, err := controlplane.New(controlplane.Config{StatePath: filepath.Join(t.TempDir(), "state.db"), APIAddr: "127.0.0.1:0", XDSAddr: cpAddr, InsecureLoopbackNoAuth: true})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := cp.EnableCanary(controlplane.CanaryOptions{Interval: time.Hour})
	if err != nil {
		cp.Close()
		t.Fatal(err)
	}
	if err := cp.Start(context.Background()); err != nil {
		cp.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { cp.Close() })

	rec := newStatsRecorder()
	// Room for far more reports than the wait below lasts: the buffer
	// overflowing must not be what clears the refused one.
	r := newStatsReporter(rec, cpAddr, "edge-1", 20*time.Millisecond, 1<<20, 10*time.Millisecond, 50*time.Millisecond, slog.New(slog.DiscardHandler))
	s := rec.slot("recommender", "v1")
	for range 5 {
		s.record(outcome{latency: time.Millisecond, errKind: -1})
	}
	r.collect(time.Now())
	r.buf[0].Entries[0].Latency.Total++ // malformed: buckets sum to 5, total says 6
	for range 7 {
		s.record(outcome{latency: time.Millisecond, errKind: -1})
	}
	r.collect(time.Now())

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.run(ctx) }()
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
	s.record(outcome{latency: time.Millisecond, errKind: -1})
	waitFor(t, "a later report", func() bool { return count() == 8 })
	if st := r.Status(); st.Rejected != 1 {
		t.Fatalf("status %+v, want exactly the malformed report rejected", st)
	}
}

// TestStatsCountWhatReallyHappened: the stats stream counts, per version,
// its own failures whether or not a fallback answered (upstream
// failures by trigger), and a backup's answers on the backup (apart from
// the requests routed to it), through the reporter's deltas and the wire.
func TestStatsCountWhatReallyHappened(t *testing.T) {
	be := backendtest.Start(t, backendtest.Options{})
	dead := closedAddr(t)
	withChain := recommenderWith(be, func(m *api.Model) {
		m.Spec.Versions[0].Endpoints = []string{dead}
		m.Spec.Fallback = &api.Fallback{Chain: []string{"backup", "static"}, Backup: "lite", Static: staticScores(1)}
	})
	plain := recommenderWith(be, func(m *api.Model) {
		m.Metadata.Name = "plain"
		m.Spec.Versions[0].Endpoints = []string{dead}
	})
	p, _ := featuresProxy(t, Config{Models: []api.Model{withChain, plain}}, FeaturesConfig{})
	c := newHTTPClient()
	defer c.CloseIdleConnections()
	body, _ := featuresBody(1)
	for i := range 3 {
		if a := postFull(t, c, inferURL(p, "recommender"), body, nil); a.status != 200 || a.fallback != "backup" || a.variant != "lite" {
			t.Fatalf("request %d with v1 down: %+v", i, a)
		}
	}
	for i := range 2 {
		if a := postFull(t, c, inferURL(p, "plain"), body, nil); a.status != 503 {
			t.Fatalf("request %d to plain with v1 down: %+v %s", i, a, a.body)
		}
	}

	rec := p.stats
	r := newStatsReporter(rec, "127.0.0.1:1", "node", time.Second, 3, time.Millisecond, time.Millisecond, slog.New(slog.DiscardHandler))
	r.collect(time.Now())
	got := entriesOf(t, r.buf[0])
	v1 := got["recommender/v1"]
	if v1.Requests != 3 || v1.Fallbacks != 3 || v1.FailureCount() != 0 || v1.UpstreamFailures["connect_error"] != 3 || v1.UpstreamFailureCount() != 3 {
		t.Fatalf("v1 answered by its backup: %+v, want 3 requests, 3 fallbacks, no client-visible error, 3 connect_error failures", v1)
	}
	lite := got["recommender/lite"]
	if lite.BackupAnswers != 3 || lite.Requests != 0 || lite.UpstreamFailureCount() != 0 {
		t.Fatalf("lite as v1's backup: %+v, want 3 backup answers and no requests of its own", lite)
	}
	pv1 := got["plain/v1"]
	if pv1.Requests != 2 || pv1.FailureCount() != 2 || pv1.UpstreamFailures["connect_error"] != 2 {
		t.Fatalf("plain v1 without a chain: %+v, want 2 requests, 2 errors, 2 connect_error failures", pv1)
	}

	// The next report carries only what happened since: one more failure.
	if a := postFull(t, c, inferURL(p, "recommender"), body, nil); a.status != 200 {
		t.Fatalf("one more: %+v", a)
	}
	r.collect(time.Now())
	got = entriesOf(t, r.buf[1])
	if v1 := got["recommender/v1"]; v1.UpstreamFailures["connect_error"] != 1 || len(v1.UpstreamFailures) != 1 {
		t.Fatalf("second report v1: %+v", v1)
	}
	if lite := got["recommender/lite"]; lite.BackupAnswers != 1 {
		t.Fatalf("second report lite: %+v", lite)
	}
	if _, ok := got["plain/v1"]; ok {
		t.Fatal("an idle version is reported")
	}
}
