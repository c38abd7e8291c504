package pipeline

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/switchyard-dev/switchyard/fallback"
	"github.com/switchyard-dev/switchyard/oip"
	pb "github.com/switchyard-dev/switchyard/oip/inferencepb"
	"github.com/switchyard-dev/switchyard/oip/pbwire"
	"github.com/switchyard-dev/switchyard/routing"
)

// Exchange is one inference request on its way through a route. The request
// is held in the form it arrived in (a REST body or a gRPC message) and is
// parsed only when something asks for it (Request), so a plain route streams
// bytes without decoding JSON.
type Exchange struct {
	Route  *Route
	Choice routing.Choice
	// Start is when the proxy received the request; Deadline is Start plus
	// the route's timeout: the whole budget, retries included.
	Start, Deadline time.Time
	// StickyKey is the sticky header's value ("" when absent).
	StickyKey string
	// TraceParent and TraceState are the W3C trace context sent upstream.
	TraceParent, TraceState string
	// Retries counts retried attempts of this exchange.
	Retries int

	// The request, as the front-end filled it in. REST form: Body (JSON,
	// or JSON header + binary tensors when HeaderLen > 0) and its content
	// type.
	Body        []byte
	HeaderLen   int
	ContentType string
	// gRPC form: decoded (PBReq), or in wire form (PBRaw, its head read
	// by pbwire: the pass-through, the gRPC front-end's infer; only on a
	// route that PassesThrough).
	PBReq  *pb.ModelInferRequest
	PBRaw  []byte
	PBHead *pbwire.Head
	// NoCache: the request said Cache-Control: no-cache or no-store
	// (the prediction cache is not read; the answer is still stored).
	NoCache bool

	// upRaw is PBRaw spliced for upRawFor's backend model and version.
	upRaw    []byte
	upRawFor *Variant

	parsed   *oip.InferRequest
	parseErr error
	// nanIn caches inputsHaveNaN: 0 not known yet, 1 no, 2 yes.
	nanIn uint8
	// restBuf is the REST (binary tensor) encoding of a gRPC request, for
	// HTTP upstreams; restHeaderLen its JSON header's length.
	restBuf       []byte
	restHeaderLen int
	// upPB is the gRPC encoding of a REST request, for gRPC upstreams.
	upPB *pb.ModelInferRequest

	// captured is the work the pipeline captured for after the answer (a
	// shadow mirror job); handOff gives it away once the answer is written.
	captured *shadowPending
}

// Request returns the parsed request, decoding it on first use.
func (x *Exchange) Request() (*oip.InferRequest, error) {
	if x.parsed != nil || x.parseErr != nil {
		return x.parsed, x.parseErr
	}
	switch {
	case x.grpcClient():
		var m *pb.ModelInferRequest
		if m, x.parseErr = x.decodedGRPC(); x.parseErr == nil {
			x.parsed, x.parseErr = oip.InferRequestFromProto(m)
		}
	default:
		x.parsed, x.parseErr = oip.DecodeInferRequest(x.Body, x.HeaderLen)
	}
	if x.parseErr != nil {
		x.parseErr = &oip.Error{Code: oip.InvalidArgument, Msg: fmt.Sprintf("model %q: %v", x.Route.Name, x.parseErr)}
	}
	return x.parsed, x.parseErr
}

// inputsHaveNaN reports whether a floating-point input holds NaN or ±Inf
// (decoding the request on first use; asked only when an answer holds
// NaN). Such an answer follows from the input: garbage in, not the
// version's failure.
func (x *Exchange) inputsHaveNaN() bool {
	if x.nanIn == 0 {
		x.nanIn = 1
		if req, err := x.Request(); err == nil && oip.AnyNaNOrInf(req.Inputs) {
			x.nanIn = 2
		}
	}
	return x.nanIn == 2
}

// RawBody returns the REST body as received (nil for gRPC requests) and its
// Inference-Header-Content-Length.
func (x *Exchange) RawBody() ([]byte, int) { return x.Body, x.HeaderLen }

// GRPCRequest returns the gRPC request as received, decoded (nil for REST
// requests and for a request in wire form that does not decode).
func (x *Exchange) GRPCRequest() *pb.ModelInferRequest {
	m, _ := x.decodedGRPC()
	return m
}

// grpcClient reports whether the client sent a gRPC request.
func (x *Exchange) grpcClient() bool { return x.PBReq != nil || x.PBRaw != nil }

// decodedGRPC is the gRPC request decoded (a request in wire form is
// decoded on first use; pbRaw stays what is sent upstream).
func (x *Exchange) decodedGRPC() (*pb.ModelInferRequest, error) {
	if x.PBReq != nil || x.PBRaw == nil {
		return x.PBReq, nil
	}
	m := &pb.ModelInferRequest{}
	if err := proto.Unmarshal(x.PBRaw, m); err != nil {
		return nil, err
	}
	x.PBReq = m
	return m, nil
}

// Reset empties the exchange for reuse, keeping its buffers.
func (x *Exchange) Reset() {
	body, rest := x.Body[:0], x.restBuf[:0]
	*x = Exchange{Body: body, restBuf: rest}
}

// Result is the answer to an exchange: either a REST response (Status,
// ContentType, Body, HeaderLen), or a gRPC response (PB), or an error.
type Result struct {
	// Variant is the version that answered (after a fallback: the one that
	// actually answered, e.g. the backup).
	Variant *Variant
	// Fallback names the fallback step that produced the answer ("" for a
	// normal answer); it is sent as x-switchyard-fallback.
	Fallback string
	// FallbackReason is the trigger that made the fallback answer
	// (x-switchyard-fallback-reason); Cache is "hit" for an answer from the
	// prediction cache (x-switchyard-cache).
	FallbackReason string
	Cache          string
	// Trigger is the judged outcome of the last upstream attempt
	// (fallback.Judge; None for a good answer), or why the chain ran. It
	// is the one failure vocabulary: metrics, canary stats, fallback
	// reasons and response marks come from it.
	Trigger fallback.Trigger

	Status      int
	ContentType string
	HeaderLen   int
	Body        []byte
	PB          *pb.ModelInferResponse
	// Raw is a gRPC answer in its wire form, as the version sent it (a
	// request passed through: Exchange.pbRaw); PB may hold it decoded.
	Raw []byte

	parsed *oip.InferResponse
}

// Decoded reports whether the result holds a parsed answer (from
// Response or SetResponse).
func (r *Result) Decoded() bool { return r.parsed != nil }

// OK reports whether the result is a successful answer.
func (r *Result) OK() bool {
	return r.PB != nil || r.Raw != nil || (r.Status >= 200 && r.Status < 300)
}

// Response returns the parsed response, decoding it on demand (for caches,
// validators and shadow comparisons).
func (r *Result) Response() (*oip.InferResponse, error) {
	if r.parsed != nil {
		return r.parsed, nil
	}
	var err error
	if r.PB == nil && r.Raw != nil {
		m := &pb.ModelInferResponse{}
		if err = proto.Unmarshal(r.Raw, m); err != nil {
			return nil, err
		}
		r.PB = m
	}
	switch {
	case r.PB != nil:
		r.parsed, err = oip.InferResponseFromProto(r.PB)
	case r.OK():
		r.parsed, err = oip.DecodeInferResponse(r.Body, r.HeaderLen)
	default:
		return nil, fmt.Errorf("response is status %d, not an answer", r.Status)
	}
	return r.parsed, err
}

// SetResponse replaces the result with a parsed answer (e.g. from a cache
// or a static fallback); the transports encode it.
func (r *Result) SetResponse(v *Variant, resp *oip.InferResponse) {
	r.Variant, r.parsed, r.PB, r.Raw = v, resp, nil, nil
	r.Status, r.ContentType, r.HeaderLen, r.Body = 200, "", 0, r.Body[:0]
}

// Reset empties the result for reuse, keeping its body's buffer.
func (r *Result) Reset() {
	body := r.Body[:0]
	*r = Result{Body: body}
}
