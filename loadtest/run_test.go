package loadtest

import (
	"bytes"
	"context"
	"encoding/xml"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/switchyard-dev/switchyard/inference-backend/backend"
	"github.com/switchyard-dev/switchyard/inference-backend/backendtest"
	"github.com/switchyard-dev/switchyard/inference-backend/demomodels"
	"github.com/switchyard-dev/switchyard/oip"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// The backend's and net/http's long-lived helpers.
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreAnyFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"),
	)
}

const model = "recommender-v1"

func generated(t *testing.T, be *backendtest.Running, hc *http.Client, proto string) ([]*oip.InferRequest, string) {
	t.Helper()
	tg := Target{Protocol: proto, Addr: be.HTTPAddr, Model: model}
	if proto == "grpc" {
		tg.Addr = be.GRPCAddr
	}
	addr, err := tg.Validate()
	if err != nil {
		t.Fatal(err)
	}
	md, err := FetchMetadata(context.Background(), tg, addr, hc)
	if err != nil {
		t.Fatalf("metadata: %v", err)
	}
	reqs, err := Generate(md, 4, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got := reqs[0].Inputs[0]; got.Datatype != oip.FP32 || got.Shape[len(got.Shape)-1] != 32 || got.Shape[0] != 1 {
		t.Fatalf("generated input %s %v, want FP32 [1,32]", got.Datatype, got.Shape)
	}
	return reqs, addr
}

func checkInvariants(t *testing.T, res *Result, planned int) {
	t.Helper()
	if res.Scheduled != planned {
		t.Errorf("scheduled %d, want %d", res.Scheduled, planned)
	}
	if res.Completed+res.Unsent != res.Scheduled {
		t.Errorf("completed %d + unsent %d != scheduled %d", res.Completed, res.Unsent, res.Scheduled)
	}
	if int(res.Hist.Total) != res.Completed || int(res.OKHist.Total) != res.OK {
		t.Errorf("histogram totals %d/%d, want completed %d / ok %d", res.Hist.Total, res.OKHist.Total, res.Completed, res.OK)
	}
	if int(res.ServiceHist.Total) != res.Completed || int(res.LagHist.Total) != res.Completed {
		t.Errorf("service/lag histogram totals %d/%d, want completed %d", res.ServiceHist.Total, res.LagHist.Total, res.Completed)
	}
	// Latency = lag + service time for every request, so neither part
	// exceeds the largest latency.
	if res.ServiceHist.MaxNS > res.Hist.MaxNS || res.LagHist.MaxNS > res.Hist.MaxNS {
		t.Errorf("max service %d / lag %d above max latency %d", res.ServiceHist.MaxNS, res.LagHist.MaxNS, res.Hist.MaxNS)
	}
	if res.OK+res.ErrorCount() != res.Completed {
		t.Errorf("ok %d + errors %d != completed %d", res.OK, res.ErrorCount(), res.Completed)
	}
	n := 0
	for _, s := range res.Seconds {
		n += s.Count
	}
	if n != res.Completed {
		t.Errorf("per-second counts sum to %d, want %d", n, res.Completed)
	}
}

func TestFixedRateREST(t *testing.T) {
	be := backendtest.Start(t, backendtest.Options{})
	hc := NewHTTPClient(8)
	defer hc.CloseIdleConnections()
	reqs, addr := generated(t, be, hc, "rest")
	s, err := NewRESTSender(hc, addr, model, "", reqs)
	if err != nil {
		t.Fatal(err)
	}
	var progress int
	cfg := Config{Rate: 200, Duration: 1500 * time.Millisecond, MaxRequests: 250, Workers: 4, Timeout: 10 * time.Second, Grace: time.Minute,
		Progress: func(Progress) { progress++ }}
	res, err := Run(context.Background(), cfg, s)
	if err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, res, 250) // max-requests binds before 300 (rate × duration)
	if res.ErrorCount() != 0 || res.Unsent != 0 || res.OK != 250 {
		t.Errorf("ok %d errors %v unsent %d, want 250 ok", res.OK, res.Errors, res.Unsent)
	}
	if progress < 1 {
		t.Errorf("progress called %d times, want >= 1", progress)
	}

	// The report renders; the HTML parses as XML and holds both plots.
	rep := &Report{Target: addr, Protocol: "rest", Model: model, Inputs: "generated"}
	rep.SetRun(res)
	var tbl, js, page bytes.Buffer
	if err := rep.WriteTable(&tbl); err != nil || !strings.Contains(tbl.String(), "250 ok") {
		t.Errorf("table: %v\n%s", err, tbl.String())
	}
	if err := rep.WriteJSON(&js); err != nil || !strings.Contains(js.String(), `"ok": 250`) {
		t.Errorf("json: %v\n%s", err, js.String())
	}
	if err := rep.WriteHTML(&page); err != nil {
		t.Fatal(err)
	}
	checkHTML(t, page.Bytes())
}

func checkHTML(t *testing.T, page []byte) {
	t.Helper()
	body := strings.TrimPrefix(string(page), "<!DOCTYPE html>\n")
	dec := xml.NewDecoder(strings.NewReader(body))
	svgs := map[string]int{}
	elems := map[string]int{}
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("HTML report is not well-formed: %v", err)
		}
		if se, ok := tok.(xml.StartElement); ok {
			elems[se.Name.Local]++
			if se.Name.Local == "svg" {
				for _, a := range se.Attr {
					if a.Name.Local == "id" {
						svgs[a.Value]++
					}
				}
			}
		}
	}
	if svgs["latency-over-time"] != 1 || svgs["latency-histogram"] != 1 {
		t.Errorf("svgs %v, want latency-over-time and latency-histogram", svgs)
	}
	if elems["polyline"] != 2 || elems["rect"] < 1 {
		t.Errorf("elements %v: want 2 polylines and histogram bars", elems)
	}
}

func TestFixedRateGRPC(t *testing.T) {
	be := backendtest.Start(t, backendtest.Options{})
	hc := NewHTTPClient(2)
	defer hc.CloseIdleConnections()
	reqs, addr := generated(t, be, hc, "grpc")
	cc, err := DialGRPC(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	s, err := NewGRPCSender(cc, model, "", reqs)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Run(context.Background(), Config{Rate: 200, Duration: 500 * time.Millisecond, MaxRequests: 1000, Workers: 4, Timeout: 10 * time.Second, Grace: time.Minute}, s)
	if err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, res, 100)
	if res.OK != 100 || res.ErrorCount() != 0 {
		t.Errorf("ok %d errors %v, want 100 ok", res.OK, res.Errors)
	}

	// Unknown model over gRPC: NotFound, every request.
	bad, _ := NewGRPCSender(cc, "no-such-model", "", reqs)
	res, err = Run(context.Background(), Config{Rate: 100, Duration: 200 * time.Millisecond, MaxRequests: 100, Workers: 2, Timeout: 10 * time.Second, Grace: time.Minute}, bad)
	if err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, res, 20)
	if res.Errors["grpc_NotFound"] != 20 || res.OK != 0 {
		t.Errorf("errors %v ok %d, want 20 grpc_NotFound", res.Errors, res.OK)
	}
}

func TestErrorKinds(t *testing.T) {
	be := backendtest.Start(t, backendtest.Options{})
	hc := NewHTTPClient(2)
	defer hc.CloseIdleConnections()
	reqs, addr := generated(t, be, hc, "rest")
	cfg := Config{Rate: 100, Duration: 200 * time.Millisecond, MaxRequests: 100, Workers: 2, Timeout: 5 * time.Second, Grace: time.Minute}

	s, _ := NewRESTSender(hc, addr, "no-such-model", "", reqs)
	res, err := Run(context.Background(), cfg, s)
	if err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, res, 20)
	if res.Errors["http_404"] != 20 {
		t.Errorf("unknown model: errors %v, want 20 http_404", res.Errors)
	}

	// Metadata of an unknown model: NotFound.
	_, err = FetchMetadata(context.Background(), Target{Protocol: "rest", Model: "no-such-model"}, addr, hc)
	if oip.CodeOf(err) != oip.NotFound {
		t.Errorf("metadata of unknown model: %v, want NotFound", err)
	}

	// A closed port: connect errors, REST and gRPC.
	closed := closedPort(t)
	s, _ = NewRESTSender(hc, closed, model, "", reqs)
	res, err = Run(context.Background(), cfg, s)
	if err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, res, 20)
	if res.Errors["connect"] != 20 {
		t.Errorf("closed port REST: errors %v, want 20 connect", res.Errors)
	}
	cc, err := DialGRPC(closed)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	gs, _ := NewGRPCSender(cc, model, "", reqs)
	res, err = Run(context.Background(), cfg, gs)
	if err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, res, 20)
	if res.Errors["connect"] != 20 {
		t.Errorf("closed port gRPC: errors %v, want 20 connect", res.Errors)
	}
}

func closedPort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestRedirectRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://127.0.0.1:1/elsewhere", http.StatusTemporaryRedirect)
	})}
	go srv.Serve(l)
	defer srv.Close()
	hc := NewHTTPClient(1)
	defer hc.CloseIdleConnections()
	s, _ := NewRESTSender(hc, l.Addr().String(), model, "", []*oip.InferRequest{{Inputs: []oip.Tensor{oip.NewTensor("x", []int64{1}, []float32{1})}}})
	if got := s.Send(context.Background(), 0); got != "redirect" {
		t.Errorf("redirect: kind %q, want redirect", got)
	}
}

func TestRampStopsOnErrors(t *testing.T) {
	be := backendtest.Start(t, backendtest.Options{})
	hc := NewHTTPClient(4)
	defer hc.CloseIdleConnections()
	reqs, addr := generated(t, be, hc, "rest")
	cfg := RampConfig{StartRate: 50, Factor: 1.5, MaxRate: 1000, Step: 200 * time.Millisecond, Budget: 5 * time.Second,
		Duration: 2 * time.Second, MaxRequests: 2000, Workers: 4, Timeout: 5 * time.Second, TargetRate: 500, Headroom: 0.3}

	bad, _ := NewRESTSender(hc, addr, "no-such-model", "", reqs)
	rr, err := Ramp(context.Background(), cfg, bad)
	if err != nil {
		t.Fatal(err)
	}
	if len(rr.Steps) != 1 || rr.Steps[0].OK || rr.Capacity != 0 || rr.Replicas != 0 || !strings.Contains(rr.StopReason, "errors") {
		t.Errorf("failing target: %+v, want one failed step and no capacity", rr)
	}
	if rr.Steps[0].Result.Errors["http_404"] != rr.Steps[0].Result.Scheduled {
		t.Errorf("errors %v, want all http_404", rr.Steps[0].Result.Errors)
	}

	// A good target steps up until a bound (budget is generous): every
	// passing step multiplies the rate, the capacity is the last passing
	// step, and the replica estimate follows from it.
	good, _ := NewRESTSender(hc, addr, model, "", reqs)
	cfg.MaxRate = 120
	rr, err = Ramp(context.Background(), cfg, good)
	if err != nil {
		t.Fatal(err)
	}
	if len(rr.Steps) == 0 {
		t.Fatal("no steps")
	}
	for i, s := range rr.Steps {
		if i > 0 && s.Rate != NextRate(rr.Steps[i-1].Rate, 1.5) {
			t.Errorf("step %d rate %v, want %v", i, s.Rate, NextRate(rr.Steps[i-1].Rate, 1.5))
		}
		if s.OK {
			if rr.Capacity < s.Rate {
				t.Errorf("capacity %v below passing step %v", rr.Capacity, s.Rate)
			}
		}
	}
	if rr.Capacity > 0 && rr.Replicas != Replicas(rr.Capacity, 500, 0.3) {
		t.Errorf("replicas %d, want %d", rr.Replicas, Replicas(rr.Capacity, 500, 0.3))
	}
	var tbl bytes.Buffer
	rep := &Report{Model: model}
	rep.SetRamp(rr)
	if err := rep.WriteTable(&tbl); err != nil || !strings.Contains(tbl.String(), "stopped") {
		t.Errorf("ramp table: %v\n%s", err, tbl.String())
	}
}

func TestColdStartAndProcStats(t *testing.T) {
	// No warm-up first: the demo model's config.yaml with warmup 0.
	repo := t.TempDir()
	if err := demomodels.WriteRepository(repo); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(repo, model, "config.yaml")
	if err := os.WriteFile(cfgPath, []byte("warmup: 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	const token = "cold-start-token-0123456789"
	be := backendtest.Start(t, backendtest.Options{Repository: repo, RepositoryAccess: &backend.RepositoryAccess{Tokens: []string{token}}})
	hc := NewHTTPClient(2)
	defer hc.CloseIdleConnections()
	reqs, addr := generated(t, be, hc, "rest")
	s, _ := NewRESTSender(hc, addr, model, "", reqs)

	// The repository API wants the token: without it, a clear refusal.
	if _, err := MeasureColdStart(context.Background(), hc, ColdStartConfig{Addr: addr, Model: model, Requests: 1, Timeout: time.Minute}, s.Bodies); err == nil || !strings.Contains(err.Error(), "HTTP 401") {
		t.Fatalf("cold start without the repository token: %v, want HTTP 401", err)
	}

	w, err := WatchProc(osPID(), 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := MeasureColdStart(context.Background(), hc, ColdStartConfig{Addr: addr, Model: model, Requests: 3, Timeout: time.Minute, RepositoryToken: token}, s.Bodies)
	if err != nil {
		t.Fatal(err)
	}
	ps, err := w.Stop()
	if err != nil {
		t.Fatal(err)
	}
	if cs.LoadToReady <= 0 || cs.LoadToReady < cs.LoadCall || cs.ReadyPolls < 1 || len(cs.FirstLatency) != 3 || cs.FirstErrors != nil {
		t.Errorf("cold start %+v: want load-to-ready >= load call, 3 ok first requests", cs)
	}
	if ps.RSSStart <= 0 || ps.RSSPeak < ps.RSSStart || ps.RSSPeak < ps.RSSEnd || ps.CPUSeconds < 0 {
		t.Errorf("proc stats %+v: want RSS > 0 and peak >= start, end", ps)
	}

	// With warm-up: the backend re-reads config.yaml on load, so the same
	// backend measures the model again with 3 warm-up requests.
	if err := os.WriteFile(cfgPath, []byte("warmup: 3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	warm, err := MeasureColdStart(context.Background(), hc, ColdStartConfig{Addr: addr, Model: model, Requests: 2, Timeout: time.Minute, RepositoryToken: token}, s.Bodies)
	if err != nil {
		t.Fatal(err)
	}
	if warm.LoadToReady < warm.LoadCall || len(warm.FirstLatency) != 2 || warm.FirstErrors != nil {
		t.Errorf("cold start with warm-up %+v: want load-to-ready >= load call, 2 ok first requests", warm)
	}

	// A backend whose repository API needs a token: refused without it,
	// measured with it.
	const tok = "repository-token-0123456789"
	guarded := backendtest.Start(t, backendtest.Options{Repository: repo, RepositoryAccess: &backend.RepositoryAccess{Tokens: []string{tok}}})
	if _, err := MeasureColdStart(context.Background(), hc, ColdStartConfig{Addr: guarded.HTTPAddr, Model: model, Timeout: time.Minute}, s.Bodies); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("cold start without the repository token: %v", err)
	}
	if cs, err := MeasureColdStart(context.Background(), hc, ColdStartConfig{Addr: guarded.HTTPAddr, Model: model, Timeout: time.Minute, RepositoryToken: tok}, s.Bodies); err != nil || cs.LoadToReady <= 0 {
		t.Errorf("cold start with the repository token: %+v %v", cs, err)
	}

	// Unknown model: a clear error.
	_, err = MeasureColdStart(context.Background(), hc, ColdStartConfig{Addr: addr, Model: "no-such-model", Requests: 1, Timeout: 10 * time.Second, RepositoryToken: token}, s.Bodies)
	if err == nil || !strings.Contains(err.Error(), "no-such-model") {
		t.Errorf("cold start of unknown model: %v", err)
	}
}
