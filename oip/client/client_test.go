package client_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/oip"
	"github.com/switchyard-dev/switchyard/oip/client"
	pb "github.com/switchyard-dev/switchyard/oip/inferencepb"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// addOne is a tiny oip.Server for exercising the transports: model "addone"
// answers each input x with an output "x_out" holding every element plus one
// (BOOL negated, BYTES with "+1" appended); model "cold" exists but is not
// ready. Load and unload toggle a model's presence.
type addOne struct {
	mu     sync.Mutex
	loaded map[string]bool
}

func newAddOne() *addOne { return &addOne{loaded: map[string]bool{"addone": true, "cold": true}} }

func (s *addOne) Live(context.Context) bool  { return true }
func (s *addOne) Ready(context.Context) bool { return true }
func (s *addOne) ServerMetadata(context.Context) oip.ServerMetadata {
	return oip.ServerMetadata{Name: "addone-server", Version: "0.1", Extensions: []string{"model_repository", "binary_tensor_data"}}
}

func (s *addOne) known(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.loaded[name] {
		return oip.Errorf(oip.NotFound, "model %q not found", name)
	}
	return nil
}

func (s *addOne) ModelReady(_ context.Context, name, version string) (bool, error) {
	if err := s.known(name); err != nil {
		return false, err
	}
	return name == "addone" && (version == "" || version == "1"), nil
}

func (s *addOne) ModelMetadata(_ context.Context, name, version string) (*oip.ModelMetadata, error) {
	if err := s.known(name); err != nil {
		return nil, err
	}
	if version != "" && version != "1" {
		return nil, oip.Errorf(oip.NotFound, "model %q has no version %q", name, version)
	}
	return &oip.ModelMetadata{Name: name, Versions: []string{"1"}, Platform: "test",
		Inputs:  []oip.TensorMetadata{{Name: "x", Datatype: oip.FP32, Shape: []int64{-1, 4}}},
		Outputs: []oip.TensorMetadata{{Name: "x_out", Datatype: oip.FP32, Shape: []int64{-1, 4}}}}, nil
}

func (s *addOne) Infer(_ context.Context, req *oip.InferRequest) (*oip.InferResponse, error) {
	if err := s.known(req.ModelName); err != nil {
		return nil, err
	}
	if req.ModelName != "addone" {
		return nil, oip.Errorf(oip.Unavailable, "model %q is not ready", req.ModelName)
	}
	if len(req.Inputs) == 0 {
		return nil, oip.Errorf(oip.InvalidArgument, "model %q needs at least one input", req.ModelName)
	}
	resp := &oip.InferResponse{ModelName: req.ModelName, ModelVersion: "1", Parameters: map[string]any{"inputs": int64(len(req.Inputs))}}
	for _, in := range req.Inputs {
		out, err := plusOne(in)
		if err != nil {
			return nil, oip.Errorf(oip.InvalidArgument, "input %q: %v", in.Name, err)
		}
		resp.Outputs = append(resp.Outputs, out)
	}
	return resp, nil
}

func (s *addOne) RepositoryIndex(_ context.Context, readyOnly bool) ([]oip.RepositoryModel, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []oip.RepositoryModel
	for _, n := range []string{"addone", "cold"} {
		switch {
		case s.loaded[n] && n == "addone":
			out = append(out, oip.RepositoryModel{Name: n, Version: "1", State: "READY"})
		case !readyOnly:
			out = append(out, oip.RepositoryModel{Name: n, Version: "1", State: "UNAVAILABLE", Reason: "not ready"})
		}
	}
	return out, nil
}

func (s *addOne) LoadModel(_ context.Context, name string) error {
	if name != "addone" && name != "cold" {
		return oip.Errorf(oip.NotFound, "no model %q in the repository", name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.loaded[name] = true
	return nil
}

func (s *addOne) UnloadModel(_ context.Context, name string) error {
	if err := s.known(name); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.loaded, name)
	return nil
}

// plusOne is the model's arithmetic, element by element on the raw bytes.
func plusOne(in oip.Tensor) (oip.Tensor, error) {
	out := oip.Tensor{Name: in.Name + "_out", Datatype: in.Datatype, Shape: in.Shape}
	raw := in.Raw
	le := binary.LittleEndian
	switch in.Datatype {
	case oip.BOOL:
		for _, b := range raw {
			out.Raw = append(out.Raw, b^1)
		}
	case oip.UINT8, oip.INT8:
		for _, b := range raw {
			out.Raw = append(out.Raw, b+1)
		}
	case oip.UINT16, oip.INT16:
		for i := 0; i < len(raw); i += 2 {
			out.Raw = le.AppendUint16(out.Raw, le.Uint16(raw[i:])+1)
		}
	case oip.UINT32, oip.INT32:
		for i := 0; i < len(raw); i += 4 {
			out.Raw = le.AppendUint32(out.Raw, le.Uint32(raw[i:])+1)
		}
	case oip.UINT64, oip.INT64:
		for i := 0; i < len(raw); i += 8 {
			out.Raw = le.AppendUint64(out.Raw, le.Uint64(raw[i:])+1)
		}
	case oip.FP16:
		for i := 0; i < len(raw); i += 2 {
			out.Raw = le.AppendUint16(out.Raw, oip.Float32ToHalf(oip.HalfToFloat32(le.Uint16(raw[i:]))+1))
		}
	case oip.FP32:
		for i := 0; i < len(raw); i += 4 {
			out.Raw = le.AppendUint32(out.Raw, math.Float32bits(math.Float32frombits(le.Uint32(raw[i:]))+1))
		}
	case oip.FP64:
		for i := 0; i < len(raw); i += 8 {
			out.Raw = le.AppendUint64(out.Raw, math.Float64bits(math.Float64frombits(le.Uint64(raw[i:]))+1))
		}
	case oip.BYTES:
		elems, err := in.BytesElements()
		if err != nil {
			return out, err
		}
		for _, e := range elems {
			out.Raw = oip.AppendBytesElement(out.Raw, append(slices.Clone(e), "+1"...))
		}
	default:
		return out, fmt.Errorf("unsupported datatype %s", in.Datatype)
	}
	return out, nil
}

// servers starts the REST and gRPC transports for s on 127.0.0.1:0 and
// returns their addresses; both stop when the test ends.
func servers(t *testing.T, s oip.Server, opts oip.HTTPOptions) (httpURL, grpcAddr string) {
	t.Helper()
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: oip.NewHTTPHandler(s, opts), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = hs.Serve(hl) }()
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.MaxRecvMsgSize(oip.DefaultMaxBodyBytes))
	oip.RegisterGRPC(gs, s)
	go func() { _ = gs.Serve(gl) }()
	t.Cleanup(func() {
		gs.Stop()
		_ = hs.Close()
	})
	return "http://" + hl.Addr().String(), gl.Addr().String()
}

type namedClient struct {
	name string
	c    interface {
		client.Client
		ServerLive(context.Context) (bool, error)
		ServerMetadata(context.Context) (oip.ServerMetadata, error)
	}
}

func clients(t *testing.T, httpURL, grpcAddr string) []namedClient {
	t.Helper()
	g, err := client.DialGRPC(grpcAddr)
	if err != nil {
		t.Fatal(err)
	}
	h := client.NewHTTP(httpURL, client.HTTPOptions{})
	hb := client.NewHTTP(httpURL, client.HTTPOptions{Binary: true})
	t.Cleanup(func() { _ = g.Close(); _ = h.Close(); _ = hb.Close() })
	return []namedClient{{"http", h}, {"http-binary", hb}, {"grpc", g}}
}

func everyDatatype() []oip.Tensor {
	shape := []int64{2, 2}
	return []oip.Tensor{
		oip.NewTensor("b", shape, []bool{true, false, false, true}),
		oip.NewTensor("u8", shape, []uint8{0, 1, 200, 254}),
		oip.NewTensor("u16", shape, []uint16{0, 1, 300, 65534}),
		oip.NewTensor("u32", shape, []uint32{0, 1, 70000, math.MaxUint32 - 1}),
		oip.NewTensor("u64", shape, []uint64{0, 1, 1 << 40, math.MaxUint64 - 1}),
		oip.NewTensor("i8", shape, []int8{-128, -1, 0, 126}),
		oip.NewTensor("i16", shape, []int16{-32768, -1, 0, 32766}),
		oip.NewTensor("i32", shape, []int32{math.MinInt32, -1, 0, math.MaxInt32 - 1}),
		oip.NewTensor("i64", shape, []int64{math.MinInt64, -1, 0, math.MaxInt64 - 1}),
		{Name: "f16", Datatype: oip.FP16, Shape: shape, Raw: []byte{0, 0x3c, 0, 0xc0, 0x55, 0x35, 0, 0x7b}},
		oip.NewTensor("f32", shape, []float32{0, -1.5, 0.1, 1e30}),
		oip.NewTensor("f64", shape, []float64{0, -1.5, 0.1, 1e300}),
		oip.NewBytesTensor("s", shape, [][]byte{[]byte("a"), {}, []byte("ünï\"\\"), []byte("tab\t")}),
	}
}

func TestTransportsEndToEnd(t *testing.T) {
	httpURL, grpcAddr := servers(t, newAddOne(), oip.HTTPOptions{})
	ctx := context.Background()
	for _, nc := range clients(t, httpURL, grpcAddr) {
		c := nc.c
		t.Run(nc.name, func(t *testing.T) {
			if ok, err := c.ServerLive(ctx); !ok || err != nil {
				t.Errorf("ServerLive = %v, %v", ok, err)
			}
			if ok, err := c.ServerReady(ctx); !ok || err != nil {
				t.Errorf("ServerReady = %v, %v", ok, err)
			}
			sm, err := c.ServerMetadata(ctx)
			if err != nil || sm.Name != "addone-server" || len(sm.Extensions) != 2 {
				t.Errorf("ServerMetadata = %+v, %v", sm, err)
			}
			md, err := c.ModelMetadata(ctx, "addone", "1")
			if err != nil {
				t.Fatal(err)
			}
			if md.Name != "addone" || md.Inputs[0].Shape[0] != -1 || md.Outputs[0].Datatype != oip.FP32 {
				t.Errorf("ModelMetadata = %+v", md)
			}
			if ok, err := c.ModelReady(ctx, "addone", ""); !ok || err != nil {
				t.Errorf("ModelReady(addone) = %v, %v", ok, err)
			}
			if ok, err := c.ModelReady(ctx, "cold", ""); ok || err != nil {
				t.Errorf("ModelReady(cold) = %v, %v; want false, nil", ok, err)
			}
			_, err = c.ModelMetadata(ctx, "nope", "")
			wantCode(t, err, oip.NotFound, `model "nope" not found`)
			_, err = c.ModelMetadata(ctx, "addone", "7")
			wantCode(t, err, oip.NotFound, `no version "7"`)
			// Triton's rule: gRPC answers an unknown model OK, ready
			// false; REST keeps the 404 (any non-200 is "not ready").
			ok, err := c.ModelReady(ctx, "nope", "")
			if strings.HasPrefix(nc.name, "grpc") {
				if ok || err != nil {
					t.Errorf("gRPC ModelReady(nope) = %v, %v; want false, nil", ok, err)
				}
			} else {
				wantCode(t, err, oip.NotFound, "nope")
			}

			// every datatype in one request
			in := everyDatatype()
			req := &oip.InferRequest{ModelName: "addone", ModelVersion: "1", ID: "req-7", Inputs: in}
			resp, err := c.Infer(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			want := &oip.InferResponse{ModelName: "addone", ModelVersion: "1", ID: "req-7", Parameters: map[string]any{"inputs": int64(len(in))}}
			for _, x := range in {
				o, err := plusOne(x)
				if err != nil {
					t.Fatal(err)
				}
				want.Outputs = append(want.Outputs, o)
			}
			if diff := cmp.Diff(want, resp, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("Infer (-want +got):\n%s", diff)
			}

			// errors from the server keep their code and message
			_, err = c.Infer(ctx, &oip.InferRequest{ModelName: "nope", Inputs: in[:1]})
			wantCode(t, err, oip.NotFound, `model "nope" not found`)
			_, err = c.Infer(ctx, &oip.InferRequest{ModelName: "cold", Inputs: in[:1]})
			wantCode(t, err, oip.Unavailable, "not ready")
			_, err = c.Infer(ctx, &oip.InferRequest{ModelName: "addone", Inputs: []oip.Tensor{}})
			wantCode(t, err, oip.InvalidArgument, "needs at least one input")

			// a tensor whose data does not match its shape never reaches the model
			bad := oip.NewTensor("x", []int64{2, 3}, []float32{1, 2, 3})
			_, err = c.Infer(ctx, &oip.InferRequest{ModelName: "addone", Inputs: []oip.Tensor{bad}})
			wantCode(t, err, oip.InvalidArgument, `tensor "x": shape [2 3]`)

			// repository extension
			idx, err := c.RepositoryIndex(ctx, true)
			if err != nil || len(idx) != 1 || idx[0].Name != "addone" || idx[0].State != "READY" {
				t.Errorf("RepositoryIndex(ready) = %+v, %v", idx, err)
			}
			idx, err = c.RepositoryIndex(ctx, false)
			if err != nil || len(idx) != 2 {
				t.Errorf("RepositoryIndex(all) = %+v, %v", idx, err)
			}
			if err := c.UnloadModel(ctx, "addone"); err != nil {
				t.Fatal(err)
			}
			_, err = c.Infer(ctx, req)
			wantCode(t, err, oip.NotFound, "addone")
			wantCode(t, c.UnloadModel(ctx, "addone"), oip.NotFound, "addone")
			if err := c.LoadModel(ctx, "addone"); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Infer(ctx, req); err != nil {
				t.Errorf("Infer after reload: %v", err)
			}
			wantCode(t, c.LoadModel(ctx, "ghost"), oip.NotFound, `no model "ghost"`)
		})
	}
}

func TestServerDown(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	h := client.NewHTTP("http://"+addr, client.HTTPOptions{})
	defer h.Close()
	_, err = h.ServerReady(ctx)
	wantCode(t, err, oip.Unavailable, "")
	g, err := client.DialGRPC(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	_, err = g.ServerReady(ctx)
	wantCode(t, err, oip.Unavailable, "")
}

func wantCode(t *testing.T, err error, code oip.Code, msg string) {
	t.Helper()
	if err == nil {
		t.Errorf("want %v error containing %q, got nil", code, msg)
		return
	}
	if _, ok := err.(*oip.Error); !ok {
		t.Errorf("error %T %v is not *oip.Error", err, err)
	}
	if oip.CodeOf(err) != code || !strings.Contains(err.Error(), msg) {
		t.Errorf("got %v (code %v), want code %v containing %q", err, oip.CodeOf(err), code, msg)
	}
}

// TestHTTPRaw talks plain HTTP to the handler: exact paths, methods, status
// codes and error bodies.
func TestHTTPRaw(t *testing.T) {
	httpURL, _ := servers(t, newAddOne(), oip.HTTPOptions{MaxBodyBytes: 1 << 10})
	hc := &http.Client{}
	defer hc.CloseIdleConnections()
	const good = `{"id":"1","inputs":[{"name":"x","shape":[1,2],"datatype":"INT32","data":[[1,2]]}]}`
	tests := []struct {
		name, method, path, body string
		header                   map[string]string
		wantStatus               int
		wantBody                 string // substring
	}{
		{"live", "GET", "/v2/health/live", "", nil, 200, `{"live":true}`},
		{"ready", "GET", "/v2/health/ready", "", nil, 200, `{"ready":true}`},
		{"server metadata", "GET", "/v2", "", nil, 200, `"name":"addone-server"`},
		{"model metadata", "GET", "/v2/models/addone", "", nil, 200, `"platform":"test"`},
		{"model version metadata", "GET", "/v2/models/addone/versions/1", "", nil, 200, `"versions":["1"]`},
		{"model ready", "GET", "/v2/models/addone/ready", "", nil, 200, `{"ready":true}`},
		{"model version ready", "GET", "/v2/models/addone/versions/1/ready", "", nil, 200, `{"ready":true}`},
		{"model not ready", "GET", "/v2/models/cold/ready", "", nil, 503, `{"ready":false}`},
		{"unknown model", "GET", "/v2/models/nope", "", nil, 404, `{"error":"model \"nope\" not found"}`},
		{"infer", "POST", "/v2/models/addone/infer", good, nil, 200,
			`{"model_name":"addone","model_version":"1","id":"1","parameters":{"inputs":1},"outputs":[{"name":"x_out","datatype":"INT32","shape":[1,2],"data":[2,3]}]}`},
		{"infer version", "POST", "/v2/models/addone/versions/1/infer", good, nil, 200, `"data":[2,3]`},
		{"infer unknown model", "POST", "/v2/models/nope/infer", good, nil, 404, `model \"nope\" not found`},
		{"malformed JSON", "POST", "/v2/models/addone/infer", `{"inputs":[`, nil, 400, `{"error":"malformed JSON`},
		{"wrong dtype", "POST", "/v2/models/addone/infer", `{"inputs":[{"name":"x","shape":[1],"datatype":"F32","data":[1]}]}`, nil, 400, `inputs[0] (\"x\").datatype: unknown datatype \"F32\"`},
		{"shape mismatch", "POST", "/v2/models/addone/infer", `{"inputs":[{"name":"x","shape":[3],"datatype":"FP32","data":[1]}]}`, nil, 400, `inputs[0] (\"x\").data: shape [3] needs 3 elements, data has 1`},
		{"bad header length", "POST", "/v2/models/addone/infer", good, map[string]string{oip.HeaderContentLength: "x"}, 400, "Inference-Header-Content-Length"},
		{"too large", "POST", "/v2/models/addone/infer", `{"inputs":[` + strings.Repeat(" ", 2000) + `]}`, nil, 413, "exceeds the limit of 1024 bytes"},
		{"get infer", "GET", "/v2/models/addone/infer", "", nil, 405, "use POST"},
		{"post health", "POST", "/v2/health/live", "", nil, 405, "use GET"},
		{"unknown path", "GET", "/v2/nothing", "", nil, 404, "no such endpoint"},
		{"unknown model action", "GET", "/v2/models/addone/explode", "", nil, 404, "no such endpoint"},
		{"trailing slash", "GET", "/v2/models/addone/", "", nil, 404, "no such endpoint"},
		{"v1", "GET", "/v1/models/addone", "", nil, 404, "no such endpoint"},
		{"index", "POST", "/v2/repository/index", `{"ready":true}`, nil, 200, `[{"name":"addone","version":"1","state":"READY"}]`},
		{"index empty body", "POST", "/v2/repository/index", "", nil, 200, `"state":"UNAVAILABLE"`},
		{"index bad body", "POST", "/v2/repository/index", `{"ready":`, nil, 400, "malformed JSON body"},
		{"load unknown", "POST", "/v2/repository/models/ghost/load", "", nil, 404, `no model \"ghost\"`},
		{"load", "POST", "/v2/repository/models/cold/load", `{"parameters":{}}`, nil, 200, ""},
		{"unload action unknown", "POST", "/v2/repository/models/cold/explode", "", nil, 404, "no such endpoint"},
		{"escaped name", "GET", "/v2/models/add%6Fne", "", nil, 200, `"name":"addone"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, httpURL+tc.path, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.wantStatus || !strings.Contains(string(body), tc.wantBody) {
				t.Errorf("%s %s: got %d %s; want %d containing %s", tc.method, tc.path, resp.StatusCode, body, tc.wantStatus, tc.wantBody)
			}
			if resp.StatusCode >= 400 && resp.StatusCode != 503 && !strings.HasPrefix(string(body), `{"error":`) {
				t.Errorf("error body is not {\"error\": ...}: %s", body)
			}
			if resp.StatusCode == 405 && resp.Header.Get("Allow") == "" {
				t.Error("405 without Allow header")
			}
		})
	}
}

// TestGRPCRaw calls the generated stubs directly: status codes, typed
// contents in, raw contents out, and reflection.
func TestGRPCRaw(t *testing.T) {
	_, grpcAddr := servers(t, newAddOne(), oip.HTTPOptions{})
	g, err := client.DialGRPC(grpcAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	ctx := context.Background()
	raw := g.Raw()

	resp, err := raw.ModelInfer(ctx, &pb.ModelInferRequest{ModelName: "addone", Inputs: []*pb.ModelInferRequest_InferInputTensor{
		{Name: "x", Datatype: "INT32", Shape: []int64{3}, Contents: &pb.InferTensorContents{IntContents: []int32{1, 2, 3}}}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.RawOutputContents) != 1 || resp.Outputs[0].Contents != nil {
		t.Fatalf("response should carry raw_output_contents: %v", resp)
	}
	if got := oip.Values[int32](resp.RawOutputContents[0]); !slices.Equal(got, []int32{2, 3, 4}) {
		t.Errorf("got %v", got)
	}

	for name, tc := range map[string]struct {
		req  *pb.ModelInferRequest
		code codes.Code
		msg  string
	}{
		"no model":       {&pb.ModelInferRequest{}, codes.InvalidArgument, "model_name: missing"},
		"unknown model":  {&pb.ModelInferRequest{ModelName: "nope"}, codes.NotFound, `model "nope" not found`},
		"shape mismatch": {&pb.ModelInferRequest{ModelName: "addone", Inputs: []*pb.ModelInferRequest_InferInputTensor{{Name: "x", Datatype: "FP32", Shape: []int64{2}}}, RawInputContents: [][]byte{{1, 2, 3, 4}}}, codes.InvalidArgument, `tensor "x": shape [2] of FP32 needs 8 bytes`},
		"bad dtype":      {&pb.ModelInferRequest{ModelName: "addone", Inputs: []*pb.ModelInferRequest_InferInputTensor{{Name: "x", Datatype: "FLOAT"}}}, codes.InvalidArgument, `unknown datatype "FLOAT"`},
	} {
		_, err := raw.ModelInfer(ctx, tc.req)
		if st, _ := status.FromError(err); st.Code() != tc.code || !strings.Contains(st.Message(), tc.msg) {
			t.Errorf("%s: got %v, want %v %q", name, err, tc.code, tc.msg)
		}
	}
	if _, err := raw.ModelReady(ctx, &pb.ModelReadyRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("ModelReady without name: %v", err)
	}
	if _, err := raw.RepositoryModelLoad(ctx, &pb.RepositoryModelLoadRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("load without name: %v", err)
	}

	// Server reflection lists the service, so grpcurl needs no proto files.
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecureCreds()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream, err := rpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
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
	if !slices.Contains(names, "inference.GRPCInferenceService") {
		t.Errorf("reflection lists %v", names)
	}
	if err := stream.Send(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: "inference.ModelInferRequest"}}); err != nil {
		t.Fatal(err)
	}
	if r, err = stream.Recv(); err != nil || len(r.GetFileDescriptorResponse().GetFileDescriptorProto()) == 0 {
		t.Errorf("reflection file for inference.ModelInferRequest: %v %v", r, err)
	}
	_ = stream.CloseSend()
}

func insecureCreds() credentials.TransportCredentials { return insecure.NewCredentials() }
