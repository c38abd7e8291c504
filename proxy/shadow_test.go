package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/switchyard-dev/switchyard/controlplane"
	"github.com/switchyard-dev/switchyard/inference-backend/backendtest"
	"github.com/switchyard-dev/switchyard/inference-backend/demomodels"
	"github.com/switchyard-dev/switchyard/oip"
	pb "github.com/switchyard-dev/switchyard/oip/inferencepb"
	"github.com/switchyard-dev/switchyard/routing"
	"github.com/switchyard-dev/switchyard/shadow"
)

func topK(scores []float32, k int) []int {
	idx := make([]int, len(scores))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int {
		switch {
		case scores[a] > scores[b]:
			return -1
		case scores[a] < scores[b]:
			return 1
		}
		return 0
	})
	return idx[:k]
}

func overlap(a, b []int) float64 {
	n := 0
	for _, x := range a {
		if slices.Contains(b, x) {
			n++
		}
	}
	return float64(n) / float64(len(a))
}

func grpcInfer(t testing.TB, gc pb.GRPCInferenceServiceClient, model string, row []float32) *pb.ModelInferResponse {
	t.Helper()
	resp, err := gc.ModelInfer(context.Background(), &pb.ModelInferRequest{ModelName: model, Inputs: []*pb.ModelInferRequest_InferInputTensor{{
		Name: "features", Datatype: "FP32", Shape: []int64{1, 32}, Contents: &pb.InferTensorContents{Fp32Contents: row}}}})
	if err != nil {
		t.Fatalf("gRPC infer %s: %v", model, err)
	}
	return resp
}

func shadowReport(t testing.TB, p *Proxy, model string) ShadowReportResponse {
	t.Helper()
	var r ShadowReportResponse
	if code := getJSON(t, "http://"+p.AdminAddr()+"/shadow/report?model="+model+"&window=5m", &r); code != 200 {
		t.Fatalf("admin shadow report: %d", code)
	}
	return r
}

// TestShadowV2TopKAgreement: v2 shadows v1 for every request (REST and
// gRPC); the proxy's top-10 figures equal an offline comparison of the two
// models on the same inputs; the shadow calls carry x-switchyard-shadow;
// the noise floor (v1 against itself) agrees fully; disagreements are all
// in the record file. The same with batched shadow calls: fewer calls of
// v2, the same figures.
func TestShadowV2TopKAgreement(t *testing.T) {
	batch := &routing.ShadowBatch{MaxRows: 16, MaxDelay: routing.Duration(20 * time.Millisecond)}
	t.Run("one call per mirror", func(t *testing.T) { testShadowV2TopKAgreement(t, nil, ShadowInline) })
	t.Run("batched", func(t *testing.T) { testShadowV2TopKAgreement(t, batch, ShadowInline) })
	// The same figures from the shadow agent (a child process: this test
	// binary, re-executed; see shadowagent_test.go).
	t.Run("agent", func(t *testing.T) { testShadowV2TopKAgreement(t, nil, ShadowAgent) })
	t.Run("agent batched", func(t *testing.T) { testShadowV2TopKAgreement(t, batch, ShadowAgent) })
}

func testShadowV2TopKAgreement(t *testing.T, batch *routing.ShadowBatch, process string) {
	be := backendtest.Start(t, backendtest.Options{})
	sh := startShim(t, be.HTTPAddr)
	m := recommenderWith(be, func(m *routing.Model) {
		m.Spec.Versions[1].Endpoints = []string{sh.addr} // v2 behind a counting shim
		m.Spec.Shadow = &routing.Shadow{Version: "v2", Percent: 100, NoiseFloorPercent: 50,
			Compare: routing.Compare{Mode: routing.CompareTopK, K: 10}, Batch: batch}
	})
	dir := t.TempDir()
	p, reg := featuresProxy(t, Config{Models: []routing.Model{m}}, FeaturesConfig{ShadowDir: dir, ShadowRecordAgreements: 0.5, ShadowProcess: process})
	if got := featuresOf(p).agent != nil; got != (process == ShadowAgent) {
		t.Fatalf("shadow agent running: %v, process %q", got, process)
	}
	c := newHTTPClient()
	defer c.CloseIdleConnections()
	conn, err := grpc.NewClient(p.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	gc := pb.NewGRPCInferenceServiceClient(conn)
	w1, _ := demomodels.Weights(demomodels.V1)
	w2, _ := demomodels.Weights(demomodels.V2)
	const n, viaGRPC = 300, 40
	var sumOverlap, sumRank float64
	agreed := 0
	for i := range n {
		body, row := featuresBody(uint64(100 + i))
		if i < viaGRPC {
			grpcInfer(t, gc, "recommender", row)
		} else if a := postFull(t, c, inferURL(p, "recommender"), body, nil); a.status != 200 || a.variant != "v1" {
			t.Fatalf("request %d: %+v", i, a)
		}
		t1, t2 := topK(w1.Eval(row), 10), topK(w2.Eval(row), 10)
		o := overlap(t1, t2)
		sumOverlap += o
		same := 0
		for r := range t1 {
			if t1[r] == t2[r] {
				same++
			}
		}
		sumRank += float64(same) / 10
		if o >= 0.8 {
			agreed++
		}
	}
	compared := func(kind string) float64 {
		return metricSum(t, reg, "switchyard_shadow_compared_total", map[string]string{"model": "recommender", "kind": kind})
	}
	waitFor(t, "every mirrored request compared", func() bool { return compared(shadow.KindShadow) == n })
	// The canary's shadow-disagreement gate got every comparison.
	waitFor(t, "every comparison counted for the canary", func() bool {
		c, _ := canaryShadowCounts(p, "recommender", "v2")
		return c == n
	})
	rep := shadowReport(t, p, "recommender")
	fig := rep.Report.Shadow
	if fig.Compared != n || rep.ShadowVersion != "v2" {
		t.Fatalf("report: compared %v of %d, shadow %q", fig.Compared, n, rep.ShadowVersion)
	}
	mf := fig.ByMode[shadow.TopK]
	wantOverlap, wantRate := sumOverlap/n, float64(agreed)/n
	if d := mf.MeanTopKOverlap - wantOverlap; d > 0.01 || d < -0.01 {
		t.Errorf("mean top-10 overlap %.4f, offline %.4f", mf.MeanTopKOverlap, wantOverlap)
	}
	if d := fig.AgreementRate - wantRate; d > 0.02 || d < -0.02 {
		t.Errorf("agreement rate %.4f, offline %.4f", fig.AgreementRate, wantRate)
	}
	if d := mf.MeanRankAgreement - sumRank/n; d > 0.01 || d < -0.01 {
		t.Errorf("mean rank agreement %.4f, offline %.4f", mf.MeanRankAgreement, sumRank/n)
	}
	if wantOverlap == 1 || sumRank/n == 1 {
		t.Fatalf("offline overlap %v, rank agreement %v: the test needs inputs where v1 and v2 differ", wantOverlap, sumRank/n)
	}
	t.Logf("top-10 overlap %.4f (offline %.4f), rank agreement %.4f (offline %.4f), agreement rate %.4f (offline %.4f)",
		mf.MeanTopKOverlap, wantOverlap, mf.MeanRankAgreement, sumRank/n, fig.AgreementRate, wantRate)
	switch got := sh.shadowed.Load(); {
	case got != sh.calls.Load():
		t.Fatalf("shadow calls at v2: %d marked of %d", got, sh.calls.Load())
	case batch == nil && got != n:
		t.Fatalf("shadow calls at v2: %d, want one per mirrored request (%d)", got, n)
	case batch != nil && got >= n:
		t.Fatalf("batched shadow calls at v2: %d for %d mirrored requests, want fewer", got, n)
	case batch != nil:
		t.Logf("%d batched shadow calls for %d mirrored requests", got, n)
	}
	nf := rep.Report.NoiseFloor
	if nf.Compared == 0 || nf.AgreementRate != 1 {
		t.Fatalf("noise floor: %+v", nf)
	}
	if got := metricSum(t, reg, "switchyard_shadow_latency_seconds", map[string]string{"model": "recommender", "side": "shadow"}); got < n {
		t.Fatalf("shadow latency observations %v", got)
	}
	// Every disagreement is in the record file (after the proxy flushed it).
	p.Close()
	recs, _, err := shadow.ReadRecords(filepath.Join(dir, "recommender.jsonl"), time.Time{}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	disagree := 0
	for _, r := range recs {
		if r.Kind == shadow.KindShadow && !r.Agree {
			disagree++
			if r.InputDigest == "" || r.ShadowVersion != "v2" || r.PrimaryVersion != "v1" || len(r.Diff) != 1 {
				t.Fatalf("record %+v", r)
			}
		}
	}
	if want := n - int(fig.Agreed); disagree != want {
		t.Fatalf("%d disagreements in the record file, want %d", disagree, want)
	}
	if _, d := canaryShadowCounts(p, "recommender", "v2"); d != uint64(n-int(fig.Agreed)) {
		t.Fatalf("canary gate: %d disagreements, the report %d", d, n-int(fig.Agreed))
	}
}

// canaryShadowCounts is what the proxy's stats hold for the canary's
// shadow gate: comparisons and disagreements of (model, version).
func canaryShadowCounts(p *Proxy, model, version string) (compared, disagreed uint64) {
	slot := p.stats.slot(model, version)
	for i := range slot.shards {
		compared += slot.shards[i].shadowCompared.Load()
		disagreed += slot.shards[i].shadowDiff.Load()
	}
	return compared, disagreed
}

// featuresOf finds the proxy's features extension.
func featuresOf(p *Proxy) *features {
	for _, e := range p.cfg.Extensions {
		if f, ok := e.(*features); ok {
			return f
		}
	}
	return nil
}

// TestShadowV3NaN: v3 (NaN for some inputs) as the shadow, over gRPC
// (NaN in the answer) and REST (the backend's 500 naming the NaN output):
// every NaN input shows up as a shadow NaN and a disagreement.
func TestShadowV3NaN(t *testing.T) {
	be := backendtest.Start(t, backendtest.Options{})
	mk := func(name string, v3 routing.Version) routing.Model {
		return recommenderWith(be, func(m *routing.Model) {
			m.Metadata.Name = name
			m.Spec.Versions[2] = v3
			m.Spec.Shadow = &routing.Shadow{Version: "v3", Percent: 100, Compare: routing.Compare{Mode: routing.CompareTopK}}
		})
	}
	models := []routing.Model{
		mk("rec-grpc", routing.Version{Name: "v3", Endpoints: []string{be.GRPCAddr}, Protocol: routing.ProtocolGRPC, BackendModel: "recommender-v3"}),
		mk("rec-rest", routing.Version{Name: "v3", Endpoints: []string{be.HTTPAddr}, BackendModel: "recommender-v3"}),
	}
	p, reg := featuresProxy(t, Config{Models: models}, FeaturesConfig{})
	c := newHTTPClient()
	defer c.CloseIdleConnections()
	const n = 64
	nan := 0
	for i := range n {
		body, row := featuresBody(uint64(i))
		if demomodels.NaNRule(row) {
			nan++
		}
		for _, m := range models {
			if a := postFull(t, c, inferURL(p, m.Metadata.Name), body, nil); a.status != 200 || a.variant != "v1" {
				t.Fatalf("%s request %d: %+v", m.Metadata.Name, i, a)
			}
		}
	}
	if nan == 0 {
		t.Fatal("no NaN input among the seeds")
	}
	for _, m := range models {
		name := m.Metadata.Name
		waitFor(t, name+" compared", func() bool {
			return metricSum(t, reg, "switchyard_shadow_compared_total", map[string]string{"model": name}) == n
		})
		fig := shadowReport(t, p, name).Report.Shadow
		if fig.ShadowNaN != float64(nan) || fig.Compared-fig.Agreed < float64(nan) || fig.ShadowErrors != 0 {
			t.Fatalf("%s: shadow NaN %v (want %d), disagreements %v, shadow errors %v", name, fig.ShadowNaN, nan, fig.Compared-fig.Agreed, fig.ShadowErrors)
		}
		if got := metricSum(t, reg, "switchyard_shadow_nan_total", map[string]string{"model": name, "side": "shadow"}); got != float64(nan) {
			t.Fatalf("%s: switchyard_shadow_nan_total %v, want %d", name, got, nan)
		}
	}
}

// TestShadowSlowOrDeadChangesNothing: a shadow that hangs or is down does
// not change what clients get; a full queue drops and counts.
func TestShadowSlowOrDeadChangesNothing(t *testing.T) {
	be := backendtest.Start(t, backendtest.Options{})
	plain := recommenderWith(be, func(m *routing.Model) { m.Metadata.Name = "rec-plain" })
	slow := recommenderWith(be, func(m *routing.Model) {
		m.Metadata.Name = "rec-slow"
		m.Spec.Versions[1].Endpoints = []string{blackhole(t)}
		m.Spec.Shadow = &routing.Shadow{Version: "v2", Percent: 100, QueueSize: 2, Workers: 1, Timeout: routing.Duration(200 * time.Millisecond)}
	})
	dead := recommenderWith(be, func(m *routing.Model) {
		m.Metadata.Name = "rec-dead"
		m.Spec.Versions[1].Endpoints = []string{closedAddr(t)}
		m.Spec.Shadow = &routing.Shadow{Version: "v2", Percent: 100}
	})
	p, reg := featuresProxy(t, Config{Models: []routing.Model{plain, slow, dead}}, FeaturesConfig{})
	c := newHTTPClient()
	defer c.CloseIdleConnections()
	for i := range 100 {
		body, _ := featuresBody(uint64(i))
		want := postFull(t, c, inferURL(p, "rec-plain"), body, nil)
		for _, name := range []string{"rec-slow", "rec-dead"} {
			a := postFull(t, c, inferURL(p, name), body, nil)
			if a.status != want.status || a.variant != want.variant || !bytes.Equal(a.body, want.body) {
				t.Fatalf("%s request %d: %d %q, want %d %q as without shadow", name, i, a.status, a.variant, want.status, want.variant)
			}
		}
	}
	if got := metricSum(t, reg, "switchyard_shadow_dropped_total", map[string]string{"model": "rec-slow", "reason": "queue_full"}); got == 0 {
		t.Fatal("full queue: no drop counted")
	}
	waitFor(t, "dead shadow errors counted", func() bool {
		return metricSum(t, reg, "switchyard_shadow_errors_total", map[string]string{"model": "rec-dead", "side": "shadow"}) == 100
	})
	if fig := shadowReport(t, p, "rec-dead").Report.Shadow; fig.ShadowErrors != 100 || fig.ShadowErrorRate != 1 {
		t.Fatalf("dead shadow report: %+v", fig)
	}
}

// TestShadowReportThroughControlPlane: GET /v1/models/{name}/shadow/report
// merges the comparisons of every connected proxy.
func TestShadowReportThroughControlPlane(t *testing.T) {
	be := backendtest.Start(t, backendtest.Options{})
	dir := t.TempDir()
	cp, err := controlplane.New(controlplane.Config{StatePath: filepath.Join(dir, "state.db"), APIAddr: "127.0.0.1:0",
		XDSAddr: "127.0.0.1:0", InsecureLoopbackNoAuth: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cp.Close() })
	putModel(t, cp, recommenderWith(be, func(m *routing.Model) {
		m.Spec.Shadow = &routing.Shadow{Version: "v2", Percent: 100, Compare: routing.Compare{Mode: routing.CompareTopK}}
	}))
	c := newHTTPClient()
	defer c.CloseIdleConnections()
	const per = 30
	for i := range 2 {
		p, reg := featuresProxy(t, Config{XDSAddr: cp.XDSAddr(), NodeID: fmt.Sprintf("proxy-%d", i),
			XDSBackoffMin: 20 * time.Millisecond, XDSBackoffMax: 200 * time.Millisecond}, FeaturesConfig{})
		waitFor(t, "the configuration", func() bool { return p.Route("recommender") != nil })
		for j := range per {
			body, _ := featuresBody(uint64(1000*i + j))
			if a := postFull(t, c, inferURL(p, "recommender"), body, nil); a.status != 200 {
				t.Fatalf("proxy %d request %d: %+v", i, j, a)
			}
		}
		waitFor(t, "compared", func() bool {
			return metricSum(t, reg, "switchyard_shadow_compared_total", map[string]string{"model": "recommender"}) == per
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cp.Tracker().WaitConnected(ctx, 2); err != nil {
		t.Fatal(err)
	}
	resp, err := c.Get(cp.APIURL() + "/v1/models/recommender/shadow/report?window=5m")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("report: %d %s", resp.StatusCode, b)
	}
	var rep controlplane.ShadowReportResponse
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Shadow.Compared != 2*per || len(rep.Proxies) != 2 || len(rep.Missing) != 0 || rep.ShadowVersion != "v2" {
		t.Fatalf("merged report: compared %v, proxies %+v, missing %v\n%s", rep.Shadow.Compared, rep.Proxies, rep.Missing, b)
	}
	for _, pr := range rep.Proxies {
		if pr.Records != per || pr.Admin == "" {
			t.Fatalf("proxy part %+v", pr)
		}
	}
	// Bad window: a clear 400.
	resp, err = c.Get(cp.APIURL() + "/v1/models/recommender/shadow/report?window=forever")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("bad window: %d", resp.StatusCode)
	}
}

// TestShadowRecordsKeepTheirOwnData: the mirror copies requests and
// answers into pooled buffers and reads shadow answers into pooled
// buffers, reused from mirror to mirror. The ring's records fill their
// input digest and output summaries lazily, when read: read after every
// mirror is done (the buffers reused many times over), each record still
// shows its own request's digest, the primary answer its client got, and
// the shadow's answer to that input.
func TestShadowRecordsKeepTheirOwnData(t *testing.T) {
	t.Run("one call per mirror", func(t *testing.T) { testShadowRecordsKeepTheirOwnData(t, nil) })
	t.Run("batched", func(t *testing.T) {
		testShadowRecordsKeepTheirOwnData(t, &routing.ShadowBatch{MaxRows: 8, MaxDelay: routing.Duration(5 * time.Millisecond)})
	})
}

func testShadowRecordsKeepTheirOwnData(t *testing.T, batch *routing.ShadowBatch) {
	be := backendtest.Start(t, backendtest.Options{})
	m := recommenderWith(be, func(m *routing.Model) {
		m.Spec.Shadow = &routing.Shadow{Version: "v2", Percent: 100, Workers: 2, Batch: batch,
			Compare: routing.Compare{Mode: routing.CompareTopK, K: 10}}
	})
	p, reg := featuresProxy(t, Config{Models: []routing.Model{m}}, FeaturesConfig{})
	const n, clients = 120, 4
	bodies, answers := make([][]byte, n), make([][]byte, n)
	for i := range bodies {
		bodies[i], _ = featuresBody(uint64(5000 + i))
	}
	c := newHTTPClient()
	defer c.CloseIdleConnections()
	errs := make(chan error, clients)
	for k := range clients {
		go func() {
			for i := k; i < n; i += clients {
				a := postFull(t, c, inferURL(p, "recommender"), bodies[i], nil)
				if a.status != 200 {
					errs <- fmt.Errorf("request %d: %d %s", i, a.status, a.body)
					return
				}
				answers[i] = a.body
			}
			errs <- nil
		}()
	}
	for range clients {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "every mirrored request compared", func() bool {
		return metricSum(t, reg, "switchyard_shadow_compared_total", map[string]string{"model": "recommender"}) == n
	})
	var recs ShadowRecordsResponse
	if code := getJSON(t, "http://"+p.AdminAddr()+"/shadow/records?model=recommender&window=5m", &recs); code != 200 {
		t.Fatalf("admin shadow records: %d", code)
	}
	byDigest := map[string]shadow.Record{}
	for _, r := range recs.Records {
		byDigest[r.InputDigest] = r
	}
	if len(recs.Records) != n || len(byDigest) != n {
		t.Fatalf("%d records with %d distinct input digests, want %d", len(recs.Records), len(byDigest), n)
	}
	for i := range n {
		req, err := oip.DecodeInferRequest(bodies[i], 0)
		if err != nil {
			t.Fatal(err)
		}
		rec, ok := byDigest[shadow.InputDigest(req)]
		if !ok {
			t.Fatalf("request %d: no record with its input digest", i)
		}
		primary, err := oip.DecodeInferResponse(answers[i], 0)
		if err != nil {
			t.Fatal(err)
		}
		if want := shadow.Summarise(primary); !reflect.DeepEqual(rec.Primary.Outputs, want) {
			t.Fatalf("request %d: record's primary outputs %+v, the client got %+v", i, rec.Primary.Outputs, want)
		}
		// The shadow's own answer to this input, asked directly.
		direct := postFull(t, c, "http://"+be.HTTPAddr+"/v2/models/recommender-v2/infer", bodies[i], nil)
		sresp, err := oip.DecodeInferResponse(direct.body, 0)
		if err != nil {
			t.Fatalf("v2 directly: %v (%d %s)", err, direct.status, direct.body)
		}
		want := shadow.Summarise(sresp)
		got := rec.Shadow.Outputs
		if len(got) != 1 || len(want) != 1 || len(got[0].Top) != 1 || len(want[0].Top) != 1 {
			t.Fatalf("request %d: record's shadow outputs %+v, v2 answers %+v", i, got, want)
		}
		// Batched calls may round the scores differently in the last bit,
		// so near ties may swap; another request's answer would share
		// about one index in ten.
		if o := overlap(got[0].Top[0], want[0].Top[0]); o < 0.8 {
			t.Fatalf("request %d: record's shadow top-10 %v, v2 answers %v (overlap %.1f)", i, got[0].Top[0], want[0].Top[0], o)
		}
	}
}
