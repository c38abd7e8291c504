package proxy

import (
	"bytes"
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/inference-backend/backendtest"
	"github.com/switchyard-dev/switchyard/oip"
	pb "github.com/switchyard-dev/switchyard/oip/inferencepb"
	"github.com/switchyard-dev/switchyard/proxy/front"
	"github.com/switchyard-dev/switchyard/proxy/upstream"
)

// TestGRPCPassThroughByteIdentical: the same requests to a route without
// policies (passed through as bytes) and to the same gRPC version behind a
// route with a fallback policy (decoded and re-encoded) get byte-identical
// answers, the same variant header and the same errors; a message that
// cannot be decoded is INVALID_ARGUMENT naming the field. Real sockets,
// the real backend, a client that sees the answer's bytes.
func TestGRPCPassThroughByteIdentical(t *testing.T) {
	be := backendtest.Start(t, backendtest.Options{})
	model := func(name string, fb bool) api.Model {
		m := api.Model{Metadata: api.Metadata{Name: name}, Spec: api.Spec{
			Versions: []api.Version{
				{Name: "v3", Endpoints: []string{be.GRPCAddr}, Protocol: api.ProtocolGRPC, BackendModel: "recommender-v3"},
				{Name: "b", Endpoints: []string{be.GRPCAddr}, Protocol: api.ProtocolGRPC, BackendModel: "recommender-v1"},
			},
			Traffic: api.Traffic{Weights: map[string]int{"v3": 100, "b": 0}},
			Timeout: api.Duration(5 * time.Second),
		}}
		if fb {
			m.Spec.Fallback = &api.Fallback{Chain: []string{"backup"}, Backup: "b"}
		}
		return m
	}
	p := startProxy(t, Config{Models: []api.Model{model("plain", false), model("decoded", true)}})
	if !p.Route("plain").PassesThrough() {
		t.Fatal("route plain has policies: it would not pass through")
	}
	if p.Route("decoded").PassesThrough() {
		t.Fatal("route decoded has no policies: it would pass through")
	}
	cc, err := grpc.NewClient(p.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	call := func(req []byte) ([]byte, metadata.MD, error) {
		var out upstream.RawMessage
		var hdr metadata.MD
		err := cc.Invoke(ctx, pb.GRPCInferenceService_ModelInfer_FullMethodName, &upstream.RawMessage{B: req}, &out,
			grpc.ForceCodecV2(upstream.RawCodec{}), grpc.Header(&hdr))
		return out.B, hdr, err
	}
	request := func(name string, in *pb.ModelInferRequest, extra []byte) []byte {
		m := proto.Clone(in).(*pb.ModelInferRequest)
		m.ModelName = name
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return append(b, extra...)
	}
	good := oip.InferRequestToProto(&oip.InferRequest{ID: "req-1", Inputs: []oip.Tensor{oip.NewTensor("features", []int64{1, 32}, make([]float32, 32))}})
	raw := oip.InferRequestToProto((&oip.InferRequest{Inputs: []oip.Tensor{oip.NewTensor("features", []int64{2, 32}, make([]float32, 64))}}).WithBinaryOutput())
	pinned := proto.Clone(good).(*pb.ModelInferRequest)
	pinned.ModelVersion = "v3"
	unknown := protowire.AppendString(protowire.AppendTag(nil, 77, protowire.BytesType), "unknown field")
	wrongInput := oip.InferRequestToProto(&oip.InferRequest{ID: "bad", Inputs: []oip.Tensor{oip.NewTensor("nope", []int64{1, 32}, make([]float32, 32))}})

	for _, tc := range []struct {
		name  string
		in    *pb.ModelInferRequest
		extra []byte
		ok    bool
	}{
		{"contents", good, nil, true},
		{"raw contents, batch 2", raw, nil, true},
		{"unknown field", good, unknown, true},
		{"pinned version", pinned, nil, true},
		{"the backend refuses", wrongInput, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, ah, aerr := call(request("plain", tc.in, tc.extra))
			b, bh, berr := call(request("decoded", tc.in, tc.extra))
			if tc.ok != (aerr == nil) || tc.ok != (berr == nil) {
				t.Fatalf("errors: pass-through %v, decoded %v", aerr, berr)
			}
			if !tc.ok {
				as, bs := status.Convert(aerr), status.Convert(berr)
				if as.Code() != bs.Code() || as.Message() != bs.Message() || as.Code() != codes.InvalidArgument {
					t.Fatalf("errors differ: pass-through %v, decoded %v", aerr, berr)
				}
				return
			}
			if !bytes.Equal(a, b) {
				t.Fatalf("answers differ:\npass-through %x\n     decoded %x", a, b)
			}
			var resp pb.ModelInferResponse
			if err := proto.Unmarshal(a, &resp); err != nil || resp.GetModelName() != "recommender-v3" || len(resp.GetOutputs()) != 1 {
				t.Fatalf("answer %v (%v)", &resp, err)
			}
			if resp.GetId() != tc.in.GetId() {
				t.Fatalf("id %q, want %q", resp.GetId(), tc.in.GetId())
			}
			if v := ah.Get(front.MetadataVariant); len(v) != 1 || v[0] != "v3" || strings.Join(bh.Get(front.MetadataVariant), ",") != "v3" {
				t.Fatalf("variant headers: %v / %v", v, bh.Get(front.MetadataVariant))
			}
		})
	}

	// Bytes that do not decode: INVALID_ARGUMENT naming the field, on
	// either route (the front-end reads them before routing).
	bad := append(request("plain", good, nil), protowire.AppendString(protowire.AppendTag(nil, 3, protowire.BytesType), "\xff")...)
	_, _, err = call(bad)
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "ModelInferRequest field id: string is not valid UTF-8") {
		t.Fatalf("malformed request: %v", err)
	}
	_, _, err = call([]byte{0x0a, 0x40, 'p'})
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "model_name") {
		t.Fatalf("truncated request: %v", err)
	}
	// Both routes counted their answers (the same metrics as before).
	for _, m := range []string{"plain", "decoded"} {
		if n := metricSum(t, p.cfg.Registry, "switchyard_proxy_requests_total", map[string]string{"model": m, "variant": "v3", "code": "OK"}); n != 4 {
			t.Errorf("%s: OK requests of v3 = %v, want 4", m, n)
		}
	}
}

// garbageOIP answers ModelInfer with bytes that are not a
// ModelInferResponse (its server takes and gives messages as bytes).
type garbageOIP struct {
	pb.UnimplementedGRPCInferenceServiceServer
}

// TestGRPCUndecodableAnswerIsTheVersionsFailure: a backend answering
// bytes that do not decode is the version's failure on the pass-through
// as on the decoded path (the same code, the same cause), and its breaker
// and metrics count it; the client never gets the bytes.
func TestGRPCUndecodableAnswerIsTheVersionsFailure(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.ForceServerCodecV2(upstream.RawCodec{}))
	desc := pb.GRPCInferenceService_ServiceDesc
	desc.Methods = []grpc.MethodDesc{{MethodName: "ModelInfer", Handler: func(_ any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
		if err := dec(&upstream.RawMessage{}); err != nil {
			return nil, err
		}
		return &upstream.RawMessage{B: []byte{0x0a, 0x7f, 'x'}}, nil // model_name: 127 bytes announced, 1 there
	}}}
	srv.RegisterService(&desc, &garbageOIP{})
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	model := func(name string, fb bool) api.Model {
		m := api.Model{Metadata: api.Metadata{Name: name}, Spec: api.Spec{
			Versions: []api.Version{{Name: "v1", Endpoints: []string{l.Addr().String()}, Protocol: api.ProtocolGRPC, BackendModel: "m"}},
			Traffic:  api.Traffic{Weights: map[string]int{"v1": 100}},
			Timeout:  api.Duration(5 * time.Second),
		}}
		if fb {
			m.Spec.Fallback = &api.Fallback{Chain: []string{"empty"}}
		}
		return m
	}
	p := startProxy(t, Config{Models: []api.Model{model("plain", false), model("decoded", true)}})
	cc, err := grpc.NewClient(p.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	client := pb.NewGRPCInferenceServiceClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	in := oip.InferRequestToProto(&oip.InferRequest{Inputs: []oip.Tensor{oip.NewTensor("features", []int64{1, 32}, make([]float32, 32))}})
	in.ModelName = "plain"
	_, err = client.ModelInfer(ctx, in)
	st := status.Convert(err)
	if st.Code() != codes.Unavailable || !strings.Contains(st.Message(), `model "plain" version "v1": upstream failed (internal)`) ||
		!strings.Contains(st.Message(), "failed to unmarshal the received message") {
		t.Fatalf("pass-through: %v", err)
	}
	if n := metricSum(t, p.cfg.Registry, "switchyard_proxy_upstream_errors_total", map[string]string{"model": "plain", "variant": "v1"}); n != 1 {
		t.Errorf("plain: upstream errors = %v, want 1", n)
	}
	// The decoded path judges it the same way: the version failed, and
	// here its fallback chain answers (empty).
	in.ModelName = "decoded"
	var hdr metadata.MD
	if _, err := client.ModelInfer(ctx, in, grpc.Header(&hdr)); err != nil || strings.Join(hdr.Get("x-switchyard-fallback"), ",") != "empty" ||
		strings.Join(hdr.Get("x-switchyard-fallback-reason"), ",") != "internal" {
		t.Fatalf("decoded: %v, marks %v", err, hdr)
	}
}
