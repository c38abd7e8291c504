package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	grpccodes "google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/fallback"
	"github.com/switchyard-dev/switchyard/oip"
	"github.com/switchyard-dev/switchyard/oip/pbwire"
	"github.com/switchyard-dev/switchyard/proxy/upstream"
	"github.com/switchyard-dev/switchyard/telemetry"
)

// call calls a variant's endpoints: the breaker first, then up to
// 1+Retries attempts, each on an endpoint chosen by power of two choices
// (avoiding the endpoint that just failed), all within the exchange's
// deadline and the route's retry budget. Each attempt is judged by
// fallback.Judge, the one rule for whose fault an outcome is; the last
// attempt's trigger goes to res.Trigger, to the breaker and to the error
// the client would get: nil for a good answer and for the backend's own
// REST answers passed through (a 4xx about the request, a 5xx), else an
// *oip.Error naming the model, version and cause.
func (p *Pipeline) call(ctx context.Context, x *Exchange, v *Variant, res *Result) error {
	r := v.Route
	res.Variant = v
	ticket, ok := v.Breaker.Allow()
	if !ok {
		res.Trigger = fallback.BreakerOpen
		v.metrics.upstreamError(fallback.BreakerOpen.String())
		return oip.Errorf(oip.Unavailable, "model %q version %q: circuit breaker open after repeated failures; not calling upstream", r.Name, v.Name)
	}
	var (
		prev     *upstream.Endpoint
		trig     fallback.Trigger
		lastErr  error
		attempts int
	)
	for {
		now := time.Now()
		if !now.Before(x.Deadline) {
			trig, lastErr = fallback.Timeout, upstream.ErrTimeout
			break
		}
		e := upstream.PickP2C(v.Endpoints, rand.Uint64(), now.UnixNano(), prev)
		res.Reset()
		res.Variant = v
		attempts++
		trig, lastErr = p.attempt(ctx, x, v, e, attempts, res)
		if trig == fallback.None || trig.EjectsEndpoint() || trig.Fault() == fallback.FaultRequest {
			if e.Report(!trig.EjectsEndpoint(), time.Now().UnixNano(), &p.cfg.Outlier) {
				p.metrics.Ejections.WithLabelValues(e.Addr).Inc()
				p.log.Warn("upstream endpoint ejected", "model", r.Name, "variant", v.Name, "endpoint", e.Addr, "ejections", e.Ejections(), "error", errString(lastErr))
			}
		}
		if f := trig.Fault(); f == fallback.FaultNone || f == fallback.FaultRequest || f == fallback.FaultClient {
			break
		}
		v.metrics.upstreamError(trig.String())
		if !trig.Retryable() || attempts > r.Retries {
			break
		}
		if !r.Budget.Withdraw() {
			v.metrics.upstreamError("budget_exhausted")
			break
		}
		x.Retries++
		v.metrics.retries.Inc()
		prev = e
	}
	v.Breaker.Done(ticket, fallback.ResultOf(trig))
	res.Trigger = trig
	return upstreamError(x, v, res, trig, lastErr, attempts)
}

// upstreamError is what the client gets for an attempt judged trig: nil
// for a good answer and for the backend's own answers passed through (a
// REST 4xx about the request, a REST 5xx), else an *oip.Error naming the
// model, version and cause.
func upstreamError(x *Exchange, v *Variant, res *Result, trig fallback.Trigger, err error, attempts int) error {
	r := v.Route
	switch trig {
	case fallback.None:
		return nil
	case fallback.Rejected:
		if res.Status != 0 {
			return nil // the backend's REST answer, naming the problem, passed through
		}
		return err // the backend's gRPC verdict (InvalidArgument, ...)
	case fallback.Cancelled:
		return oip.Errorf(oip.Canceled, "model %q version %q: the client cancelled the request", r.Name, v.Name)
	case fallback.ShuttingDown:
		return oip.Errorf(oip.Unavailable, "model %q version %q: the proxy is shutting down: the call upstream was cut when its drain ran out of time (retry on another proxy)", r.Name, v.Name)
	case fallback.Timeout:
		return oip.Errorf(oip.DeadlineExceeded, "model %q version %q: no answer within the %v latency budget (%d attempts)", r.Name, v.Name, r.Timeout, attempts)
	case fallback.NotServing:
		return oip.Errorf(oip.Unavailable, "model %q version %q is not serving: %s", r.Name, v.Name, upstreamCause(res, err))
	case fallback.Refused:
		return oip.Errorf(oip.Unavailable, "model %q version %q: the backend refused the call: %s", r.Name, v.Name, upstreamCause(res, err))
	case fallback.Overload:
		e := oip.Errorf(oip.Unavailable, "model %q version %q is overloaded: %s", r.Name, v.Name, upstreamCause(res, err))
		e.RetryAfter = overloadRetryAfter
		return e
	case fallback.BadAnswer:
		return oip.Errorf(oip.Unavailable, "model %q version %q: %v", r.Name, v.Name, err)
	case fallback.Upstream5xx, fallback.Unavailable, fallback.Internal, fallback.NaNOutput:
		if res.Status != 0 {
			return nil // the backend's own 5xx answer, passed through
		}
		if trig == fallback.NaNOutput && res.OK() {
			return nil // a binary answer holding NaN: the fallback chain, if any, decides
		}
		return oip.Errorf(oip.Unavailable, "model %q version %q: upstream failed (%s) after %d attempts: %s", r.Name, v.Name, trig, attempts, upstreamCause(res, err))
	}
	return oip.Errorf(oip.Unavailable, "model %q version %q: no healthy upstream after %d attempts: %v", r.Name, v.Name, attempts, err)
}

// upstreamCause is the backend's own words for a failed attempt: its REST
// error message, or the call's error.
func upstreamCause(res *Result, err error) string {
	if res.Status != 0 {
		if msg, ok := ErrorMessage(res.Body); ok {
			if len(msg) > 300 {
				msg = msg[:300] + "..."
			}
			return fmt.Sprintf("the backend answered %d: %s", res.Status, msg)
		}
		return fmt.Sprintf("the backend answered %d", res.Status)
	}
	return errString(err)
}

// ErrorMessage is the message of an OIP REST error answer
// ({"error": "..."}); ok is false when body is not one.
func ErrorMessage(body []byte) (string, bool) {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		return e.Error, true
	}
	return "", false
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func (p *Pipeline) attempt(ctx context.Context, x *Exchange, v *Variant, e *upstream.Endpoint, n int, res *Result) (fallback.Trigger, error) {
	traceParent := x.TraceParent
	var span trace.Span
	if p.tracing {
		ctx, span = p.tracer.Start(ctx, "upstream "+v.Route.Name+"/"+v.Name, trace.WithSpanKind(trace.SpanKindClient),
			trace.WithAttributes(attribute.String("switchyard.endpoint", e.Addr), attribute.Int("switchyard.attempt", n)))
		traceParent = telemetry.FormatTraceparent(span.SpanContext())
	}
	e.Begin()
	var o fallback.Outcome
	var err error
	if e.HTTP != nil {
		o, err = attemptHTTP(ctx, x, v, e, traceParent, res)
	} else {
		o, err = attemptGRPC(ctx, x, v, e, traceParent, res)
	}
	e.End()
	// The client cancelled or went away (its own deadline passing is a
	// timeout: the version did not answer within the time it was given).
	o.ClientGone = errors.Is(ctx.Err(), context.Canceled)
	// A drain past its bound cut the endpoint's calls (Pipeline.CutUpstreams):
	// the proxy's doing, not the version's timeout or broken connection.
	o.Cut = err != nil && e.IsCut()
	if o.Transport == fallback.TransportOK && v.Route.validate && !o.ClientGone {
		o.NaN, o.RowsMismatch, err = validateAnswer(x, res, err)
	}
	trig := fallback.Judge(o)
	if span != nil {
		if trig != fallback.None {
			span.SetStatus(codes.Error, trig.String())
			if err != nil {
				span.RecordError(err)
			}
		}
		if res.Status != 0 {
			span.SetAttributes(attribute.Int("http.response.status_code", res.Status))
		}
		span.End()
	}
	return trig, err
}

// validateAnswer looks into an answer for what fallback.Judge needs beyond
// its status (routes with a fallback policy only: it decodes the answer):
// NaN/±Inf in a floating-point output (or a 5xx saying so, as a JSON
// answer cannot carry them), and a batch dimension other than the
// request's. err is the attempt's error, returned as is or, for a
// misshapen answer, replaced by one naming both sizes.
func validateAnswer(x *Exchange, res *Result, err error) (nan, mismatch bool, _ error) {
	switch {
	case res.Status >= 500:
		return bytes.Contains(res.Body, nanMessageBytes), false, err
	case err != nil || !res.OK():
		return false, false, err
	}
	resp, perr := res.Response()
	if perr != nil {
		return false, true, fmt.Errorf("the answer cannot be decoded: %v", perr)
	}
	// NaN out of NaN in is the request's doing: the answer goes to the
	// client as it is, and no breaker, chain or canary counts it.
	nan = oip.AnyNaNOrInf(resp.Outputs) && !x.inputsHaveNaN()
	want := requestRows(x)
	got := oip.BatchRows(resp.Outputs, 2)
	if want >= 0 && got >= 0 && got != want {
		return nan, true, fmt.Errorf("the answer has %d rows; the request has %d", got, want)
	}
	return nan, false, nil
}

// requestRows is the request's batch dimension (oip.BatchRows of its
// inputs; -1 when unknown), read from the gRPC message's shapes or the
// parsed REST request.
func requestRows(x *Exchange) int64 {
	if m := x.GRPCRequest(); m != nil {
		in := m.GetInputs()
		return oip.BatchRowsOf(len(in), func(i int) []int64 { return in[i].GetShape() }, 1)
	}
	req, err := x.Request()
	if err != nil {
		return -1
	}
	return oip.BatchRows(req.Inputs, 1)
}

func attemptHTTP(ctx context.Context, x *Exchange, v *Variant, e *upstream.Endpoint, traceParent string, res *Result) (fallback.Outcome, error) {
	req := upstream.Request{Path: v.inferPath, ContentType: x.ContentType, HeaderLen: x.HeaderLen, Body: x.Body,
		TraceParent: traceParent, TraceState: x.TraceState, Ctx: ctx}
	if x.grpcClient() {
		// A gRPC request to an HTTP version: encoded once in the binary
		// tensor form, asking for binary outputs, so nothing is lost on
		// the way (NaN, ±Inf, 64-bit integers, exact floats) and nothing a
		// gRPC client may send is refused.
		if len(x.restBuf) == 0 {
			parsed, err := x.Request()
			if err != nil {
				return fallback.Outcome{HTTPStatus: 400}, err
			}
			if x.restBuf, x.restHeaderLen, err = oip.AppendInferRequest(x.restBuf[:0], parsed.WithBinaryOutput(), true); err != nil {
				return fallback.Outcome{HTTPStatus: 400}, oip.Errorf(oip.InvalidArgument, "model %q: %v", v.Route.Name, err)
			}
		}
		req.Body, req.ContentType, req.HeaderLen = x.restBuf, "application/json", 0
		if x.restHeaderLen < len(x.restBuf) {
			req.ContentType, req.HeaderLen = "application/octet-stream", x.restHeaderLen
		}
	}
	if req.ContentType == "" {
		req.ContentType = "application/json"
	}
	resp := upstream.Response{Body: res.Body[:0]}
	err := e.HTTP.Do(x.Deadline, &req, &resp)
	res.Body = resp.Body
	if err != nil {
		switch {
		case errors.Is(err, upstream.ErrTimeout):
			return fallback.Outcome{Transport: fallback.TransportTimeout}, err
		case errors.Is(err, upstream.ErrConnect):
			return fallback.Outcome{Transport: fallback.TransportConnect}, err
		case errors.Is(err, upstream.ErrProtocol):
			return fallback.Outcome{Transport: fallback.TransportProtocol}, err
		}
		return fallback.Outcome{Transport: fallback.TransportReset}, err
	}
	res.Status, res.ContentType, res.HeaderLen = resp.Status, resp.ContentType, resp.HeaderLen
	o := fallback.Outcome{HTTPStatus: resp.Status, RetryAfter: resp.RetryAfter}
	if resp.Status >= 300 {
		return o, fmt.Errorf("%s answered %d", e.Addr, resp.Status)
	}
	return o, nil
}

func attemptGRPC(ctx context.Context, x *Exchange, v *Variant, e *upstream.Endpoint, traceParent string, res *Result) (fallback.Outcome, error) {
	if x.PBRaw != nil && e.RawInfer() {
		return attemptGRPCRaw(ctx, x, v, e, traceParent, res)
	}
	req := x.GRPCRequest()
	if req == nil {
		// A REST request to a gRPC version: encoded once (x.PBReq stays
		// nil: it says the client speaks gRPC).
		if x.upPB == nil {
			parsed, err := x.Request()
			if err != nil {
				return fallback.Outcome{GRPC: true, GRPCCode: grpccodes.InvalidArgument}, err
			}
			x.upPB = oip.InferRequestToProto(parsed)
		}
		req = x.upPB
	}
	req.ModelName, req.ModelVersion = v.BackendModel, v.BackendVersion
	cctx, cancel := grpcCallContext(ctx, x, traceParent)
	defer cancel()
	resp, err := e.GRPC.ModelInfer(cctx, req)
	if err == nil {
		res.PB = resp
		return fallback.Outcome{GRPC: true}, nil
	}
	st, _ := status.FromError(err)
	return fallback.Outcome{GRPC: true, GRPCCode: st.Code(), RetryAfter: oip.RetryAfterOf(st) > 0}, oip.ErrorFromGRPC(err)
}

// attemptGRPCRaw is attemptGRPC for a request passed through: its bytes
// with the version's backend model and version spliced in (once per
// exchange), the answer's bytes into res.Raw. A route with a canary gets
// the answer decoded too (res.PB: its stats look for NaN in it).
func attemptGRPCRaw(ctx context.Context, x *Exchange, v *Variant, e *upstream.Endpoint, traceParent string, res *Result) (fallback.Outcome, error) {
	if x.upRawFor != v {
		// A new slice: grpc-go may still hold the previous one.
		buf := make([]byte, 0, pbwire.RequestSize(x.PBRaw, x.PBHead, v.BackendModel, v.BackendVersion))
		x.upRaw, x.upRawFor = pbwire.AppendRequest(buf, x.PBRaw, x.PBHead, v.BackendModel, v.BackendVersion), v
	}
	cctx, cancel := grpcCallContext(ctx, x, traceParent)
	defer cancel()
	raw, err := e.ModelInferRaw(cctx, x.upRaw)
	if err == nil {
		res.Raw = raw
		if m := v.Route.Model; m != nil && m.Spec.Canary != nil {
			if _, perr := res.Response(); perr != nil {
				return fallback.Outcome{GRPC: true, GRPCCode: grpccodes.Internal}, oip.Errorf(oip.Internal, "model %q version %q: cannot decode the answer: %v", v.Route.Name, v.Name, perr)
			}
		}
		return fallback.Outcome{GRPC: true}, nil
	}
	st, _ := status.FromError(err)
	return fallback.Outcome{GRPC: true, GRPCCode: st.Code()}, oip.ErrorFromGRPC(err)
}

// grpcCallContext is the upstream call's context: the exchange's
// deadline, and the trace context as metadata.
func grpcCallContext(ctx context.Context, x *Exchange, traceParent string) (context.Context, context.CancelFunc) {
	cctx, cancel := ctx, context.CancelFunc(func() {})
	if dl, ok := ctx.Deadline(); !ok || dl.After(x.Deadline) {
		// (When the client's own deadline is the exchange's, its context
		// already ends then: no timer of our own.)
		cctx, cancel = context.WithDeadline(ctx, x.Deadline)
	}
	if traceParent != "" {
		kv := []string{"traceparent", traceParent}
		if x.TraceState != "" {
			kv = append(kv, "tracestate", x.TraceState)
		}
		cctx = metadata.AppendToOutgoingContext(cctx, kv...)
	}
	return cctx, cancel
}
