package front

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/switchyard-dev/switchyard/oip/inferencepb"
)

// The model repository extension is the backends' (and the control
// plane's, which decides what each virtual model routes to): the proxy
// refuses it on both transports with the same explanation, REST with 404,
// gRPC with UNIMPLEMENTED, instead of a bare "unknown method".
// NoRepository is that explanation.
const NoRepository = "the proxy does not serve the model repository extension; manage models through the control plane (syctl, or the backend's own repository API)"

var errNoRepository = status.Error(codes.Unimplemented, NoRepository)

func (g *grpcFront) RepositoryIndex(context.Context, *pb.RepositoryIndexRequest) (*pb.RepositoryIndexResponse, error) {
	return nil, errNoRepository
}

func (g *grpcFront) RepositoryModelLoad(context.Context, *pb.RepositoryModelLoadRequest) (*pb.RepositoryModelLoadResponse, error) {
	return nil, errNoRepository
}

func (g *grpcFront) RepositoryModelUnload(context.Context, *pb.RepositoryModelUnloadRequest) (*pb.RepositoryModelUnloadResponse, error) {
	return nil, errNoRepository
}
