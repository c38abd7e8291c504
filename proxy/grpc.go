package proxy

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"time"

	"go.opentelemetry.io/otel/propagation"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/oip"
	pb "github.com/switchyard-dev/switchyard/oip/inferencepb"
	"github.com/switchyard-dev/switchyard/proxy/upstream"
)

// grpcFront serves GRPCInferenceService for the virtual models.
type grpcFront struct {
	pb.UnimplementedGRPCInferenceServiceServer
	p *Proxy
}

// MetadataVariant is the gRPC header metadata key naming the variant that
// answered (the fallback marks: marks.go).
const MetadataVariant = "x-switchyard-variant"

func (g *grpcFront) ServerLive(context.Context, *pb.ServerLiveRequest) (*pb.ServerLiveResponse, error) {
	return &pb.ServerLiveResponse{Live: true}, nil
}

func (g *grpcFront) ServerReady(context.Context, *pb.ServerReadyRequest) (*pb.ServerReadyResponse, error) {
	return &pb.ServerReadyResponse{Ready: g.p.snap.Load() != nil}, nil
}

func (g *grpcFront) ServerMetadata(context.Context, *pb.ServerMetadataRequest) (*pb.ServerMetadataResponse, error) {
	return oip.ServerMetadataToProto(oip.ServerMetadata{Name: ServerName, Version: ServerVersion, Extensions: []string{}}), nil
}

func mdFirst(md metadata.MD, key string) string {
	if key == "" {
		return ""
	}
	return first(md[key])
}

func (g *grpcFront) resolveMD(ctx context.Context, model, version string) (*Route, *Variant, error) {
	s := g.p.snap.Load()
	md, _ := metadata.FromIncomingContext(ctx)
	var override, key string
	if s != nil {
		if r := s.routes[model]; r != nil {
			override, key = mdFirst(md, r.overrideMD), mdFirst(md, r.stickyMD)
		}
	}
	r, choice, oerr := g.p.resolve(s, model, version, override, key)
	if oerr != nil {
		return nil, nil, oip.GRPCError(oerr)
	}
	v := r.Variants[choice.Index]
	grpc.SetHeader(ctx, metadata.Pairs(MetadataVariant, v.Name))
	return r, v, nil
}

func (g *grpcFront) ModelReady(ctx context.Context, req *pb.ModelReadyRequest) (*pb.ModelReadyResponse, error) {
	r, v, err := g.resolveMD(ctx, req.GetName(), req.GetVersion())
	if oip.CodeOf(oip.ErrorFromGRPC(err)) == oip.NotFound {
		// Triton's answer for an unknown model or version: OK, ready false
		// (tritonclient's is_model_ready expects it). REST keeps its 404.
		return &pb.ModelReadyResponse{Ready: false}, nil
	}
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, r.Timeout)
	defer cancel()
	e := upstream.PickP2C(v.Endpoints, rand.Uint64(), time.Now().UnixNano(), nil)
	if e.GRPC != nil {
		ok, err := grpcModelReady(ctx, v, e)
		if oip.CodeOf(err) == oip.NotFound {
			return &pb.ModelReadyResponse{Ready: false}, nil
		}
		if err != nil {
			return nil, oip.GRPCError(err)
		}
		return &pb.ModelReadyResponse{Ready: ok}, nil
	}
	deadline, _ := ctx.Deadline()
	var resp upstream.Response
	if err := e.HTTP.Do(deadline, &upstream.Request{Method: http.MethodGet, Path: v.readyPath}, &resp); err != nil {
		return nil, oip.GRPCError(oip.Errorf(oip.Unavailable, "model %q version %q: %v", r.Name, v.Name, err))
	}
	return &pb.ModelReadyResponse{Ready: resp.Status == http.StatusOK}, nil
}

func (g *grpcFront) ModelMetadata(ctx context.Context, req *pb.ModelMetadataRequest) (*pb.ModelMetadataResponse, error) {
	r, v, err := g.resolveMD(ctx, req.GetName(), req.GetVersion())
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, r.Timeout)
	defer cancel()
	e := upstream.PickP2C(v.Endpoints, rand.Uint64(), time.Now().UnixNano(), nil)
	if e.GRPC != nil {
		md, err := grpcModelMetadata(ctx, v, e)
		if err != nil {
			return nil, oip.GRPCError(err)
		}
		return oip.ModelMetadataToProto(md), nil
	}
	deadline, _ := ctx.Deadline()
	var resp upstream.Response
	if err := e.HTTP.Do(deadline, &upstream.Request{Method: http.MethodGet, Path: v.metadataPath}, &resp); err != nil {
		return nil, oip.GRPCError(oip.Errorf(oip.Unavailable, "model %q version %q: %v", r.Name, v.Name, err))
	}
	if resp.Status != http.StatusOK {
		return nil, httpErrorToGRPC(resp.Status, resp.Body)
	}
	var md oip.ModelMetadata
	if err := json.Unmarshal(resp.Body, &md); err != nil {
		return nil, status.Errorf(oip.Internal.GRPCCode(), "model %q version %q: bad metadata from upstream: %v", r.Name, v.Name, err)
	}
	return oip.ModelMetadataToProto(&md), nil
}

func grpcModelReady(ctx context.Context, v *Variant, e *upstream.Endpoint) (bool, error) {
	resp, err := e.GRPC.ModelReady(ctx, &pb.ModelReadyRequest{Name: v.BackendModel, Version: v.BackendVersion})
	if err != nil {
		return false, oip.ErrorFromGRPC(err)
	}
	return resp.GetReady(), nil
}

func grpcModelMetadata(ctx context.Context, v *Variant, e *upstream.Endpoint) (*oip.ModelMetadata, error) {
	resp, err := e.GRPC.ModelMetadata(ctx, &pb.ModelMetadataRequest{Name: v.BackendModel, Version: v.BackendVersion})
	if err != nil {
		return nil, oip.ErrorFromGRPC(err)
	}
	return oip.ModelMetadataFromProto(resp), nil
}

// httpErrorToGRPC turns an upstream REST error answer ({"error": "..."})
// into a gRPC status with the matching code.
func httpErrorToGRPC(statusCode int, body []byte) error {
	msg, ok := errorMessage(body)
	if !ok {
		msg = string(body)
	}
	return status.Error(oip.CodeFromHTTPStatus(statusCode).GRPCCode(), msg)
}

func (g *grpcFront) ModelInfer(ctx context.Context, req *pb.ModelInferRequest) (*pb.ModelInferResponse, error) {
	p := g.p
	start := time.Now()
	s := p.snap.Load()
	md, _ := metadata.FromIncomingContext(ctx)
	model := req.GetModelName()
	var override, key string
	if s != nil {
		if r := s.routes[model]; r != nil {
			override, key = mdFirst(md, r.overrideMD), mdFirst(md, r.stickyMD)
		}
	}
	route, choice, oerr := p.resolve(s, model, req.GetModelVersion(), override, key)
	if oerr != nil {
		p.logRequest(ctx, model, "", oerr.HTTPStatus(), start, oerr, mdFirst(md, "traceparent"))
		return nil, oip.GRPCError(oerr)
	}
	x := &Exchange{Route: route, Choice: choice, Start: start, Deadline: start.Add(route.Timeout), StickyKey: key, pbReq: req}
	x.noCache = hasNoCache(mdFirst(md, "cache-control"))
	if dl, ok := ctx.Deadline(); ok && dl.Before(x.Deadline) {
		x.Deadline = dl
	}
	x.TraceParent, x.TraceState = mdFirst(md, "traceparent"), mdFirst(md, "tracestate")
	ctx, span := p.begin(ctx, x, metadataCarrier(md))
	res := &Result{}
	err := p.serve(ctx, x, res)
	out, err := g.toProto(x, res, err)
	hdr := metadata.MD{}
	if av := answeredBy(res, route.Variants[choice.Index]); av != nil {
		hdr.Append(MetadataVariant, av.Name)
	}
	appendMarks(hdr, res)
	grpc.SetHeader(ctx, hdr)
	code := "OK"
	httpStatus := http.StatusOK
	if err != nil {
		st, _ := status.FromError(err)
		code = st.Code().String()
		httpStatus = oip.CodeFromGRPC(st.Code()).HTTPStatus()
	}
	p.finish(ctx, span, x, res, httpStatus, code, err, time.Since(start))
	p.handOff(x) // the shadow enqueue (grpc-go writes the answer after return)
	return out, err
}

func (g *grpcFront) toProto(x *Exchange, res *Result, err error) (*pb.ModelInferResponse, error) {
	if err != nil {
		return nil, oip.GRPCError(err)
	}
	if res.PB != nil {
		return res.PB, nil
	}
	if !res.OK() && res.parsed == nil {
		return nil, httpErrorToGRPC(res.Status, res.Body)
	}
	resp, perr := res.Response()
	if perr != nil {
		return nil, status.Errorf(oip.Internal.GRPCCode(), "model %q: cannot decode the upstream answer: %v", x.Route.Name, perr)
	}
	return oip.InferResponseToProto(resp), nil
}

// metadataCarrier adapts gRPC metadata to the OTel propagator.
type metadataCarrier metadata.MD

func (c metadataCarrier) Get(k string) string { return first(metadata.MD(c)[k]) }
func (c metadataCarrier) Set(k, v string)     { metadata.MD(c).Set(k, v) }
func (c metadataCarrier) Keys() []string {
	out := make([]string, 0, len(c))
	for k := range c {
		out = append(out, k)
	}
	return out
}

var _ propagation.TextMapCarrier = metadataCarrier{}
