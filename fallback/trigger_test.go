package fallback

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/switchyard-dev/switchyard/oip"
)

func TestTriggerStringRoundTrip(t *testing.T) {
	want := []string{"timeout", "connect_error", "upstream_5xx", "unavailable", "internal", "nan_output", "breaker_open", "overload"}
	got := Triggers()
	if len(got) != len(want) {
		t.Fatalf("Triggers() = %v", got)
	}
	for i, tr := range got {
		if tr.String() != want[i] {
			t.Errorf("trigger %d String = %q, want %q", i, tr, want[i])
		}
		back, ok := ParseTrigger(want[i])
		if !ok || back != tr {
			t.Errorf("ParseTrigger(%q) = %v, %v", want[i], back, ok)
		}
	}
	if _, ok := ParseTrigger("bogus"); ok {
		t.Error("ParseTrigger accepted bogus")
	}
}

func TestClassifyHTTPAndGRPC(t *testing.T) {
	httpCases := map[int]Trigger{200: None, 400: None, 404: None, 429: None, 500: Upstream5xx, 502: Upstream5xx, 503: Unavailable, 504: Timeout}
	for st, want := range httpCases {
		if got := ClassifyHTTP(st); got != want {
			t.Errorf("ClassifyHTTP(%d) = %v, want %v", st, got, want)
		}
	}
	grpcCases := map[codes.Code]Trigger{
		codes.OK: None, codes.InvalidArgument: None, codes.NotFound: None,
		codes.Unavailable: Unavailable, codes.DeadlineExceeded: Timeout, codes.Internal: Internal,
		codes.Unknown: Internal, codes.ResourceExhausted: Overload,
	}
	for c, want := range grpcCases {
		if got := ClassifyGRPC(c); got != want {
			t.Errorf("ClassifyGRPC(%v) = %v, want %v", c, got, want)
		}
	}
}

func f32(vals ...float32) oip.Tensor { return oip.NewTensor("out", []int64{1, int64(len(vals))}, vals) }

func TestClassifyOutputs(t *testing.T) {
	cases := map[string]struct {
		outs []oip.Tensor
		want Trigger
	}{
		"finite":      {[]oip.Tensor{f32(1, 2, 3)}, None},
		"nan fp32":    {[]oip.Tensor{f32(1, float32(math.NaN()))}, NaNOutput},
		"inf fp32":    {[]oip.Tensor{f32(float32(math.Inf(-1)))}, NaNOutput},
		"inf fp64":    {[]oip.Tensor{oip.NewTensor("a", []int64{1}, []float64{math.Inf(1)})}, NaNOutput},
		"nan fp16":    {[]oip.Tensor{{Name: "h", Datatype: oip.FP16, Shape: []int64{1}, Raw: []byte{0x00, 0x7e}}}, NaNOutput},
		"second":      {[]oip.Tensor{f32(1), oip.NewTensor("b", []int64{1}, []float64{math.NaN()})}, NaNOutput},
		"int max":     {[]oip.Tensor{oip.NewTensor("i", []int64{1}, []int32{-1})}, None},
		"no outputs":  {nil, None},
		"bytes ascii": {[]oip.Tensor{oip.NewBytesTensor("s", []int64{1}, [][]byte{{0xff, 0xff, 0x80, 0x7f}})}, None},
	}
	for name, c := range cases {
		if got := ClassifyOutputs(c.outs); got != c.want {
			t.Errorf("%s: got %v, want %v", name, got, c.want)
		}
	}
}

// TestClassifyRealTransport classifies errors produced by real sockets: a
// refused connection, a server that does not answer in time, and real HTTP
// statuses.
func TestClassifyRealTransport(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := ln.Addr().String()
	ln.Close()

	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/slow":
			select {
			case <-release:
			case <-r.Context().Done():
			}
		case "/503":
			w.WriteHeader(http.StatusServiceUnavailable)
		case "/500":
			w.WriteHeader(http.StatusInternalServerError)
		case "/400":
			w.WriteHeader(http.StatusBadRequest)
		}
	}))
	defer srv.Close()
	defer close(release)
	client := srv.Client()

	do := func(ctx context.Context, url string) Outcome {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, nil)
		resp, err := client.Do(req)
		if err != nil {
			return Outcome{Err: err}
		}
		resp.Body.Close()
		return Outcome{HTTPStatus: resp.StatusCode}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	cases := []struct {
		name string
		o    Outcome
		want Trigger
	}{
		{"refused", do(context.Background(), "http://"+closedAddr+"/v2/models/m/infer"), ConnectError},
		{"budget exceeded", do(ctx, srv.URL+"/slow"), Timeout},
		{"503", do(context.Background(), srv.URL+"/503"), Unavailable},
		{"500", do(context.Background(), srv.URL+"/500"), Upstream5xx},
		{"400 passes through", do(context.Background(), srv.URL+"/400"), None},
	}
	for _, c := range cases {
		if got := Classify(c.o); got != c.want {
			t.Errorf("%s: Classify(%+v) = %v, want %v", c.name, c.o, got, c.want)
		}
	}
}

func TestClassifyOutcome(t *testing.T) {
	nan := &oip.InferResponse{Outputs: []oip.Tensor{f32(float32(math.NaN()))}}
	ok := &oip.InferResponse{Outputs: []oip.Tensor{f32(0.5)}}
	cases := map[string]struct {
		o    Outcome
		want Trigger
	}{
		"ok http":              {Outcome{HTTPStatus: 200, Response: ok}, None},
		"nan http":             {Outcome{HTTPStatus: 200, Response: nan}, NaNOutput},
		"nan grpc":             {Outcome{GRPC: true, Response: nan}, NaNOutput},
		"grpc unavailable":     {Outcome{GRPC: true, GRPCCode: codes.Unavailable, Err: errors.New("x")}, Unavailable},
		"grpc invalid":         {Outcome{GRPC: true, GRPCCode: codes.InvalidArgument, Err: errors.New("x")}, None},
		"deadline":             {Outcome{Err: fmt.Errorf("call: %w", context.DeadlineExceeded)}, Timeout},
		"caller canceled":      {Outcome{Err: context.Canceled}, None},
		"oip unavailable":      {Outcome{Err: oip.Errorf(oip.Unavailable, "loading")}, Unavailable},
		"oip invalid arg":      {Outcome{Err: oip.Errorf(oip.InvalidArgument, "bad")}, None},
		"other transport err":  {Outcome{Err: errors.New("unexpected EOF")}, ConnectError},
		"status wins over nan": {Outcome{HTTPStatus: 500, Response: nan}, Upstream5xx},
	}
	for name, c := range cases {
		if got := Classify(c.o); got != c.want {
			t.Errorf("%s: got %v, want %v", name, got, c.want)
		}
	}
	for _, tr := range []Trigger{None, BreakerOpen, Overload} {
		if tr.CountsForBreaker() {
			t.Errorf("%v must not count for the breaker", tr)
		}
	}
	if !Timeout.CountsForBreaker() || !NaNOutput.CountsForBreaker() {
		t.Error("timeout and nan_output must count for the breaker")
	}
}
