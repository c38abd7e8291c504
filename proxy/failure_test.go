package proxy

import (
	"context"
	"io"
	"math"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/canary"
	"github.com/switchyard-dev/switchyard/inference-backend/backendtest"
	"github.com/switchyard-dev/switchyard/inference-backend/demomodels"
	"github.com/switchyard-dev/switchyard/oip"
	pb "github.com/switchyard-dev/switchyard/oip/inferencepb"
	"github.com/switchyard-dev/switchyard/proxy/front"
)

// Regression tests of issue 15's failure-path defects, each on real
// backends, sockets and gRPC.

// unloadModel unloads a model through the backend's repository API, as an
// operator (or an attacker) would.
func unloadModel(t *testing.T, be *backendtest.Running, model string) {
	t.Helper()
	resp, err := http.Post("http://"+be.HTTPAddr+"/v2/repository/models/"+model+"/unload", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("unload %s: %d", model, resp.StatusCode)
	}
}

func dialProxy(t *testing.T, p *Proxy) pb.GRPCInferenceServiceClient {
	t.Helper()
	cc, err := grpc.NewClient(p.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return pb.NewGRPCInferenceServiceClient(cc)
}

func grpcFeatures(model string, rows int) *pb.ModelInferRequest {
	req := &oip.InferRequest{ModelName: model, Inputs: []oip.Tensor{
		oip.NewTensor("features", []int64{int64(rows), 32}, flatten(demomodels.RandomFeatures(1, rows)))}}
	return oip.InferRequestToProto(req)
}

func flatten(rows [][]float32) []float32 {
	var out []float32
	for _, r := range rows {
		out = append(out, r...)
	}
	return out
}

func restFeatures(rows int) []byte {
	req := &oip.InferRequest{Inputs: []oip.Tensor{oip.NewTensor("features", []int64{int64(rows), 32}, flatten(demomodels.RandomFeatures(7, rows)))}}
	b, _, err := oip.AppendInferRequest(nil, req, false)
	if err != nil {
		panic(err)
	}
	return b
}

// TestUnloadedModelIsTheVersionsFailure: a backend that stops serving the
// model (unloaded: REST 404, gRPC NotFound) is the version's failure — the
// chain answers, the breaker counts it and opens — never a 404 to the
// client. Without a fallback chain the client gets 503 naming the cause.
func TestUnloadedModelIsTheVersionsFailure(t *testing.T) {
	be := backendtest.Start(t, backendtest.Options{})
	withChain := recommenderWith(be, func(m *api.Model) {
		m.Spec.Versions[1] = api.Version{Name: "v2", Endpoints: []string{be.GRPCAddr}, Protocol: api.ProtocolGRPC, BackendModel: "recommender-v2"}
		m.Spec.Fallback = &api.Fallback{Chain: []string{"backup", "static"}, Backup: "lite", Static: staticScores(3),
			Breaker: api.Breaker{ConsecutiveFailures: 3, OpenFor: api.Duration(time.Hour), FirstOpenFor: api.Duration(time.Hour)}}
	})
	plain := recommenderWith(be, func(m *api.Model) { m.Metadata.Name = "plain" })
	p, reg := featuresProxy(t, Config{Models: []api.Model{withChain, plain}}, FeaturesConfig{})
	c := newHTTPClient()
	defer c.CloseIdleConnections()
	body, _ := featuresBody(1)
	unloadModel(t, be, "recommender-v1")
	unloadModel(t, be, "recommender-v2")

	for i := range 3 {
		a := postFull(t, c, inferURL(p, "recommender"), body, nil)
		if a.status != 200 || a.fallback != "backup" || a.reason != "not_serving" || a.variant != "lite" {
			t.Fatalf("request %d to the unloaded REST version: %+v %s", i, a, a.body)
		}
	}
	a := postFull(t, c, inferURL(p, "recommender"), body, nil)
	if a.status != 200 || a.fallback != "backup" || a.reason != "breaker_open" {
		t.Fatalf("after 3 not_serving failures the breaker is open: %+v %s", a, a.body)
	}
	if got := metricSum(t, reg, "switchyard_fallback_triggers_total", map[string]string{"version": "v1", "trigger": "not_serving"}); got != 3 {
		t.Fatalf("not_serving triggers of v1 = %v, want 3", got)
	}

	// The same over gRPC (NotFound from a gRPC version).
	gc := dialProxy(t, p)
	ctx := metadata.AppendToOutgoingContext(context.Background(), "x-switchyard-variant", "v2")
	var hdr metadata.MD
	if _, err := gc.ModelInfer(ctx, grpcFeatures("recommender", 1), grpc.Header(&hdr)); err != nil {
		t.Fatalf("gRPC to the unloaded gRPC version: %v", err)
	}
	if got := hdr.Get("x-switchyard-fallback-reason"); len(got) != 1 || got[0] != "not_serving" {
		t.Fatalf("gRPC fallback reason %v, want not_serving", got)
	}

	// No chain: 503 naming the cause, not the backend's 404.
	a = postFull(t, c, inferURL(p, "plain"), body, nil)
	if a.status != 503 || !strings.Contains(string(a.body), "is not serving") || !strings.Contains(string(a.body), "unloaded") {
		t.Fatalf("unloaded version without a chain: %d %s", a.status, a.body)
	}
	_, err := gc.ModelInfer(context.Background(), grpcFeatures("plain", 1))
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("gRPC to the unloaded version without a chain: %v, want Unavailable", err)
	}
}

// deadPrimaryWithBackup is two models whose v1 is at the unreachable
// address dead, with the chain backup → static (static scores starting
// at first): rec-rest with the backup lite over REST, rec-grpc with lite
// over gRPC.
func deadPrimaryWithBackup(be *backendtest.Running, dead string, first float64) []api.Model {
	mk := func(name string, lite api.Version) api.Model {
		return recommenderWith(be, func(m *api.Model) {
			m.Metadata.Name = name
			m.Spec.Versions[0].Endpoints = []string{dead}
			m.Spec.Versions[3] = lite
			m.Spec.Fallback = &api.Fallback{Chain: []string{"backup", "static"}, Backup: "lite", Static: staticScores(first)}
		})
	}
	return []api.Model{
		mk("rec-rest", api.Version{Name: "lite", Endpoints: []string{be.HTTPAddr}, BackendModel: "recommender-lite"}),
		mk("rec-grpc", api.Version{Name: "lite", Endpoints: []string{be.GRPCAddr}, Protocol: api.ProtocolGRPC, BackendModel: "recommender-lite"}),
	}
}

// TestFailingBackupMovesToStatic: with the primary unreachable and the
// backup's model unloaded (REST 404 / gRPC NotFound), static answers.
func TestFailingBackupMovesToStatic(t *testing.T) {
	be := backendtest.Start(t, backendtest.Options{})
	models := deadPrimaryWithBackup(be, closedAddr(t), 4)
	p, _ := featuresProxy(t, Config{Models: models}, FeaturesConfig{})
	unloadModel(t, be, "recommender-lite")
	c := newHTTPClient()
	defer c.CloseIdleConnections()
	body, _ := featuresBody(2)
	for _, m := range models {
		a := postFull(t, c, inferURL(p, m.Metadata.Name), body, nil)
		if a.status != 200 || a.fallback != "static" || a.reason != "connect_error" || scoresOf(t, a.body)[0] != 4 {
			t.Fatalf("%s: %+v %s", m.Metadata.Name, a, a.body)
		}
	}
}

// TestStaticAnswerFollowsRequestRows: a 3-row request gets a 3-row static
// answer (the configured row repeated), marked static and with no variant
// — also when the primary answers with the wrong number of rows, which is
// its failure (bad_answer).
func TestStaticAnswerFollowsRequestRows(t *testing.T) {
	be := backendtest.Start(t, backendtest.Options{})
	oneRow := serveHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"model_name":"x","outputs":[{"name":"scores","datatype":"FP32","shape":[1,2],"data":[1,2]}]}`))
	}))
	mk := func(name, addr string) api.Model {
		return recommenderWith(be, func(m *api.Model) {
			m.Metadata.Name = name
			m.Spec.Versions[0].Endpoints = []string{addr}
			m.Spec.Fallback = &api.Fallback{Chain: []string{"static"}, Static: staticScores(6)}
		})
	}
	p, _ := featuresProxy(t, Config{Models: []api.Model{mk("dead", closedAddr(t)), mk("misshapen", oneRow)}}, FeaturesConfig{})
	c := newHTTPClient()
	defer c.CloseIdleConnections()
	for model, reason := range map[string]string{"dead": "connect_error", "misshapen": "bad_answer"} {
		a := postFull(t, c, inferURL(p, model), restFeatures(3), nil)
		if a.status != 200 || a.fallback != "static" || a.reason != reason || a.variant != "" {
			t.Fatalf("%s: %+v %s", model, a, a.body)
		}
		resp, err := oip.DecodeInferResponse(a.body, 0)
		if err != nil {
			t.Fatal(err)
		}
		if sh := resp.Outputs[0].Shape; len(sh) != 2 || sh[0] != 3 || sh[1] != 100 {
			t.Fatalf("%s: static answer shape %v for a [3,32] request, want [3 100]", model, sh)
		}
	}
	gc := dialProxy(t, p)
	var hdr metadata.MD
	resp, err := gc.ModelInfer(context.Background(), grpcFeatures("dead", 3), grpc.Header(&hdr))
	if err != nil {
		t.Fatal(err)
	}
	if sh := resp.GetOutputs()[0].GetShape(); len(sh) != 2 || sh[0] != 3 {
		t.Fatalf("gRPC static answer shape %v, want [3 100]", sh)
	}
	if v := hdr.Get(front.MetadataVariant); len(v) != 0 {
		t.Fatalf("static answer marked with variant %v", v)
	}
}

// hangServer is a gRPC inference server whose ModelInfer blocks until the
// caller gives up (or release is closed), counting calls and the calls it
// saw cancelled.
type hangServer struct {
	pb.UnimplementedGRPCInferenceServiceServer
	calls, cancelled atomic.Int64
	release          chan struct{}
}

func (h *hangServer) ModelInfer(ctx context.Context, req *pb.ModelInferRequest) (*pb.ModelInferResponse, error) {
	h.calls.Add(1)
	select {
	case <-ctx.Done():
		h.cancelled.Add(1)
		return nil, ctx.Err()
	case <-h.release:
		return &pb.ModelInferResponse{ModelName: req.GetModelName(), Outputs: []*pb.ModelInferResponse_InferOutputTensor{
			{Name: "scores", Datatype: "FP32", Shape: []int64{1, 1}, Contents: &pb.InferTensorContents{Fp32Contents: []float32{1}}}}}, nil
	}
}

// TestClientCancelIsNobodysFailure: requests the client cancels while the
// upstream works count for no breaker, eject no endpoint, are not canary
// errors, and cancel the upstream call with them (gRPC and REST
// upstreams); the next request is served.
func TestClientCancelIsNobodysFailure(t *testing.T) {
	hs := &hangServer{release: make(chan struct{})}
	gs := grpc.NewServer()
	pb.RegisterGRPCInferenceServiceServer(gs, hs)
	l := listen(t)
	go gs.Serve(l)
	t.Cleanup(gs.Stop)
	var restCalls, restCancelled atomic.Int64
	slowREST := serveHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) // net/http sees the peer close only once the body is read
		restCalls.Add(1)
		<-r.Context().Done()
		restCancelled.Add(1)
	}))
	m := api.Model{Metadata: api.Metadata{Name: "m"}, Spec: api.Spec{
		Versions: []api.Version{
			{Name: "g", Endpoints: []string{l.Addr().String()}, Protocol: api.ProtocolGRPC},
			{Name: "r", Endpoints: []string{slowREST}},
		},
		Traffic: api.Traffic{Weights: map[string]int{"g": 100}},
		Timeout: api.Duration(time.Minute),
	}}
	reg := prometheus.NewRegistry()
	p := startProxy(t, Config{Models: []api.Model{m}, Registry: reg})
	gc := dialProxy(t, p)
	const n = 8 // more than the breaker's default 5 consecutive failures
	for variant, counter := range map[string]*atomic.Int64{"g": &hs.calls, "r": &restCalls} {
		for i := range n {
			before := counter.Load()
			ctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(context.Background(), "x-switchyard-variant", variant))
			errc := make(chan error, 1)
			go func() {
				_, err := gc.ModelInfer(ctx, grpcFeatures("m", 1))
				errc <- err
			}()
			waitFor(t, "the upstream call to start", func() bool { return counter.Load() > before })
			cancel()
			if err := <-errc; status.Code(err) != codes.Canceled {
				t.Fatalf("%s request %d: %v, want Canceled", variant, i, err)
			}
		}
		if st := p.Route("m").Variant(variant).Breaker.State().String(); st != "closed" {
			t.Fatalf("%s: breaker %s after %d client cancels, want closed", variant, st, n)
		}
	}
	waitFor(t, "the upstream calls to be cancelled", func() bool {
		return hs.cancelled.Load() == n && restCancelled.Load() == n
	})
	if got := metricSum(t, reg, "switchyard_proxy_upstream_ejections_total", nil); got != 0 {
		t.Fatalf("%v endpoint ejections after client cancels, want 0", got)
	}
	for _, v := range []string{"g", "r"} {
		var st canary.Stats
		p.pl.Stats().Slot("m", v).Snapshot(&st)
		if st.Requests != 0 || st.ErrorCount() != 0 {
			t.Fatalf("%s: canary stats count cancelled requests: %+v", v, st)
		}
	}
	close(hs.release)
	if _, err := gc.ModelInfer(context.Background(), grpcFeatures("m", 1)); err != nil {
		t.Fatalf("the next request: %v", err)
	}
}

// TestPrimaryRejectionReachesClientAndCanary: the primary's 400 reaches
// the client unchanged and is counted per variant, as client_4xx, for the
// canary — not as a version error.
func TestPrimaryRejectionReachesClientAndCanary(t *testing.T) {
	be := backendtest.Start(t, backendtest.Options{})
	m := recommenderWith(be, func(m *api.Model) {
		m.Spec.Fallback = &api.Fallback{Chain: []string{"static"}, Static: staticScores(1)}
	})
	p, reg := featuresProxy(t, Config{Models: []api.Model{m}}, FeaturesConfig{})
	c := newHTTPClient()
	defer c.CloseIdleConnections()
	bad := []byte(`{"inputs":[{"name":"features","datatype":"FP32","shape":[1,3],"data":[1,2,3]}]}`)
	for range 3 {
		a := postFull(t, c, inferURL(p, "recommender"), bad, nil)
		if a.status != 400 || a.fallback != "" || !strings.Contains(string(a.body), "features") {
			t.Fatalf("bad request to a serving primary: %+v %s", a, a.body)
		}
	}
	var st canary.Stats
	p.pl.Stats().Slot("recommender", "v1").Snapshot(&st)
	if st.Requests != 3 || st.Errors["client_4xx"] != 3 || st.Errors["status_5xx"] != 0 {
		t.Fatalf("canary stats %+v, want 3 requests, 3 client_4xx", st)
	}
	if got := metricSum(t, reg, "switchyard_proxy_requests_total", map[string]string{"variant": "v1", "code": "400"}); got != 3 {
		t.Fatalf("requests_total{v1,400} = %v, want 3", got)
	}
	if st := p.Route("recommender").Variant("v1").Breaker.State().String(); st != "closed" {
		t.Fatalf("breaker %s after the request's own faults", st)
	}
}

// TestNaNInputsAreNotTheVersionsFailure: NaN/±Inf in the request's inputs
// give NaN in the answer; that is the request's doing. The answer reaches
// the client as it is, no fallback replaces it, the breaker stays closed
// however many such requests come (a client could otherwise take the
// model down), and the canary counts no NaN output.
func TestNaNInputsAreNotTheVersionsFailure(t *testing.T) {
	be := backendtest.Start(t, backendtest.Options{})
	m := recommenderWith(be, func(m *api.Model) {
		m.Spec.Versions[0] = api.Version{Name: "v1", Endpoints: []string{be.GRPCAddr}, Protocol: api.ProtocolGRPC, BackendModel: "recommender-v1"}
		m.Spec.Fallback = &api.Fallback{Chain: []string{"backup", "static"}, Backup: "lite", Static: staticScores(1),
			Breaker: api.Breaker{ConsecutiveFailures: 2, OpenFor: api.Duration(time.Hour), FirstOpenFor: api.Duration(time.Hour)}}
	})
	p, _ := featuresProxy(t, Config{Models: []api.Model{m}}, FeaturesConfig{})
	gc := dialProxy(t, p)
	nanReq := func() *pb.ModelInferRequest {
		row := demomodels.RandomFeatures(5, 1)[0]
		row[3] = float32(math.NaN())
		return oip.InferRequestToProto(&oip.InferRequest{ModelName: "recommender", Inputs: []oip.Tensor{oip.NewTensor("features", []int64{1, 32}, row)}})
	}
	for i := range 5 {
		var hdr metadata.MD
		resp, err := gc.ModelInfer(context.Background(), nanReq(), grpc.Header(&hdr))
		if err != nil {
			t.Fatalf("NaN request %d: %v", i, err)
		}
		if fb := hdr.Get("x-switchyard-fallback"); len(fb) != 0 {
			t.Fatalf("NaN request %d answered by fallback %v, want v1's own answer", i, fb)
		}
		if v := hdr.Get("x-switchyard-variant"); len(v) != 1 || v[0] != "v1" {
			t.Fatalf("NaN request %d answered by %v, want v1", i, v)
		}
		out, err := oip.InferResponseFromProto(resp)
		if err != nil || !oip.AnyNaNOrInf(out.Outputs) {
			t.Fatalf("NaN request %d: the answer (%v) should carry the NaN the input led to", i, err)
		}
	}
	if st := p.Route("recommender").Variant("v1").Breaker.State().String(); st != "closed" {
		t.Fatalf("v1's breaker %s after NaN inputs, want closed", st)
	}
	var st canary.Stats
	p.pl.Stats().Slot("recommender", "v1").Snapshot(&st)
	if st.Requests != 5 || st.NaNOutputs != 0 || st.ErrorCount() != 0 || st.UpstreamFailureCount() != 0 || st.Fallbacks != 0 {
		t.Fatalf("v1 canary stats after NaN inputs: %+v, want 5 requests and nothing else", st)
	}
}
