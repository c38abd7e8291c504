package proxy

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/inference-backend/backendtest"
	"github.com/switchyard-dev/switchyard/oip"
	pb "github.com/switchyard-dev/switchyard/oip/inferencepb"
	"github.com/switchyard-dev/switchyard/proxy/front"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/yalue/onnxruntime_go.(*DynamicAdvancedSession).Run"),
	)
}

func TestWeightedSplit8020(t *testing.T) {
	be := backendtest.Start(t, backendtest.Options{})
	p := startProxy(t, Config{Models: []api.Model{demoModel(be, map[string]int{"v1": 80, "v2": 20})}})
	const n = 10000
	answers := load(t, inferURL(p, "recommender"), n, 16, nil)
	counts := map[string]int{}
	for i, a := range answers {
		if a.status != 200 {
			t.Fatalf("request %d: status %d: %s", i, a.status, a.body)
		}
		counts[a.variant]++
	}
	if got := float64(counts["v2"]) / n; got < 0.18 || got > 0.22 {
		t.Fatalf("v2 share %.4f over %d requests, want 0.20 ± 0.02 (counts %v)", got, n, counts)
	}
	if counts["v1"]+counts["v2"] != n {
		t.Fatalf("unexpected variants: %v", counts)
	}
	// Sticky users over the same split: shares also within ±2 %.
	answers = load(t, inferURL(p, "recommender"), 5000, 16, userHeader)
	v2 := 0
	for _, a := range answers {
		if a.variant == "v2" {
			v2++
		}
	}
	if got := float64(v2) / 5000; got < 0.18 || got > 0.22 {
		t.Fatalf("sticky v2 share %.4f, want 0.20 ± 0.02", got)
	}
}

func TestStickyUsersOnlyMoveTowardRisingVersion(t *testing.T) {
	be := backendtest.Start(t, backendtest.Options{})
	p := startProxy(t, Config{Models: []api.Model{demoModel(be, map[string]int{"v1": 80, "v2": 20})}})
	const users = 600
	url := inferURL(p, "recommender")
	run := func() []string {
		as := load(t, url, users, 8, userHeader)
		out := make([]string, users)
		for i, a := range as {
			if a.status != 200 {
				t.Fatalf("user %d: status %d: %s", i, a.status, a.body)
			}
			out[i] = a.variant
		}
		return out
	}
	prev := run()
	// Weights hold: nobody switches.
	if again := run(); strings.Join(again, ",") != strings.Join(prev, ",") {
		t.Fatal("sticky users switched variant while weights held")
	}
	for _, step := range []map[string]int{{"v1": 50, "v2": 50}, {"v1": 20, "v2": 80}, {"v1": 0, "v2": 100}} {
		if err := p.Apply([]api.Model{demoModel(be, step)}, "ramp", SourceStatic); err != nil {
			t.Fatal(err)
		}
		cur := run()
		moved := 0
		for i := range cur {
			if cur[i] != prev[i] {
				if prev[i] != "v1" || cur[i] != "v2" {
					t.Fatalf("weights %v: user %d moved %s → %s", step, i, prev[i], cur[i])
				}
				moved++
			}
		}
		if moved == 0 {
			t.Fatalf("weights %v: no user moved to the rising version", step)
		}
		prev = cur
	}
}

func TestOverrideHeaderAndPathVersion(t *testing.T) {
	be := backendtest.Start(t, backendtest.Options{})
	p := startProxy(t, Config{Models: []api.Model{demoModel(be, map[string]int{"v1": 100})}})
	c := newHTTPClient()
	for _, v := range []string{"v2", "v3"} {
		a := post(t, c, inferURL(p, "recommender"), inferBody(3), map[string]string{"x-switchyard-variant": v, "x-user-id": "u1"})
		if a.status != 200 || a.variant != v {
			t.Fatalf("override %s: status %d variant %q: %s", v, a.status, a.variant, a.body)
		}
		var resp struct {
			ModelName string `json:"model_name"`
			Outputs   []struct {
				Name  string    `json:"name"`
				Shape []int64   `json:"shape"`
				Data  []float64 `json:"data"`
			} `json:"outputs"`
		}
		if err := json.Unmarshal(a.body, &resp); err != nil {
			t.Fatalf("%v: %s", err, a.body)
		}
		if resp.ModelName != "recommender-"+v || len(resp.Outputs) != 1 || len(resp.Outputs[0].Data) != 100 {
			t.Fatalf("override %s: unexpected answer %s", v, a.body)
		}
	}
	// Unknown override is ignored: the weights decide.
	if a := post(t, c, inferURL(p, "recommender"), inferBody(3), map[string]string{"x-switchyard-variant": "v9"}); a.status != 200 || a.variant != "v1" {
		t.Fatalf("unknown override: %d %q", a.status, a.variant)
	}
	// A version in the path pins it; an unknown one is 404 naming versions.
	url := "http://" + p.HTTPAddr() + "/v2/models/recommender/versions/v2/infer"
	if a := post(t, c, url, inferBody(3), nil); a.status != 200 || a.variant != "v2" {
		t.Fatalf("path version: %d %q %s", a.status, a.variant, a.body)
	}
	url = "http://" + p.HTTPAddr() + "/v2/models/recommender/versions/v9/infer"
	if a := post(t, c, url, inferBody(3), nil); a.status != 404 || !strings.Contains(string(a.body), "v1, v2, v3") {
		t.Fatalf("unknown path version: %d %s", a.status, a.body)
	}
}

func TestErrors(t *testing.T) {
	be := backendtest.Start(t, backendtest.Options{})
	m := demoModel(be, map[string]int{"v1": 100})
	hang := m.Clone()
	hang.Metadata.Name = "hangs"
	hang.Spec.Versions = []api.Version{{Name: "v1", Endpoints: []string{blackhole(t)}, BackendModel: "x"}}
	hang.Spec.Traffic = api.Traffic{Weights: map[string]int{"v1": 1}}
	hang.Spec.Timeout = api.Duration(200 * time.Millisecond)
	down := hang.Clone()
	down.Metadata.Name = "down"
	down.Spec.Versions[0].Endpoints = []string{closedAddr(t)}
	p := startProxy(t, Config{Models: []api.Model{m, hang, down}})
	c := newHTTPClient()

	a := post(t, c, inferURL(p, "nosuch"), inferBody(1), nil)
	if a.status != 404 || !strings.Contains(string(a.body), `unknown model \"nosuch\"; known models: down, hangs, recommender`) {
		t.Fatalf("unknown model: %d %s", a.status, a.body)
	}
	// Upstream 4xx passes through unchanged: compare with the backend's
	// own answer to the same bad request.
	bad := []byte(`{"inputs":[{"name":"features","datatype":"FP32","shape":[1,3],"data":[1,2,3]}]}`)
	direct := post(t, c, "http://"+be.HTTPAddr+"/v2/models/recommender-v1/infer", bad, nil)
	a = post(t, c, inferURL(p, "recommender"), bad, nil)
	if direct.status != 400 || a.status != direct.status || string(a.body) != string(direct.body) {
		t.Fatalf("4xx pass-through: proxy %d %s, backend %d %s", a.status, a.body, direct.status, direct.body)
	}
	a = post(t, c, inferURL(p, "hangs"), inferBody(1), nil)
	if a.status != 504 || !strings.Contains(string(a.body), "latency budget") {
		t.Fatalf("timeout: %d %s", a.status, a.body)
	}
	a = post(t, c, inferURL(p, "down"), inferBody(1), nil)
	if a.status != 503 || !strings.Contains(string(a.body), "no healthy upstream") {
		t.Fatalf("down: %d %s", a.status, a.body)
	}
	// Health, metadata, readiness.
	if s := getJSON(t, "http://"+p.HTTPAddr()+"/v2/health/ready", nil); s != 200 {
		t.Fatalf("ready %d", s)
	}
	var md oip.ModelMetadata
	if s := getJSON(t, "http://"+p.HTTPAddr()+"/v2/models/recommender", &md); s != 200 || md.Name != "recommender" || strings.Join(md.Versions, ",") != "v1,v2,v3" || len(md.Inputs) != 1 {
		t.Fatalf("metadata %d %+v", s, md)
	}
	if s := getJSON(t, "http://"+p.HTTPAddr()+"/v2/models/recommender/ready", nil); s != 200 {
		t.Fatalf("model ready %d", s)
	}
	if s := getJSON(t, "http://"+p.HTTPAddr()+"/v2/models/nosuch/ready", nil); s != 404 {
		t.Fatalf("unknown model ready %d", s)
	}
}

func TestGRPCFrontEnd(t *testing.T) {
	be := backendtest.Start(t, backendtest.Options{})
	p := startProxy(t, Config{Models: []api.Model{demoModel(be, map[string]int{"v1": 100})}})
	cc, err := grpc.NewClient(p.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := pb.NewGRPCInferenceServiceClient(cc)
	req := &oip.InferRequest{Inputs: []oip.Tensor{oip.NewTensor("features", []int64{2, 32}, make([]float32, 64))}}
	for _, v := range []string{"v1", "v3"} { // HTTP upstream and gRPC upstream
		ctx := metadata.AppendToOutgoingContext(context.Background(), "x-switchyard-variant", v)
		var hdr metadata.MD
		in := oip.InferRequestToProto(req)
		in.ModelName = "recommender"
		resp, err := client.ModelInfer(ctx, in, grpc.Header(&hdr))
		if err != nil {
			t.Fatalf("%s: %v", v, err)
		}
		if got := hdr.Get(front.MetadataVariant); len(got) != 1 || got[0] != v {
			t.Fatalf("%s: variant metadata %v", v, got)
		}
		out, err := oip.InferResponseFromProto(resp)
		if err != nil || len(out.Outputs) != 1 || out.Outputs[0].Shape[0] != 2 || out.Outputs[0].Shape[1] != 100 {
			t.Fatalf("%s: answer %+v %v", v, out, err)
		}
	}
	_, err = client.ModelInfer(context.Background(), &pb.ModelInferRequest{ModelName: "nosuch"})
	if st, _ := status.FromError(err); st.Code() != codes.NotFound || !strings.Contains(st.Message(), "known models: recommender") {
		t.Fatalf("unknown model: %v", err)
	}
	// Bad input through a gRPC upstream comes back as InvalidArgument.
	bad := oip.InferRequestToProto(&oip.InferRequest{Inputs: []oip.Tensor{oip.NewTensor("features", []int64{1, 3}, []float32{1, 2, 3})}})
	bad.ModelName = "recommender"
	for _, v := range []string{"v1", "v3"} {
		ctx := metadata.AppendToOutgoingContext(context.Background(), "x-switchyard-variant", v)
		_, err = client.ModelInfer(ctx, bad)
		if st, _ := status.FromError(err); st.Code() != codes.InvalidArgument {
			t.Fatalf("%s: bad input: %v", v, err)
		}
	}
	mr, err := client.ModelReady(context.Background(), &pb.ModelReadyRequest{Name: "recommender"})
	if err != nil || !mr.Ready {
		t.Fatalf("model ready: %v %v", mr, err)
	}
	md, err := client.ModelMetadata(context.Background(), &pb.ModelMetadataRequest{Name: "recommender"})
	if err != nil || md.Name != "recommender" || strings.Join(md.Versions, ",") != "v1,v2,v3" {
		t.Fatalf("metadata: %v %v", md, err)
	}
	// REST front-end to the gRPC upstream.
	a := post(t, newHTTPClient(), inferURL(p, "recommender"), inferBody(2), map[string]string{"x-switchyard-variant": "v3"})
	if a.status != 200 || a.variant != "v3" || !strings.Contains(string(a.body), `"scores"`) {
		t.Fatalf("REST→gRPC: %d %q %s", a.status, a.variant, a.body)
	}
}

func TestBackendKilledUnderTraffic(t *testing.T) {
	be1 := backendtest.Start(t, backendtest.Options{})
	be2 := backendtest.Start(t, backendtest.Options{})
	m := api.Model{
		Metadata: api.Metadata{Name: "recommender"},
		Spec: api.Spec{
			Versions: []api.Version{{Name: "v1", Endpoints: []string{be1.HTTPAddr, be2.HTTPAddr}, BackendModel: "recommender-v1"}},
			Traffic:  api.Traffic{Weights: map[string]int{"v1": 100}},
			Timeout:  api.Duration(5 * time.Second),
			Retries:  &api.Retries{Attempts: 2, BudgetPercent: 20},
		},
	}
	p := startProxy(t, Config{Models: []api.Model{m}})
	const n = 3000
	done := make(chan []answer)
	go func() { done <- load(t, inferURL(p, "recommender"), n, 8, nil) }()
	// Kill be1 once traffic flows.
	for {
		st := p.Stats()
		if st.Models[0].Variants[0].Endpoints[0].Attempts > 200 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	be1.Close()
	answers := <-done
	failed := 0
	for _, a := range answers {
		if a.status != 200 {
			failed++
		}
	}
	st := p.Stats().Models[0].Variants[0].Endpoints
	retries := testutilCounter(t, p, "switchyard_proxy_upstream_retries_total")
	// The promise: every failed attempt is retried on the other endpoint as
	// long as the budget (20 % of requests + a burst of 10) lasts, and the
	// dead endpoint is ejected, so no request fails.
	if failed != 0 {
		t.Fatalf("%d of %d requests failed (retries %v, endpoints %+v)", failed, n, retries, st)
	}
	if !st[0].Ejected || st[0].Ejections < 1 {
		t.Fatalf("killed endpoint not ejected: %+v", st[0])
	}
	if retries < 1 || retries > 10+0.2*n {
		t.Fatalf("retries %v outside the budget (1 .. %v)", retries, 10+0.2*n)
	}
}

// testutilCounter sums a counter family from the proxy's registry.
func testutilCounter(t *testing.T, p *Proxy, name string) float64 {
	t.Helper()
	mfs, err := p.cfg.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

func TestAdminEndpoints(t *testing.T) {
	be := backendtest.Start(t, backendtest.Options{})
	p := startProxy(t, Config{Models: []api.Model{demoModel(be, map[string]int{"v1": 80, "v2": 20})}})
	load(t, inferURL(p, "recommender"), 50, 4, nil)
	var dump ConfigDump
	if s := getJSON(t, "http://"+p.AdminAddr()+"/config_dump", &dump); s != 200 || dump.Source != SourceStatic || len(dump.Models) != 1 {
		t.Fatalf("config_dump %d %+v", s, dump)
	}
	var stats Stats
	if s := getJSON(t, "http://"+p.AdminAddr()+"/stats", &stats); s != 200 || stats.Models[0].Variants[0].Breaker != "closed" {
		t.Fatalf("stats %d %+v", s, stats)
	}
	if s := getJSON(t, "http://"+p.AdminAddr()+"/ready", nil); s != 200 {
		t.Fatalf("ready %d", s)
	}
	r, err := newHTTPClient().Get("http://" + p.AdminAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	var sb strings.Builder
	buf := make([]byte, 1<<16)
	for {
		n, err := r.Body.Read(buf)
		sb.Write(buf[:n])
		if err != nil {
			break
		}
	}
	text := sb.String()
	for _, want := range []string{
		`switchyard_proxy_requests_total{code="200",model="recommender",variant="v1"}`,
		`switchyard_proxy_request_duration_seconds_bucket{model="recommender",variant="v2"`,
		`switchyard_proxy_breaker_state{model="recommender",variant="v1"} 0`,
		`switchyard_proxy_config_info{source="static",version="static"} 1`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	total := 0.0
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, "switchyard_proxy_requests_total{") {
			f, _ := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			total += f
		}
	}
	if total != 50 {
		t.Fatalf("requests_total sums to %v, want 50", total)
	}
}
