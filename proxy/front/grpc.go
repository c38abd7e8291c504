package front

import (
	"context"
	"crypto/tls"
	"net/http"
	"slices"
	"time"

	"github.com/switchyard-dev/switchyard/proxy/pipeline"

	"go.opentelemetry.io/otel/propagation"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/switchyard-dev/switchyard/fallback"
	"github.com/switchyard-dev/switchyard/internal/h2"
	"github.com/switchyard-dev/switchyard/oip"
	pb "github.com/switchyard-dev/switchyard/oip/inferencepb"
	"github.com/switchyard-dev/switchyard/oip/pbwire"
	"github.com/switchyard-dev/switchyard/proxy/upstream"
)

// grpcFront serves GRPCInferenceService for the virtual models.
type grpcFront struct {
	pb.UnimplementedGRPCInferenceServiceServer
	p *pipeline.Pipeline
}

// MetadataVariant is the gRPC header metadata key naming the variant that
// answered (the fallback marks: proxy/pipeline/marks.go).
const MetadataVariant = "x-switchyard-variant"

func (g *grpcFront) ServerLive(context.Context, *pb.ServerLiveRequest) (*pb.ServerLiveResponse, error) {
	return &pb.ServerLiveResponse{Live: true}, nil
}

func (g *grpcFront) ServerReady(context.Context, *pb.ServerReadyRequest) (*pb.ServerReadyResponse, error) {
	return &pb.ServerReadyResponse{Ready: g.p.Snapshot() != nil}, nil
}

func (g *grpcFront) ServerMetadata(context.Context, *pb.ServerMetadataRequest) (*pb.ServerMetadataResponse, error) {
	return oip.ServerMetadataToProto(serverMetadata), nil
}

// inValue is the first value of the request metadata key ("" when absent
// or key is ""), without copying the whole metadata.
func inValue(ctx context.Context, key string) string {
	if key == "" {
		return ""
	}
	return first(metadata.ValueFromIncomingContext(ctx, key))
}

// describeTarget is the version a describe RPC is answered from (the
// virtual model rule, describe.go); it sets the variant header.
func (g *grpcFront) describeTarget(ctx context.Context, model, version string) (*pipeline.Variant, error) {
	s := g.p.Snapshot()
	override := ""
	if s != nil {
		if r := s.Route(model); r != nil {
			override = inValue(ctx, r.OverrideMetadata())
		}
	}
	_, v, oerr := describeTarget(s, model, version, override)
	if oerr != nil {
		return nil, oerr
	}
	grpc.SetHeader(ctx, metadata.Pairs(MetadataVariant, v.Name))
	return v, nil
}

func (g *grpcFront) ModelReady(ctx context.Context, req *pb.ModelReadyRequest) (*pb.ModelReadyResponse, error) {
	v, err := g.describeTarget(ctx, req.GetName(), req.GetVersion())
	if oip.CodeOf(err) == oip.NotFound {
		// Triton's answer for an unknown model or version: OK, ready false
		// (tritonclient's is_model_ready expects it). REST keeps its 404.
		return &pb.ModelReadyResponse{Ready: false}, nil
	}
	if err != nil {
		return nil, oip.GRPCError(err)
	}
	ok, err := ready(ctx, v)
	if err != nil {
		return nil, oip.GRPCError(err)
	}
	return &pb.ModelReadyResponse{Ready: ok}, nil
}

func (g *grpcFront) ModelMetadata(ctx context.Context, req *pb.ModelMetadataRequest) (*pb.ModelMetadataResponse, error) {
	v, err := g.describeTarget(ctx, req.GetName(), req.GetVersion())
	if err != nil {
		return nil, oip.GRPCError(err)
	}
	md, err := modelMetadata(ctx, v)
	if err != nil {
		return nil, oip.GRPCError(err)
	}
	return oip.ModelMetadataToProto(md), nil
}

func (g *grpcFront) ModelConfig(ctx context.Context, req *pb.ModelConfigRequest) (*pb.ModelConfigResponse, error) {
	v, err := g.describeTarget(ctx, req.GetName(), req.GetVersion())
	if err != nil {
		return nil, oip.GRPCError(err)
	}
	c, err := config(ctx, v)
	if err != nil {
		return nil, oip.GRPCError(err)
	}
	return &pb.ModelConfigResponse{Config: oip.ModelConfigToProto(c)}, nil
}

func (g *grpcFront) ModelStatistics(ctx context.Context, req *pb.ModelStatisticsRequest) (*pb.ModelStatisticsResponse, error) {
	if req.GetName() == "" {
		all := allStatistics(ctx, g.p)
		return oip.ModelStatisticsToProto(all), nil
	}
	v, err := g.describeTarget(ctx, req.GetName(), req.GetVersion())
	if err != nil {
		return nil, oip.GRPCError(err)
	}
	st, err := statistics(ctx, v)
	if err != nil {
		return nil, oip.GRPCError(err)
	}
	return oip.ModelStatisticsToProto(st), nil
}

// httpErrorToGRPC turns an upstream REST error answer ({"error": "..."})
// into a gRPC status with the matching code.
func httpErrorToGRPC(statusCode int, body []byte) error {
	msg, ok := pipeline.ErrorMessage(body)
	if !ok {
		msg = string(body)
	}
	return status.Error(oip.CodeFromHTTPStatus(statusCode).GRPCCode(), msg)
}

// ModelInfer serves a decoded request (the service interface's form; the
// server registered by RegisterGRPCFront takes ModelInfer in its wire form:
// modelInferRaw).
func (g *grpcFront) ModelInfer(ctx context.Context, req *pb.ModelInferRequest) (*pb.ModelInferResponse, error) {
	hdr := metadata.MD{}
	out, _, err := g.infer(ctx, &grpcIn{req: req}, hdr)
	grpc.SetHeader(ctx, hdr)
	return out, err
}

// RegisterGRPCFront registers GRPCInferenceService with ModelInfer taken
// in its wire form (modelInferRaw); the server must use
// GRPCServerOptions' codec. A unary interceptor, if one is ever added,
// sees ModelInfer's request as an *upstream.RawMessage.
func RegisterGRPCFront(s *grpc.Server, p *pipeline.Pipeline) {
	g := &grpcFront{p: p}
	desc := pb.GRPCInferenceService_ServiceDesc
	desc.Methods = slices.Clone(desc.Methods)
	for i := range desc.Methods {
		if desc.Methods[i].MethodName == "ModelInfer" {
			desc.Methods[i].Handler = modelInferRawHandler
		}
	}
	s.RegisterService(&desc, g)
}

// GRPCServerOptions are the gRPC front-end's server options: the codec
// that receives ModelInfer requests as bytes (upstream.RawCodec: every
// other message is decoded as usual); a pool of stream workers
// (grpcStreamWorkers: a request does not start a goroutine and grow its
// stack, which was 8 % of the proxy's CPU at 1000 rps); fixed flow-control windows
// (upstream.WindowSize: without them grpc-go's window estimator pings the
// client after nearly every message; with them, on both sides, 11 → 8 read
// and write system calls per request at 1000 rps).
// grpcStreamWorkers is the number of stream workers: a worker is busy for
// the whole call, upstream wait included, so there are as many as the calls
// in flight under ordinary load (more start a goroutine each, as without
// workers); an idle worker costs its stack.
const grpcStreamWorkers = 128

func GRPCServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ForceServerCodecV2(upstream.RawCodec{}),
		grpc.NumStreamWorkers(grpcStreamWorkers),
		grpc.InitialWindowSize(upstream.WindowSize), grpc.InitialConnWindowSize(upstream.WindowSize),
	}
}

func modelInferRawHandler(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
	m := &upstream.RawMessage{}
	if err := dec(m); err != nil {
		return nil, err
	}
	g := srv.(*grpcFront)
	if interceptor == nil {
		return g.modelInferRaw(ctx, m)
	}
	info := &grpc.UnaryServerInfo{Server: srv, FullMethod: pb.GRPCInferenceService_ModelInfer_FullMethodName}
	return interceptor(ctx, m, info, func(ctx context.Context, req any) (any, error) {
		return g.modelInferRaw(ctx, req.(*upstream.RawMessage))
	})
}

// modelInferRaw is unary ModelInfer with the request in its wire form
// (grpc-go's server; the lean server calls modelInferWire itself).
func (g *grpcFront) modelInferRaw(ctx context.Context, m *upstream.RawMessage) (any, error) {
	hdr := metadata.MD{}
	out, err := g.modelInferWire(ctx, m.B, hdr)
	grpc.SetHeader(ctx, hdr)
	return out, err
}

// modelInferWire is unary ModelInfer with the request in its wire form:
// what routing needs is read from the bytes (pbwire.ReadRequest, which
// also checks the message as proto.Unmarshal would), and on a route
// without policies the bytes go upstream with the model name and version
// spliced in, and the answer comes back as bytes (the pass-through; see
// infer: then out is an *upstream.RawMessage). A message that cannot be
// decoded is INVALID_ARGUMENT naming the field. hdr gets the response
// marks.
func (g *grpcFront) modelInferWire(ctx context.Context, raw []byte, hdr metadata.MD) (any, error) {
	in := &grpcIn{raw: raw}
	if err := pbwire.ReadRequest(in.raw, &in.head); err != nil {
		g.p.LogRequest(ctx, "", "", http.StatusBadRequest, time.Now(), err, inValue(ctx, "traceparent"))
		return nil, status.Error(oip.InvalidArgument.GRPCCode(), err.Error())
	}
	out, raw, err := g.infer(ctx, in, hdr)
	switch {
	case err != nil:
		return nil, err
	case raw != nil:
		return &upstream.RawMessage{B: raw}, nil
	}
	return out, nil
}

// leanInfer is unary ModelInfer on the lean HTTP/2 server (internal/h2,
// NewLeanGRPC): modelInferWire with the answer marshalled here.
func (g *grpcFront) leanInfer(ctx context.Context, c *h2.Call) h2.Answer {
	hdr := metadata.MD{}
	out, err := g.modelInferWire(ctx, c.Msg, hdr)
	if err != nil {
		return h2.Answer{Header: hdr, Status: status.Convert(err)}
	}
	var b []byte
	switch m := out.(type) {
	case *upstream.RawMessage:
		b = m.B
	case proto.Message:
		if b, err = proto.Marshal(m); err != nil {
			return h2.Answer{Header: hdr, Status: status.Newf(oip.Internal.GRPCCode(), "cannot encode the answer: %v", err)}
		}
	}
	return h2.Answer{Msg: b, Header: hdr}
}

// The gRPC transports (Config.GRPCTransport).
const (
	GRPCLean = "lean"
	GRPCGo   = "grpc-go"
)

// NewLeanGRPC is the gRPC listener's lean HTTP/2 server: unary ModelInfer
// (uncompressed) on its own data path, every other stream (the other
// methods, streaming, reflection, compressed messages) handed to srv,
// grpc-go's server, through its ServeHTTP.
func NewLeanGRPC(p *pipeline.Pipeline, srv *grpc.Server, tlsCfg *tls.Config) *h2.Server {
	g := &grpcFront{p: p}
	fast := h2.FastFunc(g.leanInfer)
	return &h2.Server{
		Route: func(method string) h2.FastFunc {
			if method == pb.GRPCInferenceService_ModelInfer_FullMethodName {
				return fast
			}
			return nil
		},
		Fallback:       srv,
		MaxRecvMsgSize: int(p.MaxBodyBytes()),
		StreamWindow:   upstream.WindowSize, ConnWindow: upstream.WindowSize,
		TLSConfig: tlsCfg,
	}
}

// ModelStreamInfer routes each message of the stream like a unary
// ModelInfer (the sticky key and override from the stream's metadata),
// answering in order of completion with its id, errors per message
// (oip.ServeInferStream). A stream has one header for all its messages, so
// each answer carries its own marks as string parameters under the header
// names (x-switchyard-variant, and x-switchyard-fallback,
// x-switchyard-fallback-reason, x-switchyard-cache where they apply).
func (g *grpcFront) ModelStreamInfer(stream pb.GRPCInferenceService_ModelStreamInferServer) error {
	return oip.ServeInferStream(stream, func(ctx context.Context, req *pb.ModelInferRequest) (*pb.ModelInferResponse, error) {
		marks := metadata.MD{}
		out, _, err := g.infer(ctx, &grpcIn{req: req}, marks)
		if err != nil || out == nil {
			return out, err
		}
		return withMarkParameters(out, marks), nil
	})
}

// withMarkParameters is out with marks (a stream message's variant and
// fallback marks) added to its parameters. out may be shared (a cached
// answer): it is not changed; the copy shares its tensors.
func withMarkParameters(out *pb.ModelInferResponse, marks metadata.MD) *pb.ModelInferResponse {
	if len(marks) == 0 {
		return out
	}
	params := make(map[string]*pb.InferParameter, len(out.GetParameters())+len(marks))
	for k, v := range out.GetParameters() {
		params[k] = v
	}
	for k, vs := range marks {
		if len(vs) > 0 {
			params[k] = &pb.InferParameter{ParameterChoice: &pb.InferParameter_StringParam{StringParam: vs[len(vs)-1]}}
		}
	}
	return &pb.ModelInferResponse{ModelName: out.ModelName, ModelVersion: out.ModelVersion, Id: out.Id, Parameters: params,
		Outputs: out.Outputs, RawOutputContents: out.RawOutputContents}
}

// grpcIn is one ModelInfer request as the front-end got it: decoded (req:
// a stream's message) or in its wire form (raw, with its head read).
type grpcIn struct {
	req  *pb.ModelInferRequest
	raw  []byte
	head pbwire.Head
}

// infer is the gRPC adapter of the request pipeline: one ModelInfer, unary
// or a message of a stream. hdr, when not nil, gets the response marks
// (variant, fallback, cache). The answer is decoded (out) or, for a
// request passed through, in its wire form (raw).
//
// The pass-through: a request in wire form to a route without policies
// (no cache, fallback or shadow: nothing needs its tensors) stays bytes;
// a gRPC version gets them with its model name and version spliced in
// and its answer is sent back as it came; an http version decodes them
// (Exchange.Request). On a route with policies the request is decoded
// here, as the policies read it.
func (g *grpcFront) infer(ctx context.Context, in *grpcIn, hdr metadata.MD) (*pb.ModelInferResponse, []byte, error) {
	p := g.p
	start := time.Now()
	// The buffered-bytes budget (proxy/pipeline/overload.go): grpc-go has read the
	// message; holding it for the whole call is what is counted.
	var held int64
	var model, version string
	if in.req != nil {
		held = int64(proto.Size(in.req))
		model, version = in.req.GetModelName(), in.req.GetModelVersion()
	} else {
		held = int64(len(in.raw))
		model, version = string(in.head.Model), string(in.head.Version)
	}
	if !p.Budget().Take(held) {
		p.Shed("buffer")
		if resp, step, ok := p.BodylessFallback(model); ok {
			if hdr != nil {
				hdr.Append(fallback.HeaderFallback, step)
				hdr.Append(fallback.HeaderFallbackReason, fallback.Overload.String())
			}
			return oip.InferResponseToProto(resp), nil, nil
		}
		return nil, nil, oip.GRPCError(p.Budget().OverBudget(held))
	}
	defer p.Budget().Give(held)
	s := p.Snapshot()
	var override, key string
	if s != nil {
		if r := s.Route(model); r != nil {
			override, key = inValue(ctx, r.OverrideMetadata()), inValue(ctx, r.StickyMetadata())
		}
	}
	route, choice, oerr := s.Resolve(model, version, override, key)
	if oerr != nil {
		p.LogRequest(ctx, model, "", oerr.HTTPStatus(), start, oerr, inValue(ctx, "traceparent"))
		return nil, nil, oip.GRPCError(oerr)
	}
	x := &pipeline.Exchange{Route: route, Choice: choice, Start: start, Deadline: start.Add(route.Timeout), StickyKey: key, PBReq: in.req}
	if in.req == nil {
		if route.PassesThrough() {
			x.PBRaw, x.PBHead = in.raw, &in.head
		} else if x.PBReq = new(pb.ModelInferRequest); proto.Unmarshal(in.raw, x.PBReq) != nil {
			// pbwire.ReadRequest took it: not expected.
			return nil, nil, status.Errorf(oip.InvalidArgument.GRPCCode(), "model %q: the request cannot be decoded", model)
		}
	}
	x.NoCache = pipeline.HasNoCache(inValue(ctx, "cache-control"))
	if dl, ok := ctx.Deadline(); ok && dl.Before(x.Deadline) {
		x.Deadline = dl
	}
	x.TraceParent, x.TraceState = inValue(ctx, "traceparent"), inValue(ctx, "tracestate")
	var carrier propagation.TextMapCarrier
	if p.Tracing() {
		md, _ := metadata.FromIncomingContext(ctx)
		carrier = metadataCarrier(md)
	}
	ctx, span := p.Begin(ctx, x, carrier)
	res := &pipeline.Result{}
	err := p.Serve(ctx, x, res)
	out, raw, err := g.toProto(x, res, err)
	if hdr != nil {
		if av := pipeline.AnsweredBy(res, route.Variants[choice.Index]); av != nil {
			hdr.Append(MetadataVariant, av.Name)
		}
		pipeline.AppendMarks(hdr, res)
	}
	code := "OK"
	httpStatus := http.StatusOK
	if err != nil {
		st, _ := status.FromError(err)
		code = st.Code().String()
		httpStatus = oip.CodeFromGRPC(st.Code()).HTTPStatus()
	}
	p.Finish(ctx, span, x, res, httpStatus, code, err, time.Since(start))
	p.HandOff(x) // the shadow enqueue (grpc-go writes the answer after return)
	return out, raw, err
}

// toProto is the answer for a gRPC client: decoded, or the upstream's
// bytes as they came (a request passed through).
func (g *grpcFront) toProto(x *pipeline.Exchange, res *pipeline.Result, err error) (*pb.ModelInferResponse, []byte, error) {
	if err != nil {
		return nil, nil, oip.GRPCError(err)
	}
	if res.Raw != nil {
		return nil, res.Raw, nil // only a request passed through has one
	}
	if res.PB != nil {
		return res.PB, nil, nil
	}
	if !res.OK() && !res.Decoded() {
		return nil, nil, httpErrorToGRPC(res.Status, res.Body)
	}
	resp, perr := res.Response()
	if perr != nil {
		return nil, nil, status.Errorf(oip.Internal.GRPCCode(), "model %q: cannot decode the upstream answer: %v", x.Route.Name, perr)
	}
	return oip.InferResponseToProto(resp), nil, nil
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
