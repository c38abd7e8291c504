package proxy

import (
	"bufio"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	grpcgzip "google.golang.org/grpc/encoding/gzip"
	"google.golang.org/grpc/metadata"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/fallback"
	"github.com/switchyard-dev/switchyard/inference-backend/backendtest"
	"github.com/switchyard-dev/switchyard/oip"
	"github.com/switchyard-dev/switchyard/oip/compress"
	pb "github.com/switchyard-dev/switchyard/oip/inferencepb"
	"github.com/switchyard-dev/switchyard/proxy/front"
)

// protocolProxy is the demo route (v1, v2 REST; v3 gRPC) at 20/80, so the
// serving version is v2, and a gRPC client of the proxy.
func protocolProxy(t *testing.T) (*Proxy, pb.GRPCInferenceServiceClient) {
	t.Helper()
	be := backendtest.Start(t, backendtest.Options{})
	p := startProxy(t, Config{Models: []api.Model{demoModel(be, map[string]int{"v1": 20, "v2": 80})}})
	cc, err := grpc.NewClient(p.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return p, pb.NewGRPCInferenceServiceClient(cc)
}

func get(t *testing.T, url string, hdr map[string]string) (int, http.Header, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

// TestVirtualModelDescribe: metadata, configuration, statistics and
// readiness of the virtual model describe one version (the serving one,
// or the one named) under the virtual name, over REST and gRPC, and the
// versions advertised are the ones the proxy accepts.
func TestVirtualModelDescribe(t *testing.T) {
	p, client := protocolProxy(t)
	base := "http://" + p.HTTPAddr() + "/v2/models/recommender"
	ctx := context.Background()

	for i := 0; i < 5; i++ { // a 20/80 split: always the serving version, v2
		var md oip.ModelMetadata
		status, hdr, b := get(t, base, nil)
		if err := json.Unmarshal(b, &md); status != 200 || err != nil || md.Name != "recommender" ||
			strings.Join(md.Versions, ",") != "v1,v2,v3" || hdr.Get("X-Switchyard-Variant") != "v2" {
			t.Fatalf("metadata %d %s (variant %q)", status, b, hdr.Get("X-Switchyard-Variant"))
		}
	}
	// Every advertised version works in /versions/{v}/ and model_version.
	for _, v := range []string{"v1", "v2", "v3"} {
		status, hdr, b := get(t, base+"/versions/"+v, nil)
		if status != 200 || hdr.Get("X-Switchyard-Variant") != v {
			t.Fatalf("metadata of %s: %d %s", v, status, b)
		}
		if status, _, b := get(t, base+"/versions/"+v+"/ready", nil); status != 200 {
			t.Fatalf("ready of %s: %d %s", v, status, b)
		}
		a := post(t, newHTTPClient(), base+"/versions/"+v+"/infer", inferBody(1), nil)
		if a.status != 200 || a.variant != v {
			t.Fatalf("infer pinned to %s: %d %q %s", v, a.status, a.variant, a.body)
		}
		in := oip.InferRequestToProto(&oip.InferRequest{Inputs: []oip.Tensor{oip.NewTensor("features", []int64{1, 32}, make([]float32, 32))}})
		in.ModelName, in.ModelVersion = "recommender", v
		if _, err := client.ModelInfer(ctx, in); err != nil {
			t.Fatalf("gRPC infer pinned to %s: %v", v, err)
		}
	}
	if n := metricSum(t, p.cfg.Registry, "switchyard_proxy_picks_total", map[string]string{"variant": "v3", "reason": "pinned"}); n != 2 {
		t.Errorf("pinned picks of v3 = %v, want 2 (REST + gRPC)", n)
	}
	// An unknown version names the ones there are.
	if status, _, b := get(t, base+"/versions/1", nil); status != 404 || !strings.Contains(string(b), "versions: v1, v2, v3") {
		t.Fatalf("unknown version: %d %s", status, b)
	}

	// Configuration: REST and gRPC, under the virtual name.
	var cfg oip.ModelConfig
	status, _, b := get(t, base+"/config", nil)
	if err := json.Unmarshal(b, &cfg); status != 200 || err != nil || cfg.Name != "recommender" || len(cfg.Input) != 1 || cfg.Input[0].Name != "features" {
		t.Fatalf("config %d %s", status, b)
	}
	for _, v := range []string{"", "v3"} { // an HTTP and the gRPC backend
		gc, err := client.ModelConfig(ctx, &pb.ModelConfigRequest{Name: "recommender", Version: v})
		if err != nil || gc.GetConfig().GetName() != "recommender" || len(gc.GetConfig().GetOutput()) != 1 {
			t.Fatalf("gRPC config %q: %v %v", v, gc, err)
		}
	}

	// Statistics: the version's own, renamed.
	var st struct {
		ModelStats []oip.ModelStatistics `json:"model_stats"`
	}
	status, _, b = get(t, base+"/versions/v1/stats", nil)
	if err := json.Unmarshal(b, &st); status != 200 || err != nil || len(st.ModelStats) != 1 ||
		st.ModelStats[0].Name != "recommender" || st.ModelStats[0].Version != "v1" || st.ModelStats[0].InferenceStats.Success.Count == 0 {
		t.Fatalf("stats of v1 (which answered a pinned request): %d %s", status, b)
	}
	gs, err := client.ModelStatistics(ctx, &pb.ModelStatisticsRequest{Name: "recommender", Version: "v3"})
	if err != nil || len(gs.GetModelStats()) != 1 || gs.ModelStats[0].GetName() != "recommender" || gs.ModelStats[0].GetVersion() != "v3" {
		t.Fatalf("gRPC stats of v3: %v %v", gs, err)
	}
	if status, _, b := get(t, "http://"+p.HTTPAddr()+"/v2/models/stats", nil); status != 200 || !strings.Contains(string(b), `"name":"recommender"`) {
		t.Fatalf("all stats: %d %s", status, b)
	}

	// Readiness: Triton's answer for an unknown model over gRPC.
	if r, err := client.ModelReady(ctx, &pb.ModelReadyRequest{Name: "nosuch"}); err != nil || r.GetReady() {
		t.Fatalf("gRPC ready of an unknown model: %v %v", r, err)
	}
	if status, _, _ := get(t, "http://"+p.HTTPAddr()+"/v2/models/nosuch/ready", nil); status != 404 {
		t.Fatalf("REST ready of an unknown model: %d", status)
	}
}

// TestStreamInferThroughProxy: each message of a ModelStreamInfer stream is
// routed like a unary call and answered with its id; a bad message gets
// its own error and the stream goes on.
func TestStreamInferThroughProxy(t *testing.T) {
	_, client := protocolProxy(t)
	ctx := metadata.AppendToOutgoingContext(context.Background(), "x-user-id", "user-7")
	stream, err := client.ModelStreamInfer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	for i := 0; i < n; i++ {
		in := oip.InferRequestToProto(&oip.InferRequest{ID: "req-" + string(rune('a'+i)), Inputs: []oip.Tensor{oip.NewTensor("features", []int64{1, 32}, make([]float32, 32))}})
		in.ModelName = "recommender"
		if i == 7 {
			in.Inputs[0].Shape = []int64{1, 3} // contradicts its data
		}
		if err := stream.Send(in); err != nil {
			t.Fatal(err)
		}
	}
	stream.CloseSend()
	seen := map[string]bool{}
	errs := 0
	for {
		m, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		id := m.GetInferResponse().GetId()
		if seen[id] {
			t.Fatalf("answer for %q twice", id)
		}
		seen[id] = true
		if m.GetErrorMessage() != "" {
			errs++
			if id != "req-h" || !strings.Contains(m.GetErrorMessage(), "features") {
				t.Fatalf("error for %q: %s", id, m.GetErrorMessage())
			}
			// Triton's error_message is the message alone (tritonclient
			// shows it as the exception's text), not grpc-go's status
			// string "rpc error: code = … desc = …".
			if msg := m.GetErrorMessage(); strings.Contains(msg, "rpc error") || strings.Contains(msg, "code =") {
				t.Fatalf("error for %q carries the status wrapping: %q", id, msg)
			}
			continue
		}
		if len(m.GetInferResponse().GetOutputs()) != 1 {
			t.Fatalf("answer %q: %v", id, m.GetInferResponse())
		}
	}
	if len(seen) != n || errs != 1 {
		t.Fatalf("answers %d (want %d), errors %d (want 1)", len(seen), n, errs)
	}
}

// TestProxyCompression: REST bodies in gzip, zlib deflate and raw deflate
// are inflated before anything reads them; the limit counts inflated
// bytes; answers are gzipped when the client asks; gRPC gzip and deflate.
func TestProxyCompression(t *testing.T) {
	p, client := protocolProxy(t)
	url := inferURL(p, "recommender")
	plain := inferBody(3)
	encode := map[string]func([]byte) []byte{
		"gzip": func(b []byte) []byte {
			var buf bytes.Buffer
			w := gzip.NewWriter(&buf)
			w.Write(b)
			w.Close()
			return buf.Bytes()
		},
		"deflate (zlib)": func(b []byte) []byte {
			var buf bytes.Buffer
			w := zlib.NewWriter(&buf)
			w.Write(b)
			w.Close()
			return buf.Bytes()
		},
		"deflate (raw)": func(b []byte) []byte {
			var buf bytes.Buffer
			w, _ := flate.NewWriter(&buf, flate.BestSpeed)
			w.Write(b)
			w.Close()
			return buf.Bytes()
		},
	}
	c := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	want := post(t, c, url, plain, map[string]string{"x-switchyard-variant": "v1"})
	for name, enc := range encode {
		coding := strings.Fields(name)[0]
		a := post(t, c, url, enc(plain), map[string]string{"Content-Encoding": coding, "x-switchyard-variant": "v1"})
		if a.status != 200 || !bytes.Equal(a.body, want.body) {
			t.Fatalf("%s: %d %s", name, a.status, a.body)
		}
	}
	if a := post(t, c, url, []byte("not gzip"), map[string]string{"Content-Encoding": "gzip"}); a.status != 400 {
		t.Fatalf("corrupt gzip: %d %s", a.status, a.body)
	}
	if a := post(t, c, url, plain, map[string]string{"Content-Encoding": "br"}); a.status != 400 || !strings.Contains(string(a.body), "br") {
		t.Fatalf("unknown coding: %d %s", a.status, a.body)
	}

	// A small body that inflates past the limit: 413, not an OOM.
	small := startProxy(t, Config{Models: models(p), MaxBodyBytes: 64 << 10})
	bomb := encode["gzip"](bytes.Repeat([]byte(" "), 8<<20))
	if a := post(t, c, inferURL(small, "recommender"), bomb, map[string]string{"Content-Encoding": "gzip"}); a.status != 413 {
		t.Fatalf("zip bomb (%d bytes): %d %s", len(bomb), a.status, a.body)
	}

	// Answers in gzip when asked.
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(plain))
	req.Header.Set("Accept-Encoding", "gzip")
	req.Header.Set("X-Switchyard-Variant", "v1")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("no gzip answer (%d bytes): %v", len(raw), resp.Header)
	}
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	unz, _ := io.ReadAll(zr)
	if !bytes.Equal(unz, want.body) {
		t.Fatalf("gzip answer differs: %s", unz)
	}

	// gRPC: gzip (grpc-go's) and deflate (oip/compress), both ways.
	for _, comp := range []string{grpcgzip.Name, compress.Deflate} {
		in := oip.InferRequestToProto(&oip.InferRequest{Inputs: []oip.Tensor{oip.NewTensor("features", []int64{1, 32}, make([]float32, 32))}})
		in.ModelName = "recommender"
		if _, err := client.ModelInfer(context.Background(), in, grpc.UseCompressor(comp)); err != nil {
			t.Fatalf("gRPC %s: %v", comp, err)
		}
	}
}

// TestLosslessGRPCToHTTPVersion: what a gRPC client may send reaches an
// http-protocol version intact — raw contents with the KServe SDK's
// binary_data_size parameter, NaN and ±Inf inputs.
func TestLosslessGRPCToHTTPVersion(t *testing.T) {
	_, client := protocolProxy(t)
	ctx := metadata.AppendToOutgoingContext(context.Background(), "x-switchyard-variant", "v1") // REST upstream
	row := make([]float32, 32)
	row[3], row[5], row[9] = float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1))
	t0 := oip.NewTensor("features", []int64{1, 32}, row)
	in := &pb.ModelInferRequest{ModelName: "recommender", Id: "kserve-1",
		Inputs: []*pb.ModelInferRequest_InferInputTensor{{Name: "features", Datatype: "FP32", Shape: []int64{1, 32},
			Parameters: map[string]*pb.InferParameter{"binary_data_size": {ParameterChoice: &pb.InferParameter_Int64Param{Int64Param: int64(len(t0.Raw))}}}}},
		RawInputContents: [][]byte{t0.Raw}}
	resp, err := client.ModelInfer(ctx, in)
	if err != nil {
		t.Fatalf("raw contents + binary_data_size, NaN/±Inf inputs: %v", err)
	}
	if resp.GetId() != "kserve-1" || len(resp.GetOutputs()) != 1 {
		t.Fatalf("answer %v", resp)
	}
}

// TestProxyReflection: grpcurl and friends can list the proxy's services.
func TestProxyReflection(t *testing.T) {
	p, _ := protocolProxy(t)
	cc, err := grpc.NewClient(p.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	stream, err := rpb.NewServerReflectionClient(cc).ServerReflectionInfo(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	r, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range r.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	if !strings.Contains(strings.Join(names, " "), "inference.GRPCInferenceService") {
		t.Fatalf("services %v", names)
	}
}

// TestBufferedBytesBudget: while a large body holds most of the budget,
// another large one is refused before it is read (503, Retry-After, the
// connection closed), small requests are still answered, and once the
// first is done the budget is free again.
func TestBufferedBytesBudget(t *testing.T) {
	be := backendtest.Start(t, backendtest.Options{})
	p := startProxy(t, Config{Models: []api.Model{demoModel(be, map[string]int{"v1": 100})},
		MaxBodyBytes: 200 << 10, MaxBufferedBytes: 256 << 10})
	big := append(inferBody(1), bytes.Repeat([]byte(" "), 150<<10)...) // JSON with trailing blanks
	c, err := net.Dial("tcp", p.HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST /v2/models/recommender/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", len(big))
	c.Write(big[:1000]) // the rest later: the reservation is held meanwhile
	waitFor(t, "the first body to hold the budget", func() bool { return p.pl.BufferedBytes() >= int64(len(big)) })

	hc := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	req, _ := http.NewRequest(http.MethodPost, inferURL(p, "recommender"), bytes.NewReader(big))
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "1" || !resp.Close || !strings.Contains(string(b), "request bodies") {
		t.Fatalf("over budget: %d close=%v %v %s", resp.StatusCode, resp.Close, resp.Header, b)
	}
	if a := post(t, hc, inferURL(p, "recommender"), inferBody(2), nil); a.status != 200 {
		t.Fatalf("a small request while the budget is nearly spent: %d %s", a.status, a.body)
	}
	if n := testutilCounter(t, p, "switchyard_proxy_shed_total"); n != 1 {
		t.Fatalf("shed = %v, want 1", n)
	}
	c.Write(big[1000:])
	r, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || r.StatusCode != 200 {
		t.Fatalf("the first request: %v %v", r, err)
	}
	r.Body.Close()
	waitFor(t, "the budget freed", func() bool { return p.pl.BufferedBytes() == 0 })
	if a := post(t, hc, inferURL(p, "recommender"), big, nil); a.status != 200 {
		t.Fatalf("a large request once the budget is free: %d %s", a.status, a.body)
	}
}

// TestConnectionCap: past MaxConnections a new connection waits to be
// accepted; it is served once another closes.
func TestConnectionCap(t *testing.T) {
	be := backendtest.Start(t, backendtest.Options{})
	p := startProxy(t, Config{Models: []api.Model{demoModel(be, map[string]int{"v1": 100})}, MaxConnections: 2})
	ask := func(c net.Conn) {
		fmt.Fprintf(c, "GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
	}
	answered := func(c net.Conn) bool {
		r, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return false
		}
		r.Body.Close()
		return r.StatusCode == 200
	}
	var held []net.Conn
	for i := 0; i < 2; i++ {
		c, err := net.Dial("tcp", p.HTTPAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		ask(c)
		if !answered(c) {
			t.Fatalf("connection %d within the cap not served", i)
		}
		held = append(held, c)
	}
	third, err := net.Dial("tcp", p.HTTPAddr()) // the kernel completes the handshake
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	ask(third)
	third.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if answered(third) {
		t.Fatal("a third connection was served past a cap of 2")
	}
	held[0].Close()
	third.SetReadDeadline(time.Now().Add(10 * time.Second))
	if !answered(third) {
		t.Fatal("the waiting connection was not served after another closed")
	}
}

// TestConcurrencyShedding: past a version's spec.concurrency limit a
// request is shed at once — 503 with Retry-After on a route without a
// fallback, the chain's answer (reason overload) on one with — and the
// version's breaker does not count it.
func TestConcurrencyShedding(t *testing.T) {
	hole := blackhole(t) // accepts, never answers: requests stay in flight
	model := func(name string, fb *api.Fallback) api.Model {
		return api.Model{Metadata: api.Metadata{Name: name}, Spec: api.Spec{
			Versions:    []api.Version{{Name: "v1", Endpoints: []string{hole}}},
			Traffic:     api.Traffic{Weights: map[string]int{"v1": 100}},
			Timeout:     api.Duration(3 * time.Second),
			Concurrency: &api.Concurrency{Limit: 2},
			Fallback:    fb,
		}}
	}
	p := startProxy(t, Config{Models: []api.Model{
		model("plain", nil),
		model("chained", &api.Fallback{Chain: []string{"empty"}, Breaker: api.Breaker{ConsecutiveFailures: 1, OpenFor: api.Duration(time.Minute)}}),
	}})
	hc := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	for _, name := range []string{"plain", "chained"} {
		var wg sync.WaitGroup
		for i := 0; i < 2; i++ {
			wg.Add(1)
			go func() { defer wg.Done(); post(t, hc, inferURL(p, name), inferBody(i), nil) }()
		}
		l := p.Route(name).Variants[0].Limiter()
		waitFor(t, name+": two requests in flight", func() bool { return l.InFlight() == 2 })
		req, _ := http.NewRequest(http.MethodPost, inferURL(p, name), bytes.NewReader(inferBody(9)))
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch name {
		case "plain":
			if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "1" || !strings.Contains(string(b), "spec.concurrency") {
				t.Fatalf("plain, over the limit: %d %v %s", resp.StatusCode, resp.Header, b)
			}
		case "chained":
			if resp.StatusCode != 200 || resp.Header.Get("X-Switchyard-Fallback") != "empty" || resp.Header.Get("X-Switchyard-Fallback-Reason") != "overload" {
				t.Fatalf("chained, over the limit: %d %v %s", resp.StatusCode, resp.Header, b)
			}
			if st := p.Route(name).Variants[0].Breaker.State(); st != fallback.StateClosed {
				t.Fatalf("a shed request moved the breaker to %s", st)
			}
		}
		wg.Wait()
	}
	if n := metricSum(t, p.cfg.Registry, "switchyard_proxy_shed_total", map[string]string{"reason": "concurrency"}); n != 2 {
		t.Fatalf("shed (concurrency) = %v, want 2", n)
	}
}

// TestDrainAnswersSayClose: an answer written while the proxy drains says
// Connection: close, so a keep-alive client sends its next request
// elsewhere.
func TestDrainAnswersSayClose(t *testing.T) {
	hole := blackhole(t)
	p, err := New(Config{HTTPAddr: "127.0.0.1:0", Models: []api.Model{{Metadata: api.Metadata{Name: "slow"}, Spec: api.Spec{
		Versions:    []api.Version{{Name: "v1", Endpoints: []string{hole}}},
		Traffic:     api.Traffic{Weights: map[string]int{"v1": 100}},
		Timeout:     api.Duration(3 * time.Second), // the answer (a timeout) comes well after the drain began
		Concurrency: &api.Concurrency{Limit: 10},
	}}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", p.HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b := inferBody(1)
	fmt.Fprintf(c, "POST /v2/models/slow/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", len(b), b)
	waitFor(t, "the request in flight", func() bool { return p.Route("slow").Variants[0].Limiter().InFlight() == 1 })
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- p.Shutdown(ctx)
	}()
	r, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != 504 || !r.Close {
		t.Fatalf("answer during the drain: %d, Connection: close %v", r.StatusCode, r.Close)
	}
	if err := <-done; err != nil {
		t.Fatalf("drain: %v", err)
	}
}

// TestAdminGuard: pages that expose data or internals need the admin token
// when one is set, and are served to loopback clients only without one;
// /ready, /metrics and /stats stay open.
func TestAdminGuard(t *testing.T) {
	be := backendtest.Start(t, backendtest.Options{})
	models := []api.Model{demoModel(be, map[string]int{"v1": 100})}
	const token = "s3cret-admin-token-0123"
	p := startProxy(t, Config{Models: models, AdminToken: token})
	base := "http://" + p.AdminAddr()
	for _, path := range []string{"/config_dump", "/fallback", "/shadow/records?model=recommender", "/debug/pprof/"} {
		if status, hdr, _ := get(t, base+path, nil); status != 401 || hdr.Get("WWW-Authenticate") == "" {
			t.Errorf("%s without the token: %d", path, status)
		}
		if status, _, _ := get(t, base+path, map[string]string{"Authorization": "Bearer wrong"}); status != 401 {
			t.Errorf("%s with a wrong token: %d", path, status)
		}
	}
	if status, _, b := get(t, base+"/config_dump", map[string]string{"Authorization": "Bearer " + token}); status != 200 || !strings.Contains(string(b), "recommender") {
		t.Fatalf("/config_dump with the token: %d %s", status, b)
	}
	for _, path := range []string{"/ready", "/metrics", "/stats"} {
		if status, _, _ := get(t, base+path, nil); status != 200 {
			t.Errorf("%s is open: %d", path, status)
		}
	}
	if n := metricSum(t, p.cfg.Registry, "switchyard_proxy_admin_refused_total", map[string]string{"reason": "bad_credential"}); n != 4 {
		t.Errorf("refused (bad_credential) = %v, want 4", n)
	}
	// The refusals are in the security log, listed behind the guard.
	if status, _, b := get(t, base+"/security/events", map[string]string{"Authorization": "Bearer " + token}); status != 200 ||
		!strings.Contains(string(b), `"component":"proxy-admin"`) || !strings.Contains(string(b), `"path":"/config_dump","reason":"bad_credential"`) {
		t.Errorf("/security/events: %d %s", status, b)
	}
	if status, _, _ := get(t, base+"/security/events", nil); status != 401 {
		t.Errorf("/security/events without the token: %d", status)
	}

	// Without a token: loopback only.
	open := startProxy(t, Config{Models: models})
	h := open.adminHandler()
	for remote, want := range map[string]int{"127.0.0.1:5000": 200, "[::1]:5000": 200, "10.1.2.3:5000": 403} {
		r := httptest.NewRequest(http.MethodGet, "/config_dump", nil)
		r.RemoteAddr = remote
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != want {
			t.Errorf("/config_dump from %s without a token configured: %d, want %d", remote, w.Code, want)
		}
	}
}

// TestStreamMessagesCarryTheirMarks: a stream has one header, so each
// answer of ModelStreamInfer names its variant and fallback in its own
// parameters (the header names), per message: a dead primary's messages
// say backup/connect_error and the backup's name.
func TestStreamMessagesCarryTheirMarks(t *testing.T) {
	be := backendtest.Start(t, backendtest.Options{})
	models := deadPrimaryWithBackup(be, closedAddr(t), 1)
	plain := recommenderWith(be, nil)
	p, _ := featuresProxy(t, Config{Models: append(models, plain)}, FeaturesConfig{})
	gc := dialProxy(t, p)
	param := func(m *pb.ModelInferResponse, k string) string { return m.GetParameters()[k].GetStringParam() }
	for _, c := range []struct{ model, variant, fallback, reason string }{
		{"rec-grpc", "lite", "backup", "connect_error"},
		{"recommender", "v1", "", ""},
	} {
		stream, err := gc.ModelStreamInfer(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		const n = 4
		for i := range n {
			in := grpcFeatures(c.model, 1)
			in.Id = fmt.Sprintf("m%d", i)
			if err := stream.Send(in); err != nil {
				t.Fatal(err)
			}
		}
		stream.CloseSend()
		got := 0
		for {
			m, err := stream.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			r := m.GetInferResponse()
			if m.GetErrorMessage() != "" || len(r.GetOutputs()) != 1 {
				t.Fatalf("%s message %q: %v %s", c.model, r.GetId(), r, m.GetErrorMessage())
			}
			if param(r, front.MetadataVariant) != c.variant || param(r, fallback.HeaderFallback) != c.fallback || param(r, fallback.HeaderFallbackReason) != c.reason {
				t.Fatalf("%s message %q parameters %v, want variant %q fallback %q reason %q", c.model, r.GetId(), r.GetParameters(), c.variant, c.fallback, c.reason)
			}
			got++
		}
		if got != n {
			t.Fatalf("%s: %d answers, want %d", c.model, got, n)
		}
	}
}

// TestBudgetRefusalAnsweredByStatic: a request the buffered-bytes budget
// refuses on a route whose chain has a static step gets the static answer
// (200, marked static/overload; REST still ends the connection, its body
// unread), REST and gRPC; a route without one still gets 503 / UNAVAILABLE.
func TestBudgetRefusalAnsweredByStatic(t *testing.T) {
	be := backendtest.Start(t, backendtest.Options{})
	plain := demoModel(be, map[string]int{"v1": 100})
	withStatic := recommenderWith(be, func(m *api.Model) {
		m.Metadata.Name = "withstatic"
		m.Spec.Fallback = &api.Fallback{Chain: []string{"backup", "static"}, Backup: "lite", Static: staticScores(0.25)}
	})
	p, reg := featuresProxy(t, Config{Models: []api.Model{plain, withStatic}, MaxBodyBytes: 200 << 10, MaxBufferedBytes: 256 << 10}, FeaturesConfig{})
	big := append(inferBody(1), bytes.Repeat([]byte(" "), 150<<10)...)
	c, err := net.Dial("tcp", p.HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST /v2/models/recommender/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", len(big))
	c.Write(big[:1000]) // holds the budget until the rest is sent
	waitFor(t, "the first body to hold the budget", func() bool { return p.pl.BufferedBytes() >= int64(len(big)) })

	hc := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	defer hc.CloseIdleConnections()
	a := postFull(t, hc, inferURL(p, "withstatic"), big, nil)
	if a.status != 200 || a.fallback != "static" || a.reason != "overload" {
		t.Fatalf("over budget with a static step: %+v %s", a, a.body)
	}
	if got := scoresOf(t, a.body); len(got) != 100 || got[0] != 0.25 {
		t.Fatalf("the static answer: %v", got)
	}
	if a := postFull(t, hc, inferURL(p, "recommender"), big, nil); a.status != 503 {
		t.Fatalf("over budget without a chain: %+v %s", a, a.body)
	}
	if got := metricSum(t, reg, "switchyard_proxy_shed_total", map[string]string{"reason": "buffer"}); got != 2 {
		t.Fatalf("shed{buffer} = %v, want 2", got)
	}

	// gRPC: the message was read, but holding it is over the budget.
	gc := dialProxy(t, p)
	rows := 1500 // ~190 KiB of float32 features
	in := grpcFeatures("withstatic", rows)
	var hdr metadata.MD
	resp, err := gc.ModelInfer(context.Background(), in, grpc.Header(&hdr))
	if err != nil {
		t.Fatalf("gRPC over budget with a static step: %v", err)
	}
	if f := hdr.Get("x-switchyard-fallback"); len(f) != 1 || f[0] != "static" || len(resp.GetOutputs()) != 1 {
		t.Fatalf("gRPC over budget with a static step: fallback %v, %v", f, resp)
	}
	in.ModelName = "recommender"
	if _, err := gc.ModelInfer(context.Background(), in); status.Code(err) != codes.Unavailable {
		t.Fatalf("gRPC over budget without a chain: %v, want Unavailable", err)
	}

	c.Write(big[1000:])
	if r, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil || r.StatusCode != 200 {
		t.Fatalf("the first request: %v %v", r, err)
	}
}
