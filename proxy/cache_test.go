package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/inference-backend/backendtest"
	"github.com/switchyard-dev/switchyard/inference-backend/demomodels"
	pb "github.com/switchyard-dev/switchyard/oip/inferencepb"
)

// TestCacheHits: a repeated input is answered from the cache with the same
// bytes (and without a backend call); JSON formatting and input order do
// not matter; Cache-Control: no-cache bypasses; another version never
// serves the entry; a request id is the new request's; REST and gRPC
// answers are kept apart.
func TestCacheHits(t *testing.T) {
	be := backendtest.Start(t, backendtest.Options{})
	m := recommenderWith(be, func(m *api.Model) { m.Spec.Cache = &api.Cache{} })
	p, reg := featuresProxy(t, Config{Models: []api.Model{m}}, FeaturesConfig{})
	url := inferURL(p, "recommender")
	c := newHTTPClient()
	defer c.CloseIdleConnections()
	calls := func() float64 { return backendRequests(t, be, demomodels.V1) }

	body, row := featuresBody(11)
	orig := postFull(t, c, url, body, nil)
	if orig.status != 200 || orig.cache != "" {
		t.Fatalf("first: %+v %s", orig, orig.body)
	}
	n := calls()
	hit := postFull(t, c, url, body, nil)
	if hit.status != 200 || hit.cache != "hit" || hit.variant != "v1" || !bytes.Equal(hit.body, orig.body) {
		t.Fatalf("hit: %+v\n%s\nvs\n%s", hit, hit.body, orig.body)
	}
	// Reformatted JSON of the same numbers, with a parameter-free output
	// list: same canonical request.
	var doc map[string]any
	json.Unmarshal(body, &doc)
	pretty, _ := json.MarshalIndent(doc, "", "   ")
	if a := postFull(t, c, url, pretty, nil); a.cache != "hit" || !bytes.Equal(a.body, orig.body) {
		t.Fatalf("reformatted request: %+v", a)
	}
	if calls() != n {
		t.Fatalf("hits reached the backend: %v calls, want %v", calls(), n)
	}
	// no-cache: a fresh answer.
	if a := postFull(t, c, url, body, map[string]string{"Cache-Control": "no-cache"}); a.status != 200 || a.cache != "" {
		t.Fatalf("no-cache: %+v", a)
	}
	if calls() != n+1 {
		t.Fatalf("no-cache did not reach the backend")
	}
	// Another version (override) never gets v1's entry.
	if a := postFull(t, c, url, body, map[string]string{"x-switchyard-variant": "v2"}); a.variant != "v2" || a.cache != "" || bytes.Equal(a.body, orig.body) {
		t.Fatalf("v2 got v1's cached answer: %+v", a)
	}
	// A request id: the hit carries the new request's id, not the first's.
	withID := strings.Replace(string(body), "{", `{"id":"req-7",`, 1)
	a := postFull(t, c, url, []byte(withID), nil)
	var resp struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(a.body, &resp); err != nil || a.cache != "hit" || resp.ID != "req-7" {
		t.Fatalf("hit with id: %+v %s (%v)", a, a.body, err)
	}

	// gRPC: its own entries (first call is a miss), then a hit with the
	// new request's id.
	conn, err := grpc.NewClient(p.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	gc := pb.NewGRPCInferenceServiceClient(conn)
	infer := func(id string) (*pb.ModelInferResponse, metadata.MD) {
		var hdr metadata.MD
		req := &pb.ModelInferRequest{ModelName: "recommender", Id: id, Inputs: []*pb.ModelInferRequest_InferInputTensor{{
			Name: "features", Datatype: "FP32", Shape: []int64{1, 32}, Contents: &pb.InferTensorContents{Fp32Contents: row}}}}
		resp, err := gc.ModelInfer(context.Background(), req, grpc.Header(&hdr))
		if err != nil {
			t.Fatal(err)
		}
		return resp, hdr
	}
	g1, h1 := infer("g-1")
	if len(h1["x-switchyard-cache"]) != 0 {
		t.Fatalf("first gRPC request was a hit (REST entry served to gRPC): %v", h1)
	}
	g2, h2 := infer("g-2")
	if first(h2["x-switchyard-cache"]) != "hit" || g2.GetId() != "g-2" {
		t.Fatalf("second gRPC request: id %q metadata %v", g2.GetId(), h2)
	}
	g1.Id, g2.Id = "", ""
	if !proto.Equal(g1, g2) {
		t.Fatal("gRPC hit differs from the original answer")
	}
	if got := metricSum(t, reg, "switchyard_cache_hits_total", map[string]string{"model": "recommender", "cache": "serving"}); got < 4 {
		t.Fatalf("cache hits metric %v", got)
	}
	if got := metricSum(t, reg, "switchyard_cache_bytes", map[string]string{"model": "recommender"}); got <= 0 {
		t.Fatalf("cache bytes metric %v", got)
	}
}

// TestCoalesceIdentical: 100 identical concurrent requests make one
// upstream call (counted by a real HTTP shim in front of the backend) and
// all get the same answer.
func TestCoalesceIdentical(t *testing.T) {
	be := backendtest.Start(t, backendtest.Options{})
	sh := startShim(t, be.HTTPAddr)
	sh.delay.Store(int64(300 * time.Millisecond)) // keep the first call in flight while the others arrive
	m := recommenderWith(be, func(m *api.Model) {
		m.Spec.Versions[0].Endpoints = []string{sh.addr}
		m.Spec.Cache = &api.Cache{}
	})
	p, reg := featuresProxy(t, Config{Models: []api.Model{m}}, FeaturesConfig{})
	url := inferURL(p, "recommender")
	body, _ := featuresBody(5)
	const n = 100
	answers := make([]fullAnswer, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := newHTTPClient()
			defer c.CloseIdleConnections()
			<-start
			answers[i] = postFull(t, c, url, body, nil)
		}()
	}
	close(start)
	wg.Wait()
	for i, a := range answers {
		if a.status != 200 || !bytes.Equal(a.body, answers[0].body) {
			t.Fatalf("answer %d: %+v %s", i, a, a.body)
		}
	}
	if got := sh.calls.Load(); got != 1 {
		t.Fatalf("%d upstream calls for %d identical requests, want 1", got, n)
	}
	coalesced := metricSum(t, reg, "switchyard_coalesced_requests_total", map[string]string{"model": "recommender"})
	hits := metricSum(t, reg, "switchyard_cache_hits_total", map[string]string{"model": "recommender", "cache": "serving"})
	if coalesced+hits != n-1 || coalesced == 0 {
		t.Fatalf("coalesced %v + cache hits %v, want %d with some coalesced", coalesced, hits, n-1)
	}
}
