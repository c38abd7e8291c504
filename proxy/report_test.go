package proxy

import (
	"context"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/api/statspb"
	"github.com/switchyard-dev/switchyard/canary"
	"github.com/switchyard-dev/switchyard/controlplane"
	"github.com/switchyard-dev/switchyard/controlplane/cptest"
	"github.com/switchyard-dev/switchyard/inference-backend/backendtest"
	"github.com/switchyard-dev/switchyard/proxy/report"
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

	cc := cptest.Start(t, controlplane.Config{XDSAddr: cpAddr, InsecureLoopbackNoAuth: true}, &controlplane.CanaryOptions{Interval: time.Hour}).Canary
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

	rec := p.pl.Stats()
	r := report.New(rec, report.Options{Addr: "127.0.0.1:1", Node: "node", MaxBuffered: 3})
	r.Collect(time.Now())
	got := entriesOf(t, r.Pending(0)[0])
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
	r.Collect(time.Now())
	got = entriesOf(t, r.Pending(1)[0])
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
