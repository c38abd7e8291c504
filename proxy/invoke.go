package proxy

import (
	"context"
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

	"github.com/switchyard-dev/switchyard/oip"
	"github.com/switchyard-dev/switchyard/proxy/upstream"
	"github.com/switchyard-dev/switchyard/telemetry"
)

// Failure kinds of one upstream attempt ("" is success or an answer passed
// through unchanged, such as a 4xx).
const (
	kindOK          = ""
	kindConnect     = "connect"
	kindReset       = "reset"
	kindTimeout     = "timeout"
	kindUnavailable = "unavailable"
	kind5xx         = "status_5xx"
	kindProtocol    = "protocol"
)

// retryable kinds: nothing was answered, or the backend said "try again".
// Inference is a pure function of its input, so a request cut by a reset
// connection is safe to resend.
func retryable(kind string) bool {
	return kind == kindConnect || kind == kindReset || kind == kindUnavailable
}

// upstreamInvoker calls a variant's endpoints: the breaker first, then up to
// 1+Retries attempts, each on an endpoint chosen by power of two choices
// (avoiding the endpoint that just failed), all within the exchange's
// deadline and the route's retry budget.
type upstreamInvoker struct{ p *Proxy }

func (u *upstreamInvoker) Invoke(ctx context.Context, x *Exchange, v *Variant, res *Result) error {
	r := v.Route
	res.Variant = v
	done := noBreaker
	if !x.ext.breakerHeld { // the fallback extension holds the breaker itself
		var err error
		if done, err = v.Breaker.Allow(); err != nil {
			v.metrics.upstreamError("breaker_open")
			x.ext.failKind = "breaker_open"
			return oip.Errorf(oip.Unavailable, "model %q version %q: circuit breaker open after repeated failures; not calling upstream", r.Name, v.Name)
		}
	}
	var (
		prev     *upstream.Endpoint
		lastKind string
		lastErr  error
		attempts int
	)
	for {
		now := time.Now()
		if !now.Before(x.Deadline) {
			lastKind, lastErr = kindTimeout, upstream.ErrTimeout
			break
		}
		e := upstream.PickP2C(v.Endpoints, rand.Uint64(), now.UnixNano(), prev)
		res.reset()
		res.Variant = v
		attempts++
		kind, aerr := u.attempt(ctx, x, v, e, attempts, res)
		if e.Report(kind == kindOK, time.Now().UnixNano(), &u.p.cfg.Outlier) {
			u.p.metrics.Ejections.WithLabelValues(e.Addr).Inc()
			u.p.log.Warn("upstream endpoint ejected", "model", r.Name, "variant", v.Name, "endpoint", e.Addr, "ejections", e.Ejections(), "error", errString(aerr))
		}
		if kind == kindOK {
			done(nil)
			return aerr // nil, or an upstream error passed through (e.g. gRPC InvalidArgument)
		}
		v.metrics.upstreamError(kind)
		lastKind, lastErr = kind, aerr
		if !retryable(kind) || attempts > r.Retries {
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
	if lastErr == nil {
		lastErr = fmt.Errorf("upstream answered %d", res.Status)
	}
	done(lastErr)
	x.ext.failKind = lastKind
	switch lastKind {
	case kindTimeout:
		return oip.Errorf(oip.DeadlineExceeded, "model %q version %q: no answer within the %v latency budget (%d attempts)", r.Name, v.Name, r.Timeout, attempts)
	case kind5xx, kindUnavailable:
		if res.Status != 0 {
			return nil // the backend's own 5xx answer, passed through
		}
		return oip.Errorf(oip.Unavailable, "model %q version %q: upstream unavailable after %d attempts: %v", r.Name, v.Name, attempts, lastErr)
	}
	return oip.Errorf(oip.Unavailable, "model %q version %q: no healthy upstream after %d attempts: %v", r.Name, v.Name, attempts, lastErr)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func (u *upstreamInvoker) attempt(ctx context.Context, x *Exchange, v *Variant, e *upstream.Endpoint, n int, res *Result) (string, error) {
	traceParent := x.TraceParent
	var span trace.Span
	if u.p.tracing {
		ctx, span = u.p.tracer.Start(ctx, "upstream "+v.Route.Name+"/"+v.Name, trace.WithSpanKind(trace.SpanKindClient),
			trace.WithAttributes(attribute.String("switchyard.endpoint", e.Addr), attribute.Int("switchyard.attempt", n)))
		traceParent = telemetry.FormatTraceparent(span.SpanContext())
	}
	e.Begin()
	var kind string
	var err error
	if e.HTTP != nil {
		kind, err = u.attemptHTTP(x, v, e, traceParent, res)
	} else {
		kind, err = u.attemptGRPC(ctx, x, v, e, traceParent, res)
	}
	e.End()
	if span != nil {
		if kind != kindOK {
			span.SetStatus(codes.Error, kind)
			if err != nil {
				span.RecordError(err)
			}
		}
		if res.Status != 0 {
			span.SetAttributes(attribute.Int("http.response.status_code", res.Status))
		}
		span.End()
	}
	return kind, err
}

func (u *upstreamInvoker) attemptHTTP(x *Exchange, v *Variant, e *upstream.Endpoint, traceParent string, res *Result) (string, error) {
	req := upstream.Request{Path: v.inferPath, ContentType: x.contentType, HeaderLen: x.headerLen, Body: x.body,
		TraceParent: traceParent, TraceState: x.TraceState}
	if x.pbReq != nil {
		// A gRPC request to an HTTP version: encode it as REST JSON once.
		if len(x.restBuf) == 0 {
			parsed, err := x.Request()
			if err != nil {
				return kindOK, err
			}
			if x.restBuf, _, err = oip.AppendInferRequest(x.restBuf[:0], parsed, false); err != nil {
				return kindOK, oip.Errorf(oip.InvalidArgument, "model %q: %v", v.Route.Name, err)
			}
		}
		req.Body, req.ContentType, req.HeaderLen = x.restBuf, "application/json", 0
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
			return kindTimeout, err
		case errors.Is(err, upstream.ErrConnect):
			return kindConnect, err
		case errors.Is(err, upstream.ErrProtocol):
			return kindProtocol, err
		}
		return kindReset, err
	}
	res.Status, res.ContentType, res.HeaderLen = resp.Status, resp.ContentType, resp.HeaderLen
	switch {
	case resp.Status == 503:
		return kindUnavailable, fmt.Errorf("%s answered 503", e.Addr)
	case resp.Status >= 500:
		return kind5xx, fmt.Errorf("%s answered %d", e.Addr, resp.Status)
	}
	return kindOK, nil
}

func (u *upstreamInvoker) attemptGRPC(ctx context.Context, x *Exchange, v *Variant, e *upstream.Endpoint, traceParent string, res *Result) (string, error) {
	req := x.pbReq
	if req == nil {
		parsed, err := x.Request()
		if err != nil {
			return kindOK, err
		}
		req = oip.InferRequestToProto(parsed)
		x.pbReq = req
	}
	req.ModelName, req.ModelVersion = v.BackendModel, v.BackendVersion
	cctx, cancel := context.WithDeadline(ctx, x.Deadline)
	defer cancel()
	if traceParent != "" {
		kv := []string{"traceparent", traceParent}
		if x.TraceState != "" {
			kv = append(kv, "tracestate", x.TraceState)
		}
		cctx = metadata.AppendToOutgoingContext(cctx, kv...)
	}
	resp, err := e.GRPC.ModelInfer(cctx, req)
	if err == nil {
		res.PB = resp
		return kindOK, nil
	}
	st, _ := status.FromError(err)
	switch st.Code() {
	case grpccodes.Unavailable:
		return kindUnavailable, err
	case grpccodes.DeadlineExceeded:
		return kindTimeout, err
	case grpccodes.Canceled:
		return kindTimeout, err
	case grpccodes.Internal, grpccodes.Unknown, grpccodes.DataLoss, grpccodes.Unimplemented:
		return kind5xx, oip.ErrorFromGRPC(err)
	}
	// The backend's verdict on the request (InvalidArgument, NotFound, ...):
	// passed through unchanged.
	return kindOK, oip.ErrorFromGRPC(err)
}
