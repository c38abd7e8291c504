package oip

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

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
func NewGRPCService(s Server) pb.GRPCInferenceServiceServer {
	g := &grpcService{s: s}
	g.config, _ = s.(ConfigServer)
	g.stats, _ = s.(StatsServer)
	return g
}

type grpcService struct {
	pb.UnimplementedGRPCInferenceServiceServer
	s      Server
	config ConfigServer // nil: ModelConfig is Unimplemented
	stats  StatsServer  // nil: ModelStatistics is Unimplemented
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
	if e.RetryAfter > 0 {
		// An overload answer: the retry hint travels as gRPC's standard
		// RetryInfo detail (google.rpc.RetryInfo), as REST's Retry-After.
		st, derr := status.New(e.GRPCCode(), e.Msg).WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(e.RetryAfter)})
		if derr == nil {
			return st.Err()
		}
	}
	return status.Error(e.GRPCCode(), e.Msg)
}

// tritonQueueFull is how Triton words a request its ModelQueuePolicy
// turned away (UNAVAILABLE, no detail).
const tritonQueueFull = "Exceeds maximum queue size"

// RetryAfterOf is the retry hint of a gRPC status: its RetryInfo detail,
// else one second for Triton's queue-full message, else 0 (no hint).
func RetryAfterOf(st *status.Status) time.Duration {
	if st == nil || st.Code() == codes.OK {
		return 0
	}
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			return max(ri.GetRetryDelay().AsDuration(), time.Millisecond)
		}
	}
	if st.Code() == codes.Unavailable && strings.Contains(st.Message(), tritonQueueFull) {
		return time.Second
	}
	return 0
}

// ErrorFromGRPC converts a gRPC status error back into an *Error (code
// mapped by CodeFromGRPC). nil stays nil.
func ErrorFromGRPC(err error) error {
	if err == nil {
		return nil
	}
	if st, ok := status.FromError(err); ok {
		return &Error{Code: CodeFromGRPC(st.Code()), Msg: st.Message(), RetryAfter: RetryAfterOf(st)}
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
	if CodeOf(err) == NotFound {
		// Triton answers an unknown model or version with OK, ready false
		// (tritonclient's is_model_ready expects it); REST keeps its 404.
		return &pb.ModelReadyResponse{Ready: false}, nil
	}
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
	m, err := g.infer(ctx, r)
	return m, GRPCError(err)
}

// infer is one ModelInfer, unary or a message of ModelStreamInfer.
func (g *grpcService) infer(ctx context.Context, r *pb.ModelInferRequest) (*pb.ModelInferResponse, error) {
	if r.GetModelName() == "" {
		return nil, Errorf(InvalidArgument, "model_name: missing")
	}
	req, err := InferRequestFromProto(r)
	if err != nil {
		return nil, err
	}
	resp, err := g.s.Infer(ctx, req)
	if err != nil {
		return nil, err
	}
	if resp.ModelName == "" {
		resp.ModelName = req.ModelName
	}
	if resp.ID == "" {
		resp.ID = req.ID
	}
	for i := range resp.Outputs {
		if err := resp.Outputs[i].Validate(); err != nil {
			return nil, Errorf(Internal, "outputs[%d]: %v", i, err)
		}
	}
	return InferResponseToProto(resp), nil
}

// MaxStreamInFlight bounds the requests of one ModelStreamInfer stream
// that run at once; further messages wait to be read until one finishes.
const MaxStreamInFlight = 64

// ModelStreamInfer runs each message of the stream like a ModelInfer
// (ServeInferStream).
func (g *grpcService) ModelStreamInfer(stream pb.GRPCInferenceService_ModelStreamInferServer) error {
	return ServeInferStream(stream, g.infer)
}

// ServeInferStream serves one ModelStreamInfer stream with infer, the
// server's unary inference: each message runs like a ModelInfer, up to
// MaxStreamInFlight at once (so a dynamic batcher can join them), and is
// answered in order of completion. A failed request is answered with
// error_message (the status's message alone, as Triton words it) and its
// id, model name and version, and the stream goes on; the stream ends when
// the client closes its side and every answer is sent. Every Switchyard server (backend, proxy) streams through it.
func ServeInferStream(stream pb.GRPCInferenceService_ModelStreamInferServer, infer func(context.Context, *pb.ModelInferRequest) (*pb.ModelInferResponse, error)) error {
	ctx := stream.Context()
	var (
		sendMu  sync.Mutex
		sendErr error
		wg      sync.WaitGroup
	)
	slots := make(chan struct{}, MaxStreamInFlight)
	send := func(m *pb.ModelStreamInferResponse) {
		sendMu.Lock()
		defer sendMu.Unlock()
		if sendErr == nil {
			sendErr = stream.Send(m)
		}
	}
	var recvErr error
	for {
		r, err := stream.Recv()
		if err != nil {
			if err != io.EOF {
				recvErr = err
			}
			break
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			name, version, id := r.GetModelName(), r.GetModelVersion(), r.GetId() // as the client sent them
			resp, err := infer(ctx, r)
			if err != nil {
				// Triton's error_message is the error's text alone:
				// status.Convert drops grpc-go's "rpc error: code = …
				// desc = " wrapping, which tritonclient would show as is.
				send(&pb.ModelStreamInferResponse{
					ErrorMessage:  status.Convert(err).Message(),
					InferResponse: &pb.ModelInferResponse{ModelName: name, ModelVersion: version, Id: id},
				})
				return
			}
			send(&pb.ModelStreamInferResponse{InferResponse: resp})
		}()
	}
	wg.Wait()
	if recvErr != nil {
		return recvErr
	}
	if err := ctx.Err(); err != nil {
		return status.FromContextError(err).Err()
	}
	return sendErr
}

func (g *grpcService) ModelConfig(ctx context.Context, r *pb.ModelConfigRequest) (*pb.ModelConfigResponse, error) {
	if g.config == nil {
		return nil, status.Error(codes.Unimplemented, "this server does not serve model configurations")
	}
	if r.GetName() == "" {
		return nil, GRPCError(Errorf(InvalidArgument, "name: missing"))
	}
	c, err := g.config.ModelConfig(ctx, r.GetName(), r.GetVersion())
	if err != nil {
		return nil, GRPCError(err)
	}
	return &pb.ModelConfigResponse{Config: ModelConfigToProto(c)}, nil
}

func (g *grpcService) ModelStatistics(ctx context.Context, r *pb.ModelStatisticsRequest) (*pb.ModelStatisticsResponse, error) {
	if g.stats == nil {
		return nil, status.Error(codes.Unimplemented, "this server keeps no statistics")
	}
	if r.GetName() == "" && r.GetVersion() != "" {
		return nil, GRPCError(Errorf(InvalidArgument, "version %q given without a model name", r.GetVersion()))
	}
	st, err := g.stats.ModelStatistics(ctx, r.GetName(), r.GetVersion())
	if err != nil {
		return nil, GRPCError(err)
	}
	return ModelStatisticsToProto(st), nil
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
