package pipeline

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/switchyard-dev/switchyard/fallback"
	"github.com/switchyard-dev/switchyard/oip"
	"github.com/switchyard-dev/switchyard/telemetry"
)

// The request pipeline. Every front-end (package proxy/front: the lean
// REST server in fastfront.go, gRPC in grpc.go) is a thin adapter around
// it:
//
//	wire → Exchange          the front-end: route, pick, body, headers
//	Begin                    the span and its trace context
//	Serve                    the steps below, one straight line
//	Result → wire            the front-end writes the answer
//	Finish                   span, metrics, canary stats, log line
//	HandOff                  work after the answer (the shadow mirror)
//
// Serve's steps, for a route with policies (spec.cache, spec.fallback,
// spec.shadow; a route without them only calls its version):
//
//  1. cache: a prediction cache hit answers; identical requests in
//     flight share the first one's call (coalescing)
//  2. primary: the version's concurrency limit (spec.concurrency: load
//     shedding), its breaker, then the
//     attempts (retries within the budget), each judged by fallback.Judge
//     into res.Trigger, the one failure vocabulary
//  3. capture: a sampled request and the primary's own outcome, for the
//     shadow mirror (given away in HandOff, after the answer)
//  4. chain: when the trigger falls (Trigger.Falls), the fallback chain
//     (last good answer, backup version, static, empty)
//  5. store: the version's own good answer in the prediction cache and
//     the last good store
//  6. share: coalesced followers get this answer
//
// Work that is still to come hooks in at one of these places: load
// shedding before step 2, the prediction log and drift sampling in
// capture and HandOff (one hand-off, off the request path).

// Begin starts the exchange's server span (when tracing) from the
// incoming trace context in carrier; x.TraceParent becomes the span's.
func (p *Pipeline) Begin(ctx context.Context, x *Exchange, carrier propagation.TextMapCarrier) (context.Context, trace.Span) {
	if !p.tracing {
		return ctx, nil
	}
	ctx = p.prop.Extract(ctx, carrier)
	ctx, span := p.tracer.Start(ctx, "infer "+x.Route.Name, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("switchyard.model", x.Route.Name), attribute.String("switchyard.pick", x.Choice.Reason.String())))
	x.TraceParent = telemetry.FormatTraceparent(span.SpanContext())
	return ctx, span
}

// Serve answers the exchange: res holds the answer, or the error says
// why there is none (an *oip.Error). res.Trigger is the judged outcome of
// the primary (or why the chain ran).
func (p *Pipeline) Serve(ctx context.Context, x *Exchange, res *Result) error {
	r := x.Route
	v := r.Variants[x.Choice.Index]
	r.Budget.Deposit()
	pol := r.policies
	if pol == nil {
		return p.primary(ctx, x, v, res) // a plain route: the version, nothing else
	}
	// 1. cache (the key also serves the chain's last good answer, which
	// needs the cache on)
	var (
		k      reqKey
		flight fallback.Flight[*sharedAnswer]
		leader bool
		shared *sharedAnswer
	)
	if pol.cache != nil {
		k = pol.keyOf(x, v)
	}
	if k.ok && !x.NoCache {
		if pol.hit(x, v, res, k) {
			return nil
		}
		if pol.coal != nil {
			if flight, leader = pol.coal.Join(k.key); !leader {
				return pol.follow(ctx, flight, x, v, res, k)
			}
			// The leader's call answers its followers too: a leader whose
			// client goes away does not cut it short (it stays within the
			// deadline).
			ctx = context.WithoutCancel(ctx)
			defer func() {
				if shared == nil {
					shared = &sharedAnswer{err: oip.Errorf(oip.Internal, "model %q: the shared call failed", r.Name)}
				}
				pol.coal.Finish(k.key, flight, shared, nil)
			}()
		}
	}

	// 2. primary
	err := p.primary(ctx, x, v, res)

	// 3. capture
	if pol.mirror != nil {
		pol.capture(x, v, res, err)
	}

	// 4. chain
	if pol.fb != nil {
		switch {
		case res.Trigger == fallback.None && err == nil && res.OK():
			pol.remember(x, v, res, k)
		case res.Trigger.Falls(fallback.Primary):
			err = p.fallBack(ctx, pol, x, v, res, k, err)
		}
	}

	// 5. store, 6. share
	if k.ok {
		e, eok := pol.store(x, v, res, err, k)
		if leader {
			shared = shareAnswer(res, err, e, eok)
		}
	}
	return err
}

// HandOff runs after the client's answer was written (or handed to
// grpc-go): the only work done there is a non-blocking enqueue of what
// Serve captured (the shadow job of a sampled request).
func (p *Pipeline) HandOff(x *Exchange) {
	if c := x.captured; c != nil {
		x.captured = nil
		c.enqueue()
	}
}

// Finish closes one infer exchange after its answer is written: the span,
// per-variant metrics (on the variant that answered, under code: the HTTP
// status or the gRPC code's name), the canary's stats (on the variant
// chosen, by the HTTP status or its equivalent) and the sampled log line.
// latency is the exchange's, start to answer.
func (p *Pipeline) Finish(ctx context.Context, span trace.Span, x *Exchange, res *Result, status int, code string, err error, latency time.Duration) {
	v := x.Route.Variants[x.Choice.Index]
	if span != nil {
		span.SetAttributes(attribute.String("switchyard.variant", variantName(res, v)), attribute.Int("http.response.status_code", status))
		if x.grpcClient() {
			span.SetAttributes(attribute.String("rpc.grpc.status_code", code))
		}
		if status >= 500 {
			span.SetStatus(codes.Error, http.StatusText(status))
		}
		span.End()
	}
	v.metrics.picks[x.Choice.Reason].Inc()
	mv := v.metrics
	if res.Variant != nil {
		mv = res.Variant.metrics
	}
	mv.request(code, latency.Seconds())
	p.recordStats(v, x, res, status, latency)
	if status >= 400 || p.sampler.Keep() {
		p.logExchange(ctx, x, res, v, status, err)
	}
}

// AnsweredBy is the variant that produced the answer: the one called (the
// backup, after a fallback to it), the one routed to for errors and cache
// answers, and none for a static or empty answer (no version answered).
func AnsweredBy(res *Result, v *Variant) *Variant {
	if res.Variant != nil || res.Fallback != "" {
		return res.Variant
	}
	return v
}

func variantName(res *Result, v *Variant) string {
	if res.Variant != nil {
		return res.Variant.Name
	}
	return v.Name
}

// logExchange writes one structured line for a finished exchange.
func (p *Pipeline) logExchange(ctx context.Context, x *Exchange, res *Result, v *Variant, status int, err error) {
	level := slog.LevelInfo
	switch {
	case res.Trigger == fallback.Cancelled:
		// The client cancelled or went away: nobody's failure (499).
		status = oip.StatusClientClosedRequest
	case status >= 500:
		level = slog.LevelError
	case status >= 400:
		level = slog.LevelWarn
	}
	attrs := []slog.Attr{
		slog.String("trace_id", traceID(ctx, x.TraceParent)),
		slog.String("model", x.Route.Name),
		slog.String("variant", variantName(res, v)),
		slog.String("pick", x.Choice.Reason.String()),
		slog.Int("status", status),
		slog.Float64("latency_ms", float64(time.Since(x.Start).Microseconds())/1000),
		slog.Int("retries", x.Retries),
	}
	if res.Fallback != "" {
		attrs = append(attrs, slog.String("fallback", res.Fallback), slog.String("fallback_reason", res.FallbackReason))
	} else if res.Trigger != fallback.None {
		attrs = append(attrs, slog.String("trigger", res.Trigger.String()))
	}
	if err != nil {
		attrs = append(attrs, slog.String("error", err.Error()))
	}
	p.log.LogAttrs(ctx, level, "request", attrs...)
}

// LogRequest logs a request refused before it became an exchange (no
// configuration, unknown model or version).
func (p *Pipeline) LogRequest(ctx context.Context, model, variant string, status int, start time.Time, err error, traceParent string) {
	level := slog.LevelWarn
	if status >= 500 {
		level = slog.LevelError
	}
	p.log.LogAttrs(ctx, level, "request",
		slog.String("trace_id", traceID(ctx, traceParent)),
		slog.String("model", model), slog.String("variant", variant), slog.Int("status", status),
		slog.Float64("latency_ms", float64(time.Since(start).Microseconds())/1000),
		slog.String("error", errString(err)))
}

func traceID(ctx context.Context, traceParent string) string {
	if sc := trace.SpanContextFromContext(ctx); sc.HasTraceID() {
		return sc.TraceID().String()
	}
	return telemetry.TraceIDFromTraceparent(traceParent)
}
