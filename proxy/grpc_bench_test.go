package proxy

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/oip"
	pb "github.com/switchyard-dev/switchyard/oip/inferencepb"
)

// cannedOIP is a trivial OIP gRPC server: ModelInfer answers one fixed
// output (the shape of the demo model's answer) under the request's model
// name and id. It stands in for a backend whose own cost is negligible.
type cannedOIP struct {
	pb.UnimplementedGRPCInferenceServiceServer
	out *pb.ModelInferResponse
}

func (c *cannedOIP) ModelInfer(_ context.Context, req *pb.ModelInferRequest) (*pb.ModelInferResponse, error) {
	return &pb.ModelInferResponse{ModelName: req.GetModelName(), Id: req.GetId(), Outputs: c.out.Outputs, RawOutputContents: c.out.RawOutputContents}, nil
}

// BenchmarkGRPCPath: unary ModelInfer through a real proxy (real sockets,
// this process) to a trivial gRPC backend, on a route without policies
// (pass-through: the request and the answer stay bytes) and on the same
// version behind a fallback policy (the request decoded and re-encoded, the
// answer decoded and checked). B/op and allocs/op are the whole process's:
// client, proxy and the trivial backend (the same in both cases).
//
//	go test -run '^$' -bench GRPCPath -benchmem ./proxy/
func BenchmarkGRPCPath(b *testing.B) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	out := oip.InferResponseToProto(&oip.InferResponse{Outputs: []oip.Tensor{oip.NewTensor("scores", []int64{1, 100}, make([]float32, 100))}})
	srv := grpc.NewServer()
	pb.RegisterGRPCInferenceServiceServer(srv, &cannedOIP{out: out})
	go srv.Serve(l)
	b.Cleanup(srv.Stop)
	model := func(name string, fb bool) api.Model {
		m := api.Model{Metadata: api.Metadata{Name: name}, Spec: api.Spec{
			Versions: []api.Version{
				{Name: "v1", Endpoints: []string{l.Addr().String()}, Protocol: api.ProtocolGRPC, BackendModel: "canned"},
				{Name: "b", Endpoints: []string{l.Addr().String()}, Protocol: api.ProtocolGRPC, BackendModel: "canned"},
			},
			Traffic: api.Traffic{Weights: map[string]int{"v1": 100, "b": 0}},
			Timeout: api.Duration(5 * time.Second),
		}}
		if fb {
			m.Spec.Fallback = &api.Fallback{Chain: []string{"backup"}, Backup: "b"}
		}
		return m
	}
	p := startProxy(b, Config{Models: []api.Model{model("plain", false), model("decoded", true)}})
	cc, err := grpc.NewClient(p.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cc.Close() })
	client := pb.NewGRPCInferenceServiceClient(cc)
	ctx := context.Background()
	for _, tc := range []struct{ name, model string }{{"pass-through", "plain"}, {"decoded", "decoded"}} {
		b.Run(tc.name, func(b *testing.B) {
			req := oip.InferRequestToProto(&oip.InferRequest{ID: "b", Inputs: []oip.Tensor{oip.NewTensor("features", []int64{1, 32}, make([]float32, 32))}})
			req.ModelName = tc.model
			if _, err := client.ModelInfer(ctx, req); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := client.ModelInfer(ctx, req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
