package controlplane

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/api/statspb"
	"github.com/switchyard-dev/switchyard/canary"
	"github.com/switchyard-dev/switchyard/controlplane/store"
)

func startCanaryCP(t *testing.T) (*ControlPlane, *CanaryController) {
	t.Helper()
	cp, err := New(Config{StatePath: filepath.Join(t.TempDir(), "state.db"), APIAddr: "127.0.0.1:0", XDSAddr: "127.0.0.1:0", Auth: testAuth(t),
		AllowAnonymousXDS: true}) // xDS authentication: xdsauth_test.go
	if err != nil {
		t.Fatal(err)
	}
	cc, err := cp.EnableCanary(CanaryOptions{Interval: time.Hour})
	if err != nil {
		cp.Close()
		t.Fatal(err)
	}
	if _, err := cp.EnableCanary(CanaryOptions{}); err == nil {
		t.Error("a second EnableCanary was accepted")
	}
	if err := cp.Start(context.Background()); err != nil {
		cp.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { cp.Close() })
	return cp, cc
}

func report(proxy, boot string, seq uint64, requests uint64, latency time.Duration) *statspb.Report {
	var st canary.Stats
	for range requests {
		st.Latency.Record(latency)
	}
	st.Requests = requests
	st.Errors = map[string]uint64{"status_5xx": 1}
	return &statspb.Report{Proxy: proxy, BootId: boot, Seq: seq, AtUnixNano: time.Now().UnixNano(),
		Entries: []*statspb.VariantStats{canary.EntryToProto(&canary.Entry{Model: "m", Version: "v1", Stats: st})}}
}

// TestStatsStreamDedupesAndCountsRestarts speaks the stats protocol over a
// real gRPC connection to the xDS listener: a resent report counts once, a
// restarted proxy (new boot id, seq from 1) counts anew, a bad report is
// rejected with InvalidArgument naming the problem.
func TestStatsStreamDedupesAndCountsRestarts(t *testing.T) {
	cp, cc := startCanaryCP(t)
	conn, err := grpc.NewClient(cp.XDSAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := statspb.NewStatsClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	send := func(reps ...*statspb.Report) []uint64 {
		t.Helper()
		s, err := client.Stream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var acks []uint64
		for _, r := range reps {
			if err := s.Send(r); err != nil {
				t.Fatal(err)
			}
			a, err := s.Recv()
			if err != nil {
				t.Fatal(err)
			}
			acks = append(acks, a.Seq)
		}
		s.CloseSend()
		return acks
	}
	from := time.Now().Add(-time.Second)
	acks := send(report("p1", "boot-a", 1, 10, time.Millisecond), report("p1", "boot-a", 2, 5, time.Millisecond),
		report("p1", "boot-a", 2, 5, time.Millisecond)) // a resend of seq 2
	if len(acks) != 3 || acks[2] != 2 {
		t.Fatalf("acks %v", acks)
	}
	// On a new stream (a reconnect), seq 1 again is still a resend; the
	// restarted process (boot-b) starts at seq 1 and counts.
	send(report("p1", "boot-a", 1, 10, time.Millisecond), report("p1", "boot-b", 1, 7, 3*time.Millisecond))
	st, _ := cc.Stats().Stats(ctx, "m", "v1", from, time.Now().Add(time.Second))
	if st.Requests != 22 || st.Errors["status_5xx"] != 3 || st.Latency.Total != 22 {
		t.Fatalf("merged stats %s, errors %v; want 22 requests (10+5+7), 3 errors", st.String(), st.Errors)
	}
	if p := cc.Stats().Proxies(); strings.Join(p, ",") != "p1/boot-a,p1/boot-b" {
		t.Fatalf("reporting proxies %v", p)
	}
	// Bad reports.
	for name, r := range map[string]*statspb.Report{
		"no boot id": {Proxy: "p2", Seq: 1},
		"seq 0":      {Proxy: "p2", BootId: "x"},
		"bad histogram": {Proxy: "p2", BootId: "x", Seq: 1, Entries: []*statspb.VariantStats{{Model: "m", Version: "v1", Requests: 1,
			Latency: &statspb.Histogram{BucketIndex: []uint32{9999}, BucketCount: []uint64{1}, Total: 1, NumBuckets: canary.NumBuckets}}}},
		"other layout": {Proxy: "p2", BootId: "x", Seq: 1, Entries: []*statspb.VariantStats{{Model: "m", Version: "v1", Latency: &statspb.Histogram{NumBuckets: 64}}}},
	} {
		s, err := client.Stream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		s.Send(r)
		_, err = s.Recv()
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
	}
	if st2, _ := cc.Stats().Stats(ctx, "m", "v1", from, time.Now().Add(time.Second)); st2.Requests != 22 {
		t.Fatalf("bad reports changed the figures: %s", st2.String())
	}
	// The stats endpoint shows them per version (viewer).
	if err := func() error {
		_, err := cp.Store().Put(ctx, func() api.Model { m := doc("m", 100, 0); m.Defaults(); return m }(), store.Precondition{}, store.Change{Subject: "t", Action: "put"})
		return err
	}(); err != nil {
		t.Fatal(err)
	}
	r := call(t, cp, "GET", "/v1/models/m/stats?window=1m", viewerToken, nil)
	var view api.ModelStatsView
	r.decode(t, &view)
	if r.code != 200 || len(view.Variants) != 2 || view.Variants[0].Version != "v1" || view.Variants[0].Requests != 22 || view.Variants[1].Requests != 0 {
		t.Fatalf("GET stats: %d %s", r.code, r.body)
	}
	if r := call(t, cp, "GET", "/v1/models/m/stats?window=forever", viewerToken, nil); r.code != 400 || !strings.Contains(string(r.body), "window") {
		t.Fatalf("bad window: %d %s", r.code, r.body)
	}
	if r := call(t, cp, "GET", "/v1/models/nope/stats", viewerToken, nil); r.code != 404 {
		t.Fatalf("unknown model: %d %s", r.code, r.body)
	}
}

func TestCanaryAPIErrors(t *testing.T) {
	cp, _ := startCanaryCP(t)
	m := doc("m", 100, 0)
	m.Defaults()
	if _, err := cp.Store().Put(context.Background(), m, store.Precondition{}, store.Change{Subject: "t", Action: "put"}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		method, path, token string
		body                any
		code                int
		want                string
	}{
		{"GET", "/v1/models/m/canary", "", nil, 401, "bearer"},
		{"GET", "/v1/models/nope/canary", viewerToken, nil, 404, "not found"},
		{"GET", "/v1/models/m/canary", viewerToken, nil, 200, "no canary: spec.canary is not set"},
		{"POST", "/v1/models/m/canary/start", viewerToken, nil, 403, "needs editor"},
		{"POST", "/v1/models/m/canary/start", editorToken, nil, 400, "version: required"},
		{"POST", "/v1/models/m/canary/start", editorToken, map[string]any{"version": "v9"}, 400, "v9"},
		{"POST", "/v1/models/m/canary/start", editorToken, map[string]any{"version": "v2", "steps": []int{50, 20}}, 400, "steps"},
		{"POST", "/v1/models/m/canary/start", editorToken, map[string]any{"version": "v2", "bogus": 1}, 400, "bogus"},
		{"POST", "/v1/models/m/canary/start", editorToken, `{"version": `, 400, "malformed JSON"},
		{"POST", "/v1/models/m/canary/start", editorToken, map[string]any{"version": "v2", "waitForAck": "5m"}, 400, "waitForAck"},
		{"POST", "/v1/models/m/canary/pause", editorToken, map[string]any{"steps": []int{100}}, 400, "start only"},
		{"POST", "/v1/models/m/canary/pause", editorToken, nil, 409, "no canary in progress"},
		{"POST", "/v1/models/m/canary/abort", editorToken, nil, 403, "needs operator"},
		{"POST", "/v1/models/m/canary/reset", operatorToken, map[string]any{"version": "v2"}, 409, "no failed or finished canary"},
		{"POST", "/v1/models/nope/canary/start", editorToken, map[string]any{"version": "v2"}, 404, "not found"},
		{"POST", "/v1/models/m/canary/start", editorToken, map[string]any{"version": "v2", "stepDuration": "1h", "waitForAck": "0s"}, 200, `"phase": "progressing"`},
		{"POST", "/v1/models/m/canary/start", editorToken, map[string]any{"version": "v2"}, 409, "already progressing"},
		{"POST", "/v1/models/m/canary/resume", editorToken, nil, 409, "resume does not apply"},
		{"POST", "/v1/models/m/canary/pause", editorToken, map[string]any{"reason": "weekend"}, 200, `"phase": "paused"`},
		{"GET", "/v1/models/m/canary", viewerToken, nil, 200, "paused: weekend"},
		{"POST", "/v1/models/m/canary/resume", editorToken, nil, 200, `"phase": "progressing"`},
	}
	for _, c := range cases {
		r := call(t, cp, c.method, c.path, c.token, c.body)
		if r.code != c.code || !strings.Contains(string(r.body), c.want) {
			t.Errorf("%s %s %v: %d %s; want %d containing %q", c.method, c.path, c.body, r.code, r.body, c.code, c.want)
		}
	}
	// Pause and resume are in the audit log with their subject.
	entries, err := cp.Store().Audit(context.Background(), store.AuditQuery{Model: "m"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Action+" by "+e.Subject)
	}
	if want := "canary-resume by eddie,canary-pause by eddie,canary-start by eddie,put by t"; strings.Join(got, ",") != want {
		t.Fatalf("audit %v, want %s", got, want)
	}
}

func TestRollbackTarget(t *testing.T) {
	rec := func(rev int64, action string, canaryVersion string, w map[string]int) api.Record {
		m := api.Model{Spec: api.Spec{Traffic: api.Traffic{Weights: w}}}
		if canaryVersion != "" {
			m.Spec.Canary = &api.Canary{Version: canaryVersion}
		}
		return api.Record{Revision: rev, Action: action, Model: m}
	}
	v1 := map[string]int{"v1": 100}
	cases := map[string]struct {
		hist    []api.Record // newest first
		failed  []string     // the store's failed marks
		want    int64        // 0: none
		skipped int
	}{
		"plain previous": {hist: []api.Record{rec(3, "weights", "", map[string]int{"v1": 50, "v2": 50}), rec(2, "put", "", v1)}, want: 2},
		"skips mid-canary revisions": {hist: []api.Record{
			rec(5, ActionCanaryPromote, "v2", map[string]int{"v1": 50, "v2": 50}),
			rec(4, ActionCanaryPause, "v2", map[string]int{"v1": 80, "v2": 20}),
			rec(3, ActionCanaryStart, "v2", map[string]int{"v1": 80, "v2": 20}),
			rec(2, "put", "v2", v1)}, want: 2, skipped: 2},
		"skips splits with a failed version": {hist: []api.Record{
			rec(6, ActionCanaryRollback, "v3", v1),
			rec(5, "put", "v3", map[string]int{"v1": 90, "v3": 10}),
			rec(4, "put", "", v1)}, failed: []string{"v3"}, want: 4, skipped: 1},
		// Issue 15: a canary aborted by a weight change left no
		// canary-rollback revision; the mark alone says v2 failed.
		"a failed mark without a rollback revision": {hist: []api.Record{
			rec(5, "weights", "v2", map[string]int{"v1": 50, "v2": 50}),
			rec(4, ActionCanaryStart, "v2", map[string]int{"v1": 80, "v2": 20}),
			rec(3, "put", "v2", map[string]int{"v1": 90, "v2": 10}),
			rec(2, "put", "", v1)}, failed: []string{"v2"}, want: 2, skipped: 2},
		"a cleared mark": {hist: []api.Record{
			rec(7, "weights", "v3", map[string]int{"v1": 50, "v3": 50}),
			rec(6, ActionCanaryReset, "v3", map[string]int{"v1": 90, "v3": 10}),
			rec(5, "put", "v3", map[string]int{"v1": 90, "v3": 10})}, want: 6},
		"promoted split is healthy": {hist: []api.Record{
			rec(8, "weights", "v2", map[string]int{"v2": 50, "v3": 50}),
			rec(7, ActionCanaryPromoted, "v2", map[string]int{"v2": 100})}, want: 7},
		"deletion skipped": {hist: []api.Record{rec(3, "put", "", v1), {Revision: 2, Deleted: true}, rec(1, "put", "", v1)}, want: 1, skipped: 1},
		"nothing healthy":  {hist: []api.Record{rec(3, "put", "", v1), rec(2, ActionCanaryStart, "v2", v1)}, skipped: 1},
		"only the head":    {hist: []api.Record{rec(3, "put", "", v1)}},
		"empty history":    {},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			got, skipped := RollbackTarget(c.hist, c.failed)
			var rev int64
			if got != nil {
				rev = got.Revision
			}
			if rev != c.want || len(skipped) != c.skipped {
				t.Fatalf("target %d, skipped %+v; want %d, %d skipped", rev, skipped, c.want, c.skipped)
			}
		})
	}
}

func TestSameSplit(t *testing.T) {
	for _, c := range []struct {
		a, b map[string]int
		want bool
	}{
		{map[string]int{"v1": 80, "v2": 20}, map[string]int{"v1": 4, "v2": 1}, true},
		{map[string]int{"v1": 100}, map[string]int{"v1": 100, "v2": 0}, true},
		{map[string]int{"v1": 80, "v2": 20}, map[string]int{"v1": 50, "v2": 50}, false},
		{map[string]int{"v1": 100}, map[string]int{"v2": 100}, false},
		{nil, map[string]int{}, true},
	} {
		if got := sameSplit(c.a, c.b); got != c.want {
			t.Errorf("sameSplit(%v, %v) = %v", c.a, c.b, got)
		}
	}
}
