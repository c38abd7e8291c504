package oip

import (
	"context"
	"errors"

	"google.golang.org/grpc"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	pb "github.com/switchyard-dev/switchyard/oip/inferencepb"
)

// RegisterGRPC registers the OIP v2 gRPC service (inference.GRPCInferenceService)
// backed by s on gs, plus gRPC server reflection so grpcurl works unaided.
// Register reflection only once per server: use RegisterGRPCService where
// the caller registers reflection itself.
//
// gRPC's default receive limit is 4 MiB; create gs with
// grpc.MaxRecvMsgSize(oip.DefaultMaxBodyBytes) to accept the same request
// sizes as the REST transport.
func RegisterGRPC(gs *grpc.Server, s Server) {
	RegisterGRPCService(gs, s)
	reflection.Register(gs)
}

// RegisterGRPCService registers only the inference service.
func RegisterGRPCService(r grpc.ServiceRegistrar, s Server) {
	pb.RegisterGRPCInferenceServiceServer(r, NewGRPCService(s))
}

// NewGRPCService adapts s to the generated gRPC service interface.
func NewGRPCService(s Server) pb.GRPCInferenceServiceServer { return &grpcService{s: s} }

type grpcService struct {
	pb.UnimplementedGRPCInferenceServiceServer
	s Server
}

// GRPCError converts err into a gRPC status error with the code of its
// *Error (see CodeOf) and its message. nil stays nil; an error that already
// carries a gRPC status is returned as is.
func GRPCError(err error) error {
	if err == nil {
		return nil
	}
	var e *Error
	if !errors.As(err, &e) {
		if _, ok := status.FromError(err); ok {
			return err
		}
	}
	e = AsError(err)
	return status.Error(e.GRPCCode(), e.Msg)
}

// ErrorFromGRPC converts a gRPC status error back into an *Error (code
// mapped by CodeFromGRPC). nil stays nil.
func ErrorFromGRPC(err error) error {
	if err == nil {
		return nil
	}
	if st, ok := status.FromError(err); ok {
		return &Error{Code: CodeFromGRPC(st.Code()), Msg: st.Message()}
	}
	return AsError(err)
}

func (g *grpcService) ServerLive(ctx context.Context, _ *pb.ServerLiveRequest) (*pb.ServerLiveResponse, error) {
	return &pb.ServerLiveResponse{Live: g.s.Live(ctx)}, nil
}

func (g *grpcService) ServerReady(ctx context.Context, _ *pb.ServerReadyRequest) (*pb.ServerReadyResponse, error) {
	return &pb.ServerReadyResponse{Ready: g.s.Ready(ctx)}, nil
}

func (g *grpcService) ModelReady(ctx context.Context, r *pb.ModelReadyRequest) (*pb.ModelReadyResponse, error) {
	if r.GetName() == "" {
		return nil, GRPCError(Errorf(InvalidArgument, "name: missing"))
	}
	ok, err := g.s.ModelReady(ctx, r.GetName(), r.GetVersion())
	if err != nil {
		return nil, GRPCError(err)
	}
	return &pb.ModelReadyResponse{Ready: ok}, nil
}

func (g *grpcService) ServerMetadata(ctx context.Context, _ *pb.ServerMetadataRequest) (*pb.ServerMetadataResponse, error) {
	return ServerMetadataToProto(g.s.ServerMetadata(ctx)), nil
}

func (g *grpcService) ModelMetadata(ctx context.Context, r *pb.ModelMetadataRequest) (*pb.ModelMetadataResponse, error) {
	if r.GetName() == "" {
		return nil, GRPCError(Errorf(InvalidArgument, "name: missing"))
	}
	md, err := g.s.ModelMetadata(ctx, r.GetName(), r.GetVersion())
	if err != nil {
		return nil, GRPCError(err)
	}
	return ModelMetadataToProto(md), nil
}

func (g *grpcService) ModelInfer(ctx context.Context, r *pb.ModelInferRequest) (*pb.ModelInferResponse, error) {
	if r.GetModelName() == "" {
		return nil, GRPCError(Errorf(InvalidArgument, "model_name: missing"))
	}
	req, err := InferRequestFromProto(r)
	if err != nil {
		return nil, GRPCError(err)
	}
	resp, err := g.s.Infer(ctx, req)
	if err != nil {
		return nil, GRPCError(err)
	}
	if resp.ModelName == "" {
		resp.ModelName = req.ModelName
	}
	if resp.ID == "" {
		resp.ID = req.ID
	}
	for i := range resp.Outputs {
		if err := resp.Outputs[i].Validate(); err != nil {
			return nil, GRPCError(Errorf(Internal, "outputs[%d]: %v", i, err))
		}
	}
	return InferResponseToProto(resp), nil
}

func (g *grpcService) RepositoryIndex(ctx context.Context, r *pb.RepositoryIndexRequest) (*pb.RepositoryIndexResponse, error) {
	models, err := g.s.RepositoryIndex(ctx, r.GetReady())
	if err != nil {
		return nil, GRPCError(err)
	}
	return RepositoryIndexToProto(models), nil
}

func (g *grpcService) RepositoryModelLoad(ctx context.Context, r *pb.RepositoryModelLoadRequest) (*pb.RepositoryModelLoadResponse, error) {
	if r.GetModelName() == "" {
		return nil, GRPCError(Errorf(InvalidArgument, "model_name: missing"))
	}
	if err := g.s.LoadModel(ctx, r.GetModelName()); err != nil {
		return nil, GRPCError(err)
	}
	return &pb.RepositoryModelLoadResponse{}, nil
}

func (g *grpcService) RepositoryModelUnload(ctx context.Context, r *pb.RepositoryModelUnloadRequest) (*pb.RepositoryModelUnloadResponse, error) {
	if r.GetModelName() == "" {
		return nil, GRPCError(Errorf(InvalidArgument, "model_name: missing"))
	}
	if err := g.s.UnloadModel(ctx, r.GetModelName()); err != nil {
		return nil, GRPCError(err)
	}
	return &pb.RepositoryModelUnloadResponse{}, nil
}
