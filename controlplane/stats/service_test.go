package stats_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/api/statspb"
	"github.com/switchyard-dev/switchyard/canary"
	"github.com/switchyard-dev/switchyard/controlplane"
	"github.com/switchyard-dev/switchyard/controlplane/cptest"
	"github.com/switchyard-dev/switchyard/controlplane/store"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestStatsStreamDedupesAndCountsRestarts speaks the stats protocol over a
// real gRPC connection to the xDS listener: a resent report counts once, a
// restarted proxy (new boot id, seq from 1) counts anew, a bad report is
// rejected with InvalidArgument naming the problem.
func TestStatsStreamDedupesAndCountsRestarts(t *testing.T) {
	cp := cptest.Start(t, controlplane.Config{AllowAnonymousXDS: true}, &controlplane.CanaryOptions{Interval: time.Hour})
	cc := cp.Canary
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
	acks := send(cptest.Report("p1", "boot-a", 1, 10, time.Millisecond), cptest.Report("p1", "boot-a", 2, 5, time.Millisecond),
		cptest.Report("p1", "boot-a", 2, 5, time.Millisecond)) // a resend of seq 2
	if len(acks) != 3 || acks[2] != 2 {
		t.Fatalf("acks %v", acks)
	}
	// On a new stream (a reconnect), seq 1 again is still a resend; the
	// restarted process (boot-b) starts at seq 1 and counts.
	send(cptest.Report("p1", "boot-a", 1, 10, time.Millisecond), cptest.Report("p1", "boot-b", 1, 7, 3*time.Millisecond))
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
		_, err := cp.Store().Put(ctx, func() api.Model { m := cptest.Doc("m", 100, 0); m.Defaults(); return m }(), store.Precondition{}, store.Change{Subject: "t", Action: "put"})
		return err
	}(); err != nil {
		t.Fatal(err)
	}
	r := cptest.Call(t, cp, "GET", "/v1/models/m/stats?window=1m", cptest.ViewerToken, nil)
	var view api.ModelStatsView
	r.Decode(t, &view)
	if r.Code != 200 || len(view.Variants) != 2 || view.Variants[0].Version != "v1" || view.Variants[0].Requests != 22 || view.Variants[1].Requests != 0 {
		t.Fatalf("GET stats: %d %s", r.Code, r.Body)
	}
	if r := cptest.Call(t, cp, "GET", "/v1/models/m/stats?window=forever", cptest.ViewerToken, nil); r.Code != 400 || !strings.Contains(string(r.Body), "window") {
		t.Fatalf("bad window: %d %s", r.Code, r.Body)
	}
	if r := cptest.Call(t, cp, "GET", "/v1/models/nope/stats", cptest.ViewerToken, nil); r.Code != 404 {
		t.Fatalf("unknown model: %d %s", r.Code, r.Body)
	}
}
