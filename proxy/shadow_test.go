package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/canary"
	"github.com/switchyard-dev/switchyard/controlplane"
	"github.com/switchyard-dev/switchyard/controlplane/cptest"
	"github.com/switchyard-dev/switchyard/inference-backend/backendtest"
	"github.com/switchyard-dev/switchyard/inference-backend/demomodels"
	"github.com/switchyard-dev/switchyard/oip"
	pb "github.com/switchyard-dev/switchyard/oip/inferencepb"
	"github.com/switchyard-dev/switchyard/proxy/pipeline"
	"github.com/switchyard-dev/switchyard/shadow"
	"github.com/switchyard-dev/switchyard/shadow/agent"
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

func shadowReport(t testing.TB, p *Proxy, model string) pipeline.ShadowReportResponse {
	t.Helper()
	var r pipeline.ShadowReportResponse
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
// v2, the same figures. The same figures from the shadow agent, over the
// pairs it compared: at SCHED_IDLE it may fall behind on a busy machine,
// by design, so there the test checks its books (each mirror compared or
// dropped with its reason counted, never more) and the figures of what it
// compared, not that it finished (see shadowagent_test.go).
func TestShadowV2TopKAgreement(t *testing.T) {
	batch := &api.ShadowBatch{MaxRows: 16, MaxDelay: api.Duration(20 * time.Millisecond)}
	t.Run("one call per mirror", func(t *testing.T) { testShadowV2TopKAgreement(t, nil, ShadowInline) })
	t.Run("batched", func(t *testing.T) { testShadowV2TopKAgreement(t, batch, ShadowInline) })
	// The default: the shadow agent, a child process (this test binary,
	// re-executed; see shadowagent_test.go).
	t.Run("agent", func(t *testing.T) { testShadowV2TopKAgreement(t, nil, "") })
	t.Run("agent batched", func(t *testing.T) { testShadowV2TopKAgreement(t, batch, "") })
}

// topKPair is v1 against v2 on one input, computed offline: top-10
// overlap and rank agreement.
type topKPair struct{ overlap, rank float64 }

// topKFigures are the figures over a set of pairs.
type topKFigures struct{ overlap, rank, agreement float64 }

func figuresOf(pairs []topKPair) topKFigures {
	var f topKFigures
	for _, p := range pairs {
		f.overlap += p.overlap
		f.rank += p.rank
		if p.overlap >= 0.8 {
			f.agreement++
		}
	}
	n := float64(len(pairs))
	return topKFigures{f.overlap / n, f.rank / n, f.agreement / n}
}

// near reports figures that agree within the tolerances of batched shadow
// calls (their scores may round differently in the last bit, so near
// ties may swap).
func (f topKFigures) near(g topKFigures) bool {
	return math.Abs(f.overlap-g.overlap) <= 0.01 && math.Abs(f.rank-g.rank) <= 0.01 && math.Abs(f.agreement-g.agreement) <= 0.02
}

func rowDigest(row []float32) string {
	return shadow.InputDigest(&oip.InferRequest{Inputs: []oip.Tensor{oip.NewTensor("features", []int64{1, 32}, row)}})
}

func testShadowV2TopKAgreement(t *testing.T, batch *api.ShadowBatch, process string) {
	be := backendtest.Start(t, backendtest.Options{})
	sh := startShim(t, be.HTTPAddr)
	m := recommenderWith(be, func(m *api.Model) {
		m.Spec.Versions[1].Endpoints = []string{sh.addr} // v2 behind a counting shim
		m.Spec.Shadow = &api.Shadow{Version: "v2", Percent: 100, NoiseFloorPercent: 50,
			Compare: api.Compare{Mode: api.CompareTopK, K: 10}, Batch: batch}
	})
	dir := t.TempDir()
	p, reg := agentProxy(t, Config{Models: []api.Model{m}}, FeaturesConfig{ShadowDir: dir, ShadowRecordAgreements: 0.5, ShadowProcess: process})
	ag := p.pl.ShadowAgent()
	if (ag != nil) != (process != ShadowInline) {
		t.Fatalf("shadow agent running: %v, process %q", ag != nil, process)
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
	offline := map[string]topKPair{} // by input digest
	all := make([]topKPair, 0, n)
	for i := range n {
		body, row := featuresBody(uint64(100 + i))
		if i < viaGRPC {
			grpcInfer(t, gc, "recommender", row)
		} else if a := postFull(t, c, inferURL(p, "recommender"), body, nil); a.status != 200 || a.variant != "v1" {
			t.Fatalf("request %d: %+v", i, a)
		}
		t1, t2 := topK(w1.Eval(row), 10), topK(w2.Eval(row), 10)
		same := 0
		for r := range t1 {
			if t1[r] == t2[r] {
				same++
			}
		}
		pr := topKPair{overlap(t1, t2), float64(same) / 10}
		offline[rowDigest(row)] = pr
		all = append(all, pr)
	}
	if want := figuresOf(all); want.overlap == 1 || want.rank == 1 {
		t.Fatalf("offline overlap %v, rank agreement %v: the test needs inputs where v1 and v2 differ", want.overlap, want.rank)
	}

	// The books: every mirror compared, or dropped with its reason. In
	// the proxy's process nothing is dropped (300 mirrors, a queue of
	// 1024); the agent may drop what its hand-off or queue cannot hold.
	var books shadowBooks
	settled := func() bool {
		books = readShadowBooks(t, reg, "recommender")
		checkShadowBooks(t, books, n, agent.DropHandoffFull, "queue_full")
		return books.settled() == n
	}
	closed := true
	if ag == nil {
		waitFor(t, "every mirrored request compared", settled)
		if books.compared != n {
			t.Fatalf("inline: %v compared, dropped %v", books.compared, books.dropped)
		}
	} else {
		waitHandoff(t, ag, reg, "recommender", n)
		closed = awaitAgent(t, ag, "every mirror compared or dropped", 15*time.Second, settled)
	}
	t.Logf("books: %v compared, dropped %v, of %d mirrors (closed: %v)", books.compared, books.dropped, n, closed)

	// The figures over the pairs compared: the records (one per pair, in
	// the ring) against the offline figures of the same inputs. A shadow
	// call may time out (its answer waited for a busy CPU): a pair with a
	// shadow error, no figures, and a disagreement by definition.
	var recs pipeline.ShadowRecordsResponse
	haveRecs := true
	if code := getJSON(t, "http://"+p.AdminAddr()+"/shadow/records?model=recommender&window=5m", &recs); code != 200 {
		if ag == nil {
			t.Fatalf("admin shadow records: %d", code)
		}
		t.Logf("shadow agent did not answer for its records (HTTP %d; by design a starved agent's answers may time out): figures left unchecked", code)
		haveRecs = false
	}
	var got, want []topKPair
	compared, disagreed, timedOut, seen := 0, 0, 0, map[string]bool{}
	for _, r := range recs.Records {
		if r.Kind != shadow.KindShadow {
			continue
		}
		pr, ok := offline[r.InputDigest]
		if !ok || seen[r.InputDigest] || r.ShadowVersion != "v2" || r.PrimaryVersion != "v1" {
			t.Fatalf("record (one of ours: %v, seen before: %v) %+v", ok, seen[r.InputDigest], r)
		}
		seen[r.InputDigest] = true
		compared++
		if !r.Agree {
			disagreed++
		}
		switch {
		case r.Primary.Error == "" && r.Shadow.Error == "" && len(r.Diff) == 1:
			got = append(got, topKPair{r.Diff[0].TopKOverlap, r.Diff[0].RankAgreement})
			want = append(want, pr)
		case r.Primary.Error == "" && strings.Contains(r.Shadow.Error, "timed out") && !r.Agree:
			timedOut++
		default:
			t.Fatalf("record %+v", r)
		}
	}
	if haveRecs {
		if float64(compared) < books.compared || compared > n || (closed && float64(compared) != books.compared) {
			t.Fatalf("%d records of kind shadow after %v comparisons of %d mirrors (books closed: %v)", compared, books.compared, n, closed)
		}
		if len(got) > 0 {
			g, w := figuresOf(got), figuresOf(want)
			if !g.near(w) {
				t.Errorf("figures over the %d pairs compared: %+v, offline %+v", len(got), g, w)
			}
			t.Logf("over %d pairs (and %d shadow timeouts): top-10 overlap %.4f (offline %.4f), rank agreement %.4f (offline %.4f), agreement rate %.4f (offline %.4f)",
				len(got), timedOut, g.overlap, w.overlap, g.rank, w.rank, g.agreement, w.agreement)
		}
	}

	// The report says the same (once the books are closed nothing more
	// comes in), and so do the canary's shadow gate and the latency
	// series.
	var rep pipeline.ShadowReportResponse
	if closed && haveRecs {
		if code := getJSON(t, "http://"+p.AdminAddr()+"/shadow/report?model=recommender&window=5m", &rep); code != 200 {
			if ag == nil {
				t.Fatalf("admin shadow report: %d", code)
			}
			t.Logf("shadow agent did not answer for its report (HTTP %d; by design a starved agent's answers may time out): report left unchecked", code)
		} else {
			fig := rep.Report.Shadow
			if fig.Compared != float64(compared) || fig.Agreed != float64(compared-disagreed) || fig.ShadowErrors != float64(timedOut) || rep.ShadowVersion != "v2" {
				t.Fatalf("report: %+v, shadow %q; the records: %d compared, %d disagreed, %d shadow timeouts", fig, rep.ShadowVersion, compared, disagreed, timedOut)
			}
			mf, w := fig.ByMode[shadow.TopK], figuresOf(want)
			if rf := (topKFigures{mf.MeanTopKOverlap, mf.MeanRankAgreement, mf.AgreementRate}); len(want) > 0 && !rf.near(w) {
				t.Errorf("report figures %+v, offline %+v", rf, w)
			}
			// The noise floor (v1 against itself) agrees wherever its call
			// answered.
			if nf := rep.Report.NoiseFloor; nf.Agreed+nf.ShadowErrors != nf.Compared || (ag == nil && nf.Compared == 0) {
				t.Fatalf("noise floor: %+v", nf)
			}
		}
	}
	if closed {
		// Every answered shadow call's latency observed (just after its
		// pair was counted).
		latency := func() bool {
			b := readShadowBooks(t, reg, "recommender")
			return b.latency+b.shadowErrors == books.compared
		}
		canary := func() bool {
			c, d := canaryShadowCounts(p, "recommender", "v2")
			return float64(c) == books.compared && (!haveRecs || int(d) == disagreed)
		}
		if ag == nil {
			waitFor(t, "every shadow latency observed", latency)
			waitFor(t, "every comparison counted for the canary", canary)
		} else {
			awaitAgent(t, ag, "every shadow latency observed", 15*time.Second, latency)
			awaitAgent(t, ag, "every comparison counted for the canary", 15*time.Second, canary)
		}
	}
	switch calls := sh.shadowed.Load(); {
	case calls != sh.calls.Load():
		t.Fatalf("shadow calls at v2: %d marked of %d", calls, sh.calls.Load())
	case batch == nil && (float64(calls) < books.compared || calls > n):
		t.Fatalf("shadow calls at v2: %d for %v comparisons of %d mirrors, want one per mirror", calls, books.compared, n)
	case batch == nil && ag == nil && calls != n:
		t.Fatalf("shadow calls at v2: %d, want one per mirrored request (%d)", calls, n)
	case batch != nil && books.compared == n && calls >= n:
		t.Fatalf("batched shadow calls at v2: %d for %d mirrored requests, want fewer", calls, n)
	case batch != nil:
		t.Logf("%d batched shadow calls for %v comparisons", calls, books.compared)
	}

	// Every disagreement is in the record file once the proxy (and the
	// agent, draining) flushed it, and each is one the comparison made.
	p.Close()
	fileRecs, _, err := shadow.ReadRecords(filepath.Join(dir, "recommender.jsonl"), time.Time{}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	inFile := 0
	for _, r := range fileRecs {
		if r.Kind != shadow.KindShadow || r.Agree {
			continue
		}
		inFile++
		if _, ok := offline[r.InputDigest]; !ok || r.ShadowVersion != "v2" || r.PrimaryVersion != "v1" || (len(r.Diff) != 1 && r.Shadow.Error == "") {
			t.Fatalf("record %+v", r)
		}
	}
	switch {
	case !haveRecs:
	case ag == nil && inFile != disagreed:
		t.Fatalf("%d disagreements in the record file, want %d", inFile, disagreed)
	case ag != nil && inFile > n:
		t.Fatalf("%d disagreements in the record file for %d mirrors", inFile, n)
	case ag != nil && closed && inFile > disagreed:
		t.Fatalf("%d disagreements in the record file, the comparisons made %d", inFile, disagreed)
	case ag != nil && closed && inFile < disagreed:
		// The agent's drain at shutdown is bounded too (it is killed
		// after 8 s): what it had not flushed is lost with it.
		t.Logf("%d of %d disagreements in the record file: the starved agent was stopped before it flushed", inFile, disagreed)
	}
}

// canaryShadowCounts is what the proxy's stats hold for the canary's
// shadow gate: comparisons and disagreements of (model, version).
func canaryShadowCounts(p *Proxy, model, version string) (compared, disagreed uint64) {
	var st canary.Stats
	p.pl.Stats().Slot(model, version).Snapshot(&st)
	return st.ShadowCompared, st.ShadowDisagreed
}

// inlineExact is the shadow process of the tests that count exactly
// (every mirror compared, every NaN or error seen): the mirrors in the
// proxy's process, which is also what the shadow agent runs. Through the
// agent — the default — a starved SCHED_IDLE process may drop or time out
// by design, so the agent's path is tested by its books instead
// (TestShadowV2TopKAgreement's agent cases, shadowagent_test.go).
const inlineExact = ShadowInline

// TestShadowV3NaN: v3 (NaN for some inputs) as the shadow, over gRPC
// (NaN in the answer) and REST (the backend's 500 naming the NaN output):
// every NaN input shows up as a shadow NaN and a disagreement.
func TestShadowV3NaN(t *testing.T) {
	be := backendtest.Start(t, backendtest.Options{})
	mk := func(name string, v3 api.Version) api.Model {
		return recommenderWith(be, func(m *api.Model) {
			m.Metadata.Name = name
			m.Spec.Versions[2] = v3
			m.Spec.Shadow = &api.Shadow{Version: "v3", Percent: 100, Compare: api.Compare{Mode: api.CompareTopK}}
		})
	}
	models := []api.Model{
		mk("rec-grpc", api.Version{Name: "v3", Endpoints: []string{be.GRPCAddr}, Protocol: api.ProtocolGRPC, BackendModel: "recommender-v3"}),
		mk("rec-rest", api.Version{Name: "v3", Endpoints: []string{be.HTTPAddr}, BackendModel: "recommender-v3"}),
	}
	p, reg := featuresProxy(t, Config{Models: models}, FeaturesConfig{ShadowProcess: inlineExact})
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
	plain := recommenderWith(be, func(m *api.Model) { m.Metadata.Name = "rec-plain" })
	slow := recommenderWith(be, func(m *api.Model) {
		m.Metadata.Name = "rec-slow"
		m.Spec.Versions[1].Endpoints = []string{blackhole(t)}
		m.Spec.Shadow = &api.Shadow{Version: "v2", Percent: 100, QueueSize: 2, Workers: 1, Timeout: api.Duration(200 * time.Millisecond)}
	})
	dead := recommenderWith(be, func(m *api.Model) {
		m.Metadata.Name = "rec-dead"
		m.Spec.Versions[1].Endpoints = []string{closedAddr(t)}
		m.Spec.Shadow = &api.Shadow{Version: "v2", Percent: 100}
	})
	p, reg := featuresProxy(t, Config{Models: []api.Model{plain, slow, dead}}, FeaturesConfig{ShadowProcess: inlineExact})
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
	cp := cptest.Start(t, controlplane.Config{InsecureLoopbackNoAuth: true}, nil).ControlPlane
	putModel(t, cp, recommenderWith(be, func(m *api.Model) {
		m.Spec.Shadow = &api.Shadow{Version: "v2", Percent: 100, Compare: api.Compare{Mode: api.CompareTopK}}
	}))
	c := newHTTPClient()
	defer c.CloseIdleConnections()
	const per = 30
	for i := range 2 {
		p, reg := featuresProxy(t, Config{XDSAddr: cp.XDSAddr(), NodeID: fmt.Sprintf("proxy-%d", i),
			XDSBackoffMin: 20 * time.Millisecond, XDSBackoffMax: 200 * time.Millisecond}, FeaturesConfig{ShadowProcess: inlineExact})
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
	var rep api.ShadowReportResponse
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
		testShadowRecordsKeepTheirOwnData(t, &api.ShadowBatch{MaxRows: 8, MaxDelay: api.Duration(5 * time.Millisecond)})
	})
}

func testShadowRecordsKeepTheirOwnData(t *testing.T, batch *api.ShadowBatch) {
	be := backendtest.Start(t, backendtest.Options{})
	m := recommenderWith(be, func(m *api.Model) {
		m.Spec.Shadow = &api.Shadow{Version: "v2", Percent: 100, Workers: 2, Batch: batch,
			Compare: api.Compare{Mode: api.CompareTopK, K: 10}}
	})
	p, reg := featuresProxy(t, Config{Models: []api.Model{m}}, FeaturesConfig{ShadowProcess: inlineExact})
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
	var recs pipeline.ShadowRecordsResponse
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
