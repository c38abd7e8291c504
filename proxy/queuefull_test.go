package proxy

import (
	"context"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/canary"
	"github.com/switchyard-dev/switchyard/inference-backend/backend"
	"github.com/switchyard-dev/switchyard/inference-backend/backendtest"
	"github.com/switchyard-dev/switchyard/internal/h1"
	"github.com/switchyard-dev/switchyard/oip"
)

// fullQueue is the real backend served by the real OIP transports, whose
// inference answers as its queue_policy does when the queue is full (an
// Unavailable *oip.Error with RetryAfter, which the transports send as
// 503 + Retry-After and UNAVAILABLE + RetryInfo) while full is set, and
// runs the model otherwise.
type fullQueue struct {
	*backend.Backend
	full atomic.Bool
}

func (f *fullQueue) Infer(ctx context.Context, req *oip.InferRequest) (*oip.InferResponse, error) {
	if f.full.Load() {
		e := oip.Errorf(oip.Unavailable, "model %q: queue full (queue_policy.max_queue_size 1); retry later", req.ModelName)
		e.RetryAfter = time.Second
		return nil, e
	}
	return f.Backend.Infer(ctx, req)
}

// serveOIP serves s over REST (the lean h1 server, as the backend does)
// and gRPC on 127.0.0.1:0 until the test ends.
func serveOIP(t *testing.T, s oip.Server) (httpAddr, grpcAddr string) {
	t.Helper()
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	opts := oip.HTTPOptions{}
	hs := &h1.Server{Fast: oip.FastInfer(s, opts), Handler: oip.NewHTTPHandler(s, opts)}
	go func() { _ = hs.Serve(hl) }()
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	oip.RegisterGRPCService(gs, s)
	go func() { _ = gs.Serve(gl) }()
	t.Cleanup(func() {
		gs.Stop()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(ctx)
	})
	return hl.Addr().String(), gl.Addr().String()
}

// TestBackendQueueRejectionIsOverload: a backend's queue rejection (REST
// 503 with Retry-After, gRPC UNAVAILABLE with RetryInfo) is an overload
// answer, not the version's failure: the chain answers it (reason
// overload), the breaker stays closed however many come, the canary's
// error and fallback gates do not count it; without a chain the client
// gets 503 + Retry-After / UNAVAILABLE + RetryInfo. A 503 without a retry
// hint (loading, draining) stays the version's failure.
func TestBackendQueueRejectionIsOverload(t *testing.T) {
	be := backendtest.Start(t, backendtest.Options{})
	fq := &fullQueue{Backend: be.Backend}
	httpAddr, grpcAddr := serveOIP(t, fq)
	breaker := api.Breaker{ConsecutiveFailures: 2, OpenFor: api.Duration(time.Hour), FirstOpenFor: api.Duration(time.Hour)}
	withChain := recommenderWith(be, func(m *api.Model) {
		m.Spec.Versions[0].Endpoints = []string{httpAddr}
		m.Spec.Versions[2].Endpoints = []string{grpcAddr}
		m.Spec.Fallback = &api.Fallback{Chain: []string{"static"}, Static: staticScores(0.5), Breaker: breaker}
	})
	plain := recommenderWith(be, func(m *api.Model) {
		m.Metadata.Name = "plain"
		m.Spec.Versions[0].Endpoints = []string{httpAddr}
		m.Spec.Versions[2].Endpoints = []string{grpcAddr}
	})
	p, reg := featuresProxy(t, Config{Models: []api.Model{withChain, plain}}, FeaturesConfig{})
	c := newHTTPClient()
	defer c.CloseIdleConnections()
	gc := dialProxy(t, p)
	body, _ := featuresBody(3)
	pinV3 := map[string]string{"X-Switchyard-Variant": "v3"}

	fq.full.Store(true)
	const n = 5
	for i := range n {
		for _, pin := range []map[string]string{nil, pinV3} { // v1 over REST, v3 over gRPC
			a := postFull(t, c, inferURL(p, "recommender"), body, pin)
			if a.status != 200 || a.fallback != "static" || a.reason != "overload" {
				t.Fatalf("request %d (pin %v) to a full queue: %+v %s", i, pin, a, a.body)
			}
		}
	}
	for _, v := range []string{"v1", "v3"} {
		if st := p.Route("recommender").Variant(v).Breaker.State().String(); st != "closed" {
			t.Fatalf("%s's breaker is %s after %d queue rejections, want closed", v, st, n)
		}
		var st canary.Stats
		p.pl.Stats().Slot("recommender", v).Snapshot(&st)
		if st.Requests != n || st.Errors[canary.ErrOverload] != n || st.FailureCount() != 0 || st.OwnFallbacks() != 0 {
			t.Fatalf("%s canary stats %+v: want %d requests, all overload, no failures, no own fallbacks", v, st, n)
		}
		if got := metricSum(t, reg, "switchyard_fallback_triggers_total", map[string]string{"version": v, "trigger": "overload"}); got != n {
			t.Fatalf("overload triggers of %s = %v, want %d", v, got, n)
		}
	}

	// No chain: the client is told to come back.
	for _, pin := range []map[string]string{nil, pinV3} {
		req, _ := http.NewRequest(http.MethodPost, inferURL(p, "plain"), strings.NewReader(string(body)))
		for k, v := range pin {
			req.Header.Set(k, v)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "1" {
			t.Fatalf("full queue without a chain (pin %v): %d Retry-After %q, want 503 and 1", pin, resp.StatusCode, resp.Header.Get("Retry-After"))
		}
	}
	_, err := gc.ModelInfer(context.Background(), grpcFeatures("plain", 1))
	st := status.Convert(err)
	if st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "overloaded") || oip.RetryAfterOf(st) != time.Second {
		t.Fatalf("gRPC, full queue without a chain: %v (details %v), want UNAVAILABLE, overloaded, RetryInfo 1s", err, st.Details())
	}
	if _, ok := st.Details()[0].(*errdetails.RetryInfo); !ok {
		t.Fatalf("gRPC details %v, want RetryInfo", st.Details())
	}

	// The queue drains: the primary answers again.
	fq.full.Store(false)
	if a := postFull(t, c, inferURL(p, "recommender"), body, nil); a.status != 200 || a.fallback != "" || a.variant != "v1" {
		t.Fatalf("after the queue drained: %+v %s", a, a.body)
	}

}
