package proxy

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/inference-backend/backendtest"
	"github.com/switchyard-dev/switchyard/oip"
	pb "github.com/switchyard-dev/switchyard/oip/inferencepb"
	"github.com/switchyard-dev/switchyard/proxy/front"
	"github.com/switchyard-dev/switchyard/proxy/upstream"
)

// TestGRPCTransportsAnswerAlike: the lean transport (internal/h2, server
// and upstream client) and grpc-go's give a gRPC client the same bytes,
// header marks and errors for ModelInfer passed through, and serve the
// other RPCs (the lean server hands them to grpc-go); an unknown
// transport is refused.
func TestGRPCTransportsAnswerAlike(t *testing.T) {
	be := backendtest.Start(t, backendtest.Options{})
	models := []api.Model{{Metadata: api.Metadata{Name: "plain"}, Spec: api.Spec{
		Versions: []api.Version{{Name: "v3", Endpoints: []string{be.GRPCAddr}, Protocol: api.ProtocolGRPC, BackendModel: "recommender-v3"}},
		Traffic:  api.Traffic{Weights: map[string]int{"v3": 100}},
		Timeout:  api.Duration(5 * time.Second),
	}}}
	in := oip.InferRequestToProto(&oip.InferRequest{ID: "req-1", Inputs: []oip.Tensor{oip.NewTensor("features", []int64{1, 32}, make([]float32, 32))}})
	in.ModelName = "plain"
	good, _ := proto.Marshal(in)
	in.ModelName = "nope"
	unknown, _ := proto.Marshal(in)
	type answer struct {
		body    []byte
		variant string
		err     string
	}
	got := map[string][]answer{}
	for _, tr := range []string{GRPCLean, GRPCGo} {
		p := startProxy(t, Config{Models: models, GRPCTransport: tr})
		if (p.h2Srv != nil) != (tr == GRPCLean) {
			t.Fatalf("%s: lean server %v", tr, p.h2Srv != nil)
		}
		cc, err := grpc.NewClient(p.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		for _, req := range [][]byte{good, unknown, good} {
			var out upstream.RawMessage
			var hdr metadata.MD
			err := cc.Invoke(ctx, pb.GRPCInferenceService_ModelInfer_FullMethodName, &upstream.RawMessage{B: req}, &out,
				grpc.ForceCodecV2(upstream.RawCodec{}), grpc.Header(&hdr))
			a := answer{body: out.B, variant: first(hdr[front.MetadataVariant])}
			if err != nil {
				a.err = status.Convert(err).String()
			}
			got[tr] = append(got[tr], a)
		}
		client := pb.NewGRPCInferenceServiceClient(cc)
		if r, err := client.ServerLive(ctx, &pb.ServerLiveRequest{}); err != nil || !r.GetLive() {
			t.Fatalf("%s: live %v %v", tr, r, err)
		}
		if _, err := client.ModelMetadata(ctx, &pb.ModelMetadataRequest{Name: "plain"}); err != nil {
			t.Fatalf("%s: metadata %v", tr, err)
		}
	}
	l, g := got[GRPCLean], got[GRPCGo]
	for i := range l {
		if string(l[i].body) != string(g[i].body) || l[i].variant != g[i].variant || l[i].err != g[i].err {
			t.Fatalf("call %d: lean %+v, grpc-go %+v", i, l[i], g[i])
		}
	}
	if l[0].err != "" || len(l[0].body) == 0 || l[0].variant != "v3" || l[1].err == "" {
		t.Fatalf("answers %+v", l)
	}
	if _, err := New(Config{GRPCTransport: "quic"}); err == nil {
		t.Fatal("an unknown transport was accepted")
	}
}
