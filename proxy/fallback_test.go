package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/controlplane"
	"github.com/switchyard-dev/switchyard/controlplane/cptest"
	"github.com/switchyard-dev/switchyard/inference-backend/backendtest"
	"github.com/switchyard-dev/switchyard/inference-backend/demomodels"
	"github.com/switchyard-dev/switchyard/oip"
	pb "github.com/switchyard-dev/switchyard/oip/inferencepb"
	"github.com/switchyard-dev/switchyard/proxy/pipeline"
)

// featuresProxy starts a proxy with these cache/fallback/shadow settings
// and its own registry.
func featuresProxy(t testing.TB, cfg Config, fc FeaturesConfig) (*Proxy, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg.Registry = reg
	if fc.ShadowDir == "" {
		fc.ShadowDir = t.TempDir()
	}
	cfg.Features = fc
	return startProxy(t, cfg), reg
}

// metricSum sums the samples of a metric family whose labels include want.
func metricSum(t testing.TB, g prometheus.Gatherer, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if labels[k] != v {
					continue next
				}
			}
			switch {
			case m.GetCounter() != nil:
				sum += m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				sum += m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				sum += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return sum
}

// backendRequests is how many inference requests a real backend served for
// one of its models.
func backendRequests(t testing.TB, be *backendtest.Running, model string) float64 {
	return metricSum(t, be.Registry, "switchyard_backend_requests_total", map[string]string{"model": model})
}

// featuresBody is a one-row request for the demo models from
// demomodels.RandomFeatures(seed, 1).
func featuresBody(seed uint64) ([]byte, []float32) {
	row := demomodels.RandomFeatures(seed, 1)[0]
	req := &oip.InferRequest{Inputs: []oip.Tensor{oip.NewTensor("features", []int64{1, 32}, row)}}
	b, _, err := oip.AppendInferRequest(nil, req, false)
	if err != nil {
		panic(err)
	}
	return b, row
}

type fullAnswer struct {
	status      int
	variant     string
	fallback    string
	reason      string
	cache       string
	contentType string
	headerLen   string
	body        []byte
}

func postFull(t testing.TB, c *http.Client, url string, body []byte, hdr map[string]string) fullAnswer {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		return fullAnswer{status: -1, body: []byte(err.Error())}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return fullAnswer{status: resp.StatusCode, variant: resp.Header.Get("X-Switchyard-Variant"),
		fallback: resp.Header.Get("X-Switchyard-Fallback"), reason: resp.Header.Get("X-Switchyard-Fallback-Reason"),
		cache: resp.Header.Get("X-Switchyard-Cache"), contentType: resp.Header.Get("Content-Type"),
		headerLen: resp.Header.Get(oip.HeaderContentLength), body: b}
}

func scoresOf(t testing.TB, body []byte) []float32 {
	t.Helper()
	resp, err := oip.DecodeInferResponse(body, 0)
	if err != nil {
		t.Fatalf("decode answer: %v: %s", err, body)
	}
	for _, o := range resp.Outputs {
		if o.Name == "scores" {
			return oip.Values[float32](o.Raw)
		}
	}
	t.Fatalf("no scores in %s", body)
	return nil
}

// staticScores is a static answer [1,100] with the given first value.
func staticScores(first float64) *api.Static {
	data := make([]float64, 100)
	for i := range data {
		data[i] = float64(100-i) / 100
	}
	data[0] = first
	return &api.Static{Outputs: []api.StaticTensor{{Name: "scores", Datatype: "FP32", Shape: []int64{1, 100}, Data: data}}}
}

// shim is a real HTTP reverse proxy in front of a backend that counts the
// requests it forwards (and those marked as shadow traffic), and can be
// told to answer 503 itself or to delay each request.
type shim struct {
	addr            string
	calls, shadowed atomic.Int64
	down            atomic.Bool
	delay           atomic.Int64 // nanoseconds
}

func startShim(t testing.TB, backendAddr string) *shim {
	t.Helper()
	s := &shim{}
	target, _ := url.Parse("http://" + backendAddr)
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = &http.Transport{MaxIdleConnsPerHost: 64}
	srv := serveHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.down.Load() {
			http.Error(w, `{"error":"shim: down"}`, http.StatusServiceUnavailable)
			return
		}
		s.calls.Add(1)
		if r.Header.Get("X-Switchyard-Shadow") == "true" {
			s.shadowed.Add(1)
		}
		if d := time.Duration(s.delay.Load()); d > 0 {
			time.Sleep(d)
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(func() { rp.Transport.(*http.Transport).CloseIdleConnections() })
	s.addr = srv
	return s
}

// serveHTTP serves h on 127.0.0.1:0 until the test ends.
func serveHTTP(t testing.TB, h http.Handler) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-done
	})
	return l.Addr().String()
}

// recommenderWith is a model "recommender" with the demo versions v1, v2
// (REST), v3 (gRPC) and lite (REST) on be; v1 takes all traffic.
func recommenderWith(be *backendtest.Running, mutate func(m *api.Model)) api.Model {
	m := api.Model{
		Metadata: api.Metadata{Name: "recommender"},
		Spec: api.Spec{
			Versions: []api.Version{
				{Name: "v1", Endpoints: []string{be.HTTPAddr}, BackendModel: "recommender-v1"},
				{Name: "v2", Endpoints: []string{be.HTTPAddr}, BackendModel: "recommender-v2"},
				{Name: "v3", Endpoints: []string{be.GRPCAddr}, Protocol: api.ProtocolGRPC, BackendModel: "recommender-v3"},
				{Name: "lite", Endpoints: []string{be.HTTPAddr}, BackendModel: "recommender-lite"},
			},
			Traffic: api.Traffic{Weights: map[string]int{"v1": 100}, StickyHeader: "x-user-id"},
			Timeout: api.Duration(5 * time.Second),
		},
	}
	if mutate != nil {
		mutate(&m)
	}
	return m
}

// TestFallbackChainWhenPrimaryDies: the primary's backend is killed under
// load; no client sees an error. Inputs answered before come from the last
// good cache (the same bytes), new inputs from the backup version; with the
// backup gone too, the static answer.
func TestFallbackChainWhenPrimaryDies(t *testing.T) {
	beMain := backendtest.Start(t, backendtest.Options{})
	beLite := backendtest.Start(t, backendtest.Options{})
	m := recommenderWith(beMain, func(m *api.Model) {
		m.Spec.Versions[3].Endpoints = []string{beLite.HTTPAddr}
		m.Spec.Timeout = api.Duration(2 * time.Second)
		m.Spec.Cache = &api.Cache{}
		m.Spec.Fallback = &api.Fallback{Chain: []string{"cache", "backup", "static"}, Backup: "lite",
			Static: staticScores(42), Breaker: api.Breaker{ConsecutiveFailures: 3, OpenFor: api.Duration(time.Minute), FirstOpenFor: api.Duration(time.Minute)}}
	})
	p, reg := featuresProxy(t, Config{Models: []api.Model{m}}, FeaturesConfig{})
	url := inferURL(p, "recommender")
	c := newHTTPClient()
	defer c.CloseIdleConnections()
	noCache := map[string]string{"Cache-Control": "no-cache"}

	// Known inputs: answered once by v1 (filling the last good store).
	const known = 20
	original := make([][]byte, known)
	for i := range known {
		body, _ := featuresBody(uint64(i))
		a := postFull(t, c, url, body, nil)
		if a.status != 200 || a.variant != "v1" || a.fallback != "" {
			t.Fatalf("warm-up %d: %+v %s", i, a, a.body)
		}
		original[i] = a.body
	}

	// Load: known and new inputs, bypassing the serving cache; v1's
	// backend is killed after the first quarter.
	const n, workers = 400, 8
	var (
		mu      sync.Mutex
		kinds   = map[string]int{}
		fails   []string
		sent    atomic.Int64
		killed  = make(chan struct{})
		killOne sync.Once
	)
	var wg sync.WaitGroup
	next := make(chan int)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wc := newHTTPClient()
			defer wc.CloseIdleConnections()
			for i := range next {
				seed := uint64(i % (2 * known)) // < known: seen before; else new
				if seed >= known {
					seed += uint64(1000 + i)
				}
				body, _ := featuresBody(seed)
				a := postFull(t, wc, url, body, noCache)
				if sent.Add(1) == n/4 {
					killOne.Do(func() { beMain.Close(); close(killed) })
				}
				mu.Lock()
				switch {
				case a.status != 200:
					fails = append(fails, fmt.Sprintf("request %d: status %d: %s", i, a.status, a.body))
				case a.fallback == "cache" && !bytes.Equal(a.body, original[seed]):
					fails = append(fails, fmt.Sprintf("request %d: cached fallback differs from the original answer", i))
				case a.fallback == "cache" && seed >= known, a.fallback == "backup" && a.variant != "lite":
					fails = append(fails, fmt.Sprintf("request %d: fallback %q from %q for seed %d", i, a.fallback, a.variant, seed))
				}
				kinds[a.fallback]++
				mu.Unlock()
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	<-killed
	if len(fails) > 0 {
		t.Fatalf("%d of %d requests failed or were wrong, e.g. %s", len(fails), n, fails[0])
	}
	if kinds["cache"] == 0 || kinds["backup"] == 0 || kinds[""] == 0 {
		t.Fatalf("answers by fallback kind %v: want v1, cache and backup answers", kinds)
	}
	// Breaker: v1 is open after its failures; no more calls go to it.
	if st := p.Route("recommender").Variant("v1").Breaker.State().String(); st != "open" {
		t.Fatalf("v1 breaker %s, want open", st)
	}
	if got := metricSum(t, reg, "switchyard_proxy_breaker_state", map[string]string{"model": "recommender", "variant": "v1"}); got != 2 {
		t.Fatalf("switchyard_proxy_breaker_state{v1} = %v, want 2 (open)", got)
	}

	// The backup dies too: new inputs get the static answer.
	beLite.Close()
	for i := range 10 {
		body, _ := featuresBody(uint64(5000 + i))
		a := postFull(t, c, url, body, noCache)
		if a.status != 200 || a.fallback != "static" || a.reason != "breaker_open" {
			t.Fatalf("after both died: %+v %s", a, a.body)
		}
		if s := scoresOf(t, a.body); len(s) != 100 || s[0] != 42 {
			t.Fatalf("static answer %v", s[:3])
		}
		// A JSON client gets a plain JSON answer, not the binary extension.
		if !strings.HasPrefix(a.contentType, "application/json") || a.headerLen != "" {
			t.Fatalf("static answer content type %q, %s %q", a.contentType, oip.HeaderContentLength, a.headerLen)
		}
	}
	for _, kind := range []string{"cache", "backup", "static"} {
		if got := metricSum(t, reg, "switchyard_fallbacks_total", map[string]string{"model": "recommender", "kind": kind}); got == 0 {
			t.Errorf("switchyard_fallbacks_total{kind=%s} = 0", kind)
		}
	}
	if got := metricSum(t, reg, "switchyard_fallback_triggers_total", map[string]string{"model": "recommender", "version": "v1", "trigger": "connect_error"}); got == 0 {
		t.Errorf("no connect_error trigger counted for v1")
	}
	var st pipeline.FallbackStatus
	getJSON(t, "http://"+p.AdminAddr()+"/fallback", &st)
	if len(st.Models) != 1 || st.Models[0].Breakers[0].State != "open" || st.Models[0].LastGood == nil || st.Models[0].LastGood.Entries < known {
		t.Fatalf("admin /fallback: %+v", st)
	}
}

// TestFallbackNaNToBackup: v3 answers NaN for some inputs; those requests
// are answered by the backup (v1) and marked nan_output, over a gRPC
// upstream (NaN in binary outputs) and a REST one (the backend's 500 naming
// the NaN output), for REST and gRPC clients.
func TestFallbackNaNToBackup(t *testing.T) {
	be := backendtest.Start(t, backendtest.Options{})
	mk := func(name string, v3 api.Version) api.Model {
		return recommenderWith(be, func(m *api.Model) {
			m.Metadata.Name = name
			m.Spec.Versions[2] = v3
			m.Spec.Traffic.Weights = map[string]int{"v3": 100}
			m.Spec.Fallback = &api.Fallback{Chain: []string{"backup"}, Backup: "v1"}
		})
	}
	models := []api.Model{
		mk("rec-grpc", api.Version{Name: "v3", Endpoints: []string{be.GRPCAddr}, Protocol: api.ProtocolGRPC, BackendModel: "recommender-v3"}),
		mk("rec-rest", api.Version{Name: "v3", Endpoints: []string{be.HTTPAddr}, BackendModel: "recommender-v3"}),
	}
	p, reg := featuresProxy(t, Config{Models: models}, FeaturesConfig{})
	c := newHTTPClient()
	defer c.CloseIdleConnections()
	w1, _ := demomodels.Weights(demomodels.V1)
	conn, err := grpc.NewClient(p.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	gc := pb.NewGRPCInferenceServiceClient(conn)
	nanSeen := 0
	for seed := uint64(0); seed < 48; seed++ {
		body, row := featuresBody(seed)
		nan := demomodels.NaNRule(row)
		if nan {
			nanSeen++
		}
		want := w1.Eval(row)
		for _, m := range models {
			a := postFull(t, c, inferURL(p, m.Metadata.Name), body, nil)
			if a.status != 200 {
				t.Fatalf("%s seed %d: %+v %s", m.Metadata.Name, seed, a, a.body)
			}
			switch {
			case nan && (a.variant != "v1" || a.fallback != "backup" || a.reason != "nan_output"):
				t.Fatalf("%s seed %d (NaN row): variant %q fallback %q reason %q", m.Metadata.Name, seed, a.variant, a.fallback, a.reason)
			case !nan && (a.variant != "v3" || a.fallback != ""):
				t.Fatalf("%s seed %d: variant %q fallback %q", m.Metadata.Name, seed, a.variant, a.fallback)
			}
			// v3 is v1 outside the NaN rule: either way the scores are v1's.
			got := scoresOf(t, a.body)
			for i := range want {
				if d := got[i] - want[i]; d > 1e-4 || d < -1e-4 {
					t.Fatalf("%s seed %d: score %d = %v, v1 offline %v", m.Metadata.Name, seed, i, got[i], want[i])
				}
			}
			// gRPC client, same input.
			var hdr metadata.MD
			req := &pb.ModelInferRequest{ModelName: m.Metadata.Name, Inputs: []*pb.ModelInferRequest_InferInputTensor{{
				Name: "features", Datatype: "FP32", Shape: []int64{1, 32}, Contents: &pb.InferTensorContents{Fp32Contents: row}}}}
			resp, err := gc.ModelInfer(context.Background(), req, grpc.Header(&hdr))
			if err != nil {
				t.Fatalf("%s seed %d gRPC: %v", m.Metadata.Name, seed, err)
			}
			if nan && (first(hdr["x-switchyard-fallback"]) != "backup" || first(hdr["x-switchyard-fallback-reason"]) != "nan_output") {
				t.Fatalf("%s seed %d gRPC: metadata %v", m.Metadata.Name, seed, hdr)
			}
			if len(resp.GetOutputs()) != 1 {
				t.Fatalf("gRPC answer %v", resp)
			}
		}
	}
	if nanSeen == 0 {
		t.Fatal("no input hit the NaN rule; pick other seeds")
	}
	for _, m := range models {
		got := metricSum(t, reg, "switchyard_fallback_triggers_total", map[string]string{"model": m.Metadata.Name, "version": "v3", "trigger": "nan_output"})
		if got != float64(2*nanSeen) {
			t.Errorf("%s: nan_output triggers %v, want %d", m.Metadata.Name, got, 2*nanSeen)
		}
	}
}

// TestBreakerOpensAndCloses: after the configured consecutive failures the
// breaker opens (no more calls reach the version; answers say
// breaker_open); once the version is healthy and the open time has passed,
// a successful probe closes it.
func TestBreakerOpensAndCloses(t *testing.T) {
	be := backendtest.Start(t, backendtest.Options{})
	sh := startShim(t, be.HTTPAddr)
	m := recommenderWith(be, func(m *api.Model) {
		m.Spec.Versions[0].Endpoints = []string{sh.addr}
		m.Spec.Fallback = &api.Fallback{Chain: []string{"static"}, Static: staticScores(7),
			Breaker: api.Breaker{ConsecutiveFailures: 3, OpenFor: api.Duration(300 * time.Millisecond)}}
	})
	p, reg := featuresProxy(t, Config{Models: []api.Model{m}}, FeaturesConfig{})
	url := inferURL(p, "recommender")
	c := newHTTPClient()
	defer c.CloseIdleConnections()
	body, _ := featuresBody(1)
	state := func() string {
		var s Stats
		getJSON(t, "http://"+p.AdminAddr()+"/stats", &s)
		return s.Models[0].Variants[0].Breaker
	}
	if a := postFull(t, c, url, body, nil); a.status != 200 || a.fallback != "" {
		t.Fatalf("healthy: %+v", a)
	}
	sh.down.Store(true)
	for i := range 3 {
		a := postFull(t, c, url, body, nil)
		if a.status != 200 || a.fallback != "static" || a.reason != "unavailable" {
			t.Fatalf("failure %d: %+v %s", i, a, a.body)
		}
	}
	if s := state(); s != "open" {
		t.Fatalf("breaker %q after 3 failures, want open", s)
	}
	if got := metricSum(t, reg, "switchyard_proxy_breaker_state", map[string]string{"variant": "v1"}); got != 2 {
		t.Fatalf("breaker gauge %v, want 2", got)
	}
	sh.down.Store(false)
	before := sh.calls.Load()
	a := postFull(t, c, url, body, nil)
	if a.status != 200 || a.fallback != "static" || a.reason != "breaker_open" {
		t.Fatalf("open breaker: %+v", a)
	}
	if sh.calls.Load() != before {
		t.Fatal("a request reached the version while its breaker was open")
	}
	// Healthy again: after the open time a probe goes through and closes it.
	waitFor(t, "a successful probe", func() bool {
		return postFull(t, c, url, body, nil).fallback == ""
	})
	if s := state(); s != "closed" {
		t.Fatalf("breaker %q after a successful probe, want closed", s)
	}
	if got := metricSum(t, reg, "switchyard_proxy_breaker_state", map[string]string{"variant": "v1"}); got != 0 {
		t.Fatalf("breaker gauge %v, want 0", got)
	}
	// Each state entered is counted once: closed → open → half-open → closed.
	for _, to := range []string{"open", "half-open", "closed"} {
		if got := metricSum(t, reg, "switchyard_proxy_breaker_transitions_total", map[string]string{"variant": "v1", "to": to}); got != 1 {
			t.Errorf("breaker transitions to %s = %v, want 1", to, got)
		}
	}
}

// TestStaticFallbackUpdatedThroughAPI: PUT /v1/models/{name}/fallback/static
// replaces only the static answer, as a new audited revision, and proxies
// serve it without a restart.
func TestStaticFallbackUpdatedThroughAPI(t *testing.T) {
	be := backendtest.Start(t, backendtest.Options{})
	cp := cptest.Start(t, controlplane.Config{InsecureLoopbackNoAuth: true}, nil).ControlPlane
	m := recommenderWith(be, func(m *api.Model) {
		m.Spec.Versions[0].Endpoints = []string{closedAddr(t)} // v1 is down
		m.Spec.Fallback = &api.Fallback{Chain: []string{"static"}, Static: staticScores(1)}
	})
	rev := putModel(t, cp, m)
	p, _ := featuresProxy(t, Config{XDSAddr: cp.XDSAddr(), NodeID: "proxy-static",
		XDSBackoffMin: 20 * time.Millisecond, XDSBackoffMax: 200 * time.Millisecond}, FeaturesConfig{})
	waitFor(t, "the configuration", func() bool { return p.Route("recommender") != nil })
	url := inferURL(p, "recommender")
	c := newHTTPClient()
	defer c.CloseIdleConnections()
	body, _ := featuresBody(3)
	if a := postFull(t, c, url, body, nil); a.status != 200 || a.fallback != "static" || scoresOf(t, a.body)[0] != 1 {
		t.Fatalf("before: %+v %s", a, a.body)
	}

	callAPI := func(method, path, body string) (int, []byte) {
		req, _ := http.NewRequest(method, cp.APIURL()+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	// Bad: the shape needs 100 values.
	if code, b := callAPI(http.MethodPut, "/v1/models/recommender/fallback/static",
		`{"outputs":[{"name":"scores","datatype":"FP32","shape":[1,100],"data":[1,2,3]}]}`); code != 400 || !strings.Contains(string(b), "outputs[0]") {
		t.Fatalf("bad static: %d %s", code, b)
	}
	// Good: today's popular items.
	st := staticScores(99)
	doc, _ := json.Marshal(map[string]any{"outputs": st.Outputs, "reason": "popular items of the day"})
	code, b := callAPI(http.MethodPut, "/v1/models/recommender/fallback/static", string(doc))
	if code != 200 {
		t.Fatalf("PUT static: %d %s", code, b)
	}
	var mr api.ModelResponse
	if err := json.Unmarshal(b, &mr); err != nil {
		t.Fatal(err)
	}
	if mr.Revision <= rev || mr.Model.Spec.Fallback.Static.Outputs[0].Data[0] != 99 ||
		mr.Model.Spec.Traffic.Weights["v1"] != 100 || len(mr.Model.Spec.Versions) != 4 {
		t.Fatalf("stored model: revision %d (was %d) %+v", mr.Revision, rev, mr.Model.Spec)
	}
	waitFor(t, "the new static answer", func() bool {
		a := postFull(t, c, url, body, nil)
		return a.status == 200 && a.fallback == "static" && scoresOf(t, a.body)[0] == 99
	})
	code, b = callAPI(http.MethodGet, "/v1/audit?model=recommender", "")
	if code != 200 || !strings.Contains(string(b), `"fallback-static"`) || !strings.Contains(string(b), "popular items of the day") {
		t.Fatalf("audit: %d %s", code, b)
	}
}

// TestBackupRejectionMovesChainOn: whose fault a 400 is depends on who
// said it. With the serving version down, a request the backup rejects
// (400 / InvalidArgument: the backup disagrees with the request's form)
// moves the chain on to static; the same request to a serving primary that
// rejects it gets that 400 naming the problem (the request is at fault).
// (Issue 15; it replaces TestFallbackPassesBadRequestThrough, whose rule —
// a backup's 400 ends the chain — the issue reverses.)
func TestBackupRejectionMovesChainOn(t *testing.T) {
	be := backendtest.Start(t, backendtest.Options{})
	models := deadPrimaryWithBackup(be, closedAddr(t), 5)
	p, _ := featuresProxy(t, Config{Models: models}, FeaturesConfig{})
	c := newHTTPClient()
	defer c.CloseIdleConnections()
	bad := []byte(`{"inputs":[{"name":"features","datatype":"FP32","shape":[1,3],"data":[1,2,3]}]}`)
	for _, m := range models {
		a := postFull(t, c, inferURL(p, m.Metadata.Name), bad, nil)
		if a.status != 200 || a.fallback != "static" || a.reason != "connect_error" || scoresOf(t, a.body)[0] != 5 {
			t.Fatalf("%s: request the backup rejects while v1 is down: %+v %s", m.Metadata.Name, a, a.body)
		}
		// A request that is not well-formed at all is the client's
		// fault whoever is asked: 400 naming the problem, no chain.
		a = postFull(t, c, inferURL(p, m.Metadata.Name), []byte(`{"inputs":[{"name":"features","datatype":"FP32","shape":[1,3],"data":[1,2]}]}`), nil)
		if a.status != 400 || a.fallback != "" || !strings.Contains(string(a.body), "features") {
			t.Fatalf("%s: malformed request while v1 is down: %+v %s", m.Metadata.Name, a, a.body)
		}
		// The primary itself rejecting it: the client gets the 400.
		a = postFull(t, c, inferURL(p, m.Metadata.Name), bad, map[string]string{"x-switchyard-variant": "lite"})
		if a.status != 400 || !strings.Contains(string(a.body), "features") || a.fallback != "" {
			t.Fatalf("%s: malformed request to a serving primary: %+v %s", m.Metadata.Name, a, a.body)
		}
		// A good request still falls back to the backup.
		body, _ := featuresBody(1)
		if a := postFull(t, c, inferURL(p, m.Metadata.Name), body, nil); a.status != 200 || a.fallback != "backup" {
			t.Fatalf("%s: good request while v1 is down: %+v %s", m.Metadata.Name, a, a.body)
		}
	}
}
