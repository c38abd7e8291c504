package proxy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/switchyard-dev/switchyard/fallback"
	"github.com/switchyard-dev/switchyard/oip"
	"github.com/switchyard-dev/switchyard/proxy/upstream"
	"github.com/switchyard-dev/switchyard/routing"
	"github.com/switchyard-dev/switchyard/telemetry"
)

// ServerName and ServerVersion answer GET /v2.
const (
	ServerName    = "switchyard-proxy"
	ServerVersion = "0.1.0"
)

// httpFront serves OIP v2 REST for the virtual models.
type httpFront struct {
	p         *Proxy
	exchanges sync.Pool
}

type exchangeState struct {
	x   Exchange
	res Result
	out []byte // encoded response when the transport had to encode one
}

const (
	hdrVariant     = "X-Switchyard-Variant"
	hdrFallback    = "X-Switchyard-Fallback"
	hdrInferHeader = "Inference-Header-Content-Length"
)

func (h *httpFront) get() *exchangeState {
	if st, ok := h.exchanges.Get().(*exchangeState); ok {
		return st
	}
	return &exchangeState{}
}

func (h *httpFront) put(st *exchangeState) {
	if cap(st.x.body) > 1<<20 || cap(st.res.Body) > 1<<20 {
		return // don't keep huge buffers
	}
	st.x.reset()
	st.res.reset()
	st.out = st.out[:0]
	h.exchanges.Put(st)
}

func (h *httpFront) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := r.RequestURI
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	if !strings.HasPrefix(path, "/") {
		path = r.URL.EscapedPath()
	}
	rt := oip.ParseHTTPPath(path)
	if rt.Kind != oip.RouteUnknown && r.Method != rt.Kind.Method() && !(r.Method == http.MethodHead && rt.Kind.Method() == http.MethodGet) {
		w.Header().Set("Allow", rt.Kind.Method())
		writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("%s %s: method not allowed (use %s)", r.Method, path, rt.Kind.Method()))
		return
	}
	switch rt.Kind {
	case oip.RouteInfer:
		h.infer(w, r, rt)
	case oip.RouteHealthLive:
		writeRaw(w, http.StatusOK, `{"live":true}`)
	case oip.RouteHealthReady:
		if h.p.snap.Load() == nil {
			writeRaw(w, http.StatusServiceUnavailable, `{"ready":false}`)
			return
		}
		writeRaw(w, http.StatusOK, `{"ready":true}`)
	case oip.RouteServerMetadata:
		b, _ := json.Marshal(oip.ServerMetadata{Name: ServerName, Version: ServerVersion, Extensions: []string{}})
		writeRaw(w, http.StatusOK, string(b))
	case oip.RouteModelMetadata, oip.RouteModelReady:
		h.modelGet(w, r, rt)
	case oip.RouteRepositoryIndex, oip.RouteRepositoryLoad, oip.RouteRepositoryUnload:
		writeError(w, http.StatusNotFound, "the proxy does not serve the model repository extension; manage models through the control plane")
	default:
		writeError(w, http.StatusNotFound, fmt.Sprintf("unknown path %q: the proxy serves OIP v2 (/v2, /v2/health/{live,ready}, /v2/models/{name}[/ready|/infer])", path))
	}
}

func writeRaw(w http.ResponseWriter, status int, body string) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	io.WriteString(w, body)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	b, _ := json.Marshal(struct {
		Error string `json:"error"`
	}{msg})
	writeRaw(w, status, string(b))
}

func first(vs []string) string {
	if len(vs) == 0 {
		return ""
	}
	return vs[0]
}

// resolve finds the route and picks the variant of a request. A version in
// the path (/v2/models/{name}/versions/{v}/...) pins that version.
func (p *Proxy) resolve(s *snapshot, model, pathVersion, override, key string) (*Route, routing.Choice, *oip.Error) {
	if s == nil {
		return nil, routing.Choice{}, oip.Errorf(oip.Unavailable, "no configuration yet: the proxy has not reached its control plane and has no persisted configuration")
	}
	r := s.routes[model]
	if r == nil {
		return nil, routing.Choice{}, oip.Errorf(oip.NotFound, "unknown model %q; known models: %s", model, s.names)
	}
	if pathVersion != "" {
		i := r.Picker.Index(pathVersion)
		if i < 0 {
			return nil, routing.Choice{}, oip.Errorf(oip.NotFound, "model %q has no version %q; versions: %s", model, pathVersion, strings.Join(r.Model.VersionNames(), ", "))
		}
		return r, routing.Choice{Index: i, Reason: routing.ReasonOverride}, nil
	}
	return r, r.Picker.Pick(override, key, rand.Uint64()), nil
}

func (h *httpFront) infer(w http.ResponseWriter, r *http.Request, rt oip.HTTPRoute) {
	p := h.p
	start := time.Now()
	s := p.snap.Load()
	var route *Route
	var choice routing.Choice
	var oerr *oip.Error
	if s != nil {
		if route = s.routes[rt.Model]; route != nil && rt.Version == "" {
			key := ""
			if route.stickyHTTP != "" {
				key = first(r.Header[route.stickyHTTP])
			}
			choice = route.Picker.Pick(first(r.Header[route.overrideHTTP]), key, rand.Uint64())
		}
	}
	if route == nil || rt.Version != "" {
		route, choice, oerr = p.resolve(s, rt.Model, rt.Version, "", "")
	}
	if oerr != nil {
		writeError(w, oerr.HTTPStatus(), oerr.Msg)
		p.logRequest(r.Context(), rt.Model, "", oerr.HTTPStatus(), start, oerr, r.Header.Get("Traceparent"))
		return
	}
	st := h.get()
	defer h.put(st)
	x := &st.x
	x.Route, x.Choice, x.Start = route, choice, start
	x.Deadline = start.Add(route.Timeout)
	if route.stickyHTTP != "" {
		x.StickyKey = first(r.Header[route.stickyHTTP])
	}
	x.contentType = first(r.Header["Content-Type"])
	x.ext.noCache = hasNoCache(first(r.Header["Cache-Control"]))
	if hl := first(r.Header[hdrInferHeader]); hl != "" {
		n, err := strconv.Atoi(hl)
		if err != nil || n < 0 {
			h.fail(w, r, x, nil, oip.Errorf(oip.InvalidArgument, "%s %q is not a non-negative integer", hdrInferHeader, hl))
			return
		}
		x.headerLen = n
	}
	if err := h.readBody(r, x); err != nil {
		h.fail(w, r, x, nil, err)
		return
	}
	if x.headerLen > len(x.body) {
		h.fail(w, r, x, nil, oip.Errorf(oip.InvalidArgument, "%s %d exceeds the body's %d bytes", hdrInferHeader, x.headerLen, len(x.body)))
		return
	}
	x.TraceParent = first(r.Header["Traceparent"])
	x.TraceState = first(r.Header["Tracestate"])
	ctx := r.Context()
	var span trace.Span
	if p.tracing {
		ctx = p.prop.Extract(ctx, propagation.HeaderCarrier(r.Header))
		ctx, span = p.tracer.Start(ctx, "infer "+route.Name, trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(attribute.String("switchyard.model", route.Name), attribute.String("switchyard.pick", choice.Reason.String())))
		x.TraceParent = telemetry.FormatTraceparent(span.SpanContext())
	}
	v := route.Variants[choice.Index]
	route.Budget.Deposit()
	res := &st.res
	err := route.invoker.Invoke(ctx, x, v, res)
	status := h.respond(w, st, err)
	p.finishExchange(ctx, span, x, res, v, status, httpCode(status), err, time.Since(start))
	x.ext.answered(x, res) // after the answer is written: shadow enqueue
}

// answeredBy is the variant that produced the answer: the one called (the
// backup, after a fallback to it), the one routed to for errors and cache
// answers, and none for a static or empty answer (no version answered).
func answeredBy(res *Result, v *Variant) *Variant {
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

func (h *httpFront) readBody(r *http.Request, x *Exchange) error {
	max := h.p.cfg.MaxBodyBytes
	n := r.ContentLength
	if n > max {
		return oip.Errorf(oip.TooLarge, "request body of %d bytes exceeds the limit of %d bytes", n, max)
	}
	if n >= 0 {
		if cap(x.body) < int(n) {
			x.body = make([]byte, n)
		}
		x.body = x.body[:n]
		if _, err := io.ReadFull(r.Body, x.body); err != nil {
			return oip.Errorf(oip.InvalidArgument, "read request body: %v", err)
		}
		return nil
	}
	buf := x.body[:0]
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		m, err := r.Body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+m]
		if int64(len(buf)) > max {
			return oip.Errorf(oip.TooLarge, "request body exceeds the limit of %d bytes", max)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return oip.Errorf(oip.InvalidArgument, "read request body: %v", err)
		}
	}
	x.body = buf
	return nil
}

// fail answers an exchange that never reached an upstream.
func (h *httpFront) fail(w http.ResponseWriter, r *http.Request, x *Exchange, v *Variant, err error) {
	e := oip.AsError(err)
	writeError(w, e.HTTPStatus(), e.Msg)
	if v == nil {
		v = x.Route.Variants[x.Choice.Index]
	}
	v.metrics.request(httpCode(e.HTTPStatus()), time.Since(x.Start).Seconds())
	h.p.logRequest(r.Context(), x.Route.Name, v.Name, e.HTTPStatus(), x.Start, err, first(r.Header["Traceparent"]))
}

// respond writes the result (or error) and returns the status sent.
func (h *httpFront) respond(w http.ResponseWriter, st *exchangeState, err error) int {
	res := &st.res
	hdr := w.Header()
	if res.Variant != nil {
		hdr[hdrVariant] = res.Variant.headerValue
	}
	if res.Fallback != "" {
		hdr[hdrFallback] = []string{res.Fallback}
	}
	setExtHeaders(hdr, res) // fallback reason, cache hit (cache_state.go)
	if err != nil {
		e := oip.AsError(err)
		writeError(w, e.HTTPStatus(), e.Msg)
		return e.HTTPStatus()
	}
	body, status, ct, headerLen := res.Body, res.Status, res.ContentType, res.HeaderLen
	if res.PB != nil || (res.parsed != nil && len(res.Body) == 0) {
		// An answer that is not REST bytes yet (gRPC upstream, cache,
		// static fallback): encode it for this client.
		resp, perr := res.Response()
		var req *oip.InferRequest
		if perr == nil {
			req, perr = st.x.Request()
		}
		if perr == nil {
			st.out, headerLen, perr = oip.AppendInferResponse(st.out[:0], resp, req)
		}
		if perr != nil {
			writeError(w, http.StatusBadGateway, fmt.Sprintf("model %q: cannot encode the upstream answer: %v", st.x.Route.Name, perr))
			return http.StatusBadGateway
		}
		body, status = st.out, http.StatusOK
		ct = "application/json"
		if headerLen > 0 && headerLen < len(body) {
			ct = "application/octet-stream" // binary tensor data follows the JSON header
		} else {
			headerLen = 0 // all JSON: no Inference-Header-Content-Length
		}
	}
	if ct != "" {
		switch ct {
		case "application/json":
			hdr["Content-Type"] = h.p.ctJSON
		default:
			hdr["Content-Type"] = []string{ct}
		}
	}
	if headerLen > 0 {
		hdr[hdrInferHeader] = []string{strconv.Itoa(headerLen)}
	}
	hdr["Content-Length"] = []string{strconv.Itoa(len(body))}
	w.WriteHeader(status)
	w.Write(body)
	return status
}

// modelGet answers model metadata and readiness from the variant a request
// would be routed to.
func (h *httpFront) modelGet(w http.ResponseWriter, r *http.Request, rt oip.HTTPRoute) {
	p := h.p
	s := p.snap.Load()
	var key, override string
	if s != nil {
		if route := s.routes[rt.Model]; route != nil {
			override = first(r.Header[route.overrideHTTP])
			if route.stickyHTTP != "" {
				key = first(r.Header[route.stickyHTTP])
			}
		}
	}
	route, choice, oerr := p.resolve(s, rt.Model, rt.Version, override, key)
	if oerr != nil {
		writeError(w, oerr.HTTPStatus(), oerr.Msg)
		return
	}
	v := route.Variants[choice.Index]
	w.Header()[hdrVariant] = v.headerValue
	ready := rt.Kind == oip.RouteModelReady
	deadline := time.Now().Add(route.Timeout)
	e := upstream.PickP2C(v.Endpoints, rand.Uint64(), time.Now().UnixNano(), nil)
	if e.HTTP != nil {
		path := v.metadataPath
		if ready {
			path = v.readyPath
		}
		resp := upstream.Response{}
		err := e.HTTP.Do(deadline, &upstream.Request{Method: http.MethodGet, Path: path}, &resp)
		if err != nil {
			writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("model %q version %q: %v", route.Name, v.Name, err))
			return
		}
		if resp.ContentType != "" {
			w.Header().Set("Content-Type", resp.ContentType)
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(resp.Body)))
		w.WriteHeader(resp.Status)
		w.Write(resp.Body)
		return
	}
	ctx, cancel := context.WithDeadline(r.Context(), deadline)
	defer cancel()
	if ready {
		ok, err := grpcModelReady(ctx, v, e)
		if err != nil {
			oe := oip.AsError(err)
			writeError(w, oe.HTTPStatus(), oe.Msg)
			return
		}
		if ok {
			writeRaw(w, http.StatusOK, `{"ready":true}`)
		} else {
			writeRaw(w, http.StatusServiceUnavailable, `{"ready":false}`)
		}
		return
	}
	md, err := grpcModelMetadata(ctx, v, e)
	if err != nil {
		oe := oip.AsError(err)
		writeError(w, oe.HTTPStatus(), oe.Msg)
		return
	}
	b, _ := json.Marshal(md)
	writeRaw(w, http.StatusOK, string(b))
}

// logExchange writes one structured line for a finished exchange.
func (p *Proxy) logExchange(ctx context.Context, x *Exchange, res *Result, v *Variant, status int, err error) {
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

func (p *Proxy) logRequest(ctx context.Context, model, variant string, status int, start time.Time, err error, traceParent string) {
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

// finishExchange closes one infer exchange after its answer is written
// (every front-end: the lean REST server, the net/http handler, gRPC): the
// span, per-variant metrics (on the variant that answered, under code:
// the HTTP status or the gRPC code's name), the canary's stats (on the
// variant chosen, by the HTTP status or its equivalent) and the sampled
// log line. latency is the exchange's, start to answer.
func (p *Proxy) finishExchange(ctx context.Context, span trace.Span, x *Exchange, res *Result, v *Variant, status int, code string, err error, latency time.Duration) {
	if span != nil {
		span.SetAttributes(attribute.String("switchyard.variant", variantName(res, v)), attribute.Int("http.response.status_code", status))
		if x.pbReq != nil {
			span.SetAttributes(attribute.String("rpc.grpc.status_code", code))
		}
		if status >= 500 {
			span.SetStatus(codes.Error, http.StatusText(status))
		}
		span.End()
	}
	mv := v.metrics
	if res.Variant != nil {
		mv = res.Variant.metrics
	}
	mv.request(code, latency.Seconds())
	p.recordStats(v, res, status, latency)
	if status >= 400 || p.sampler.Keep() {
		p.logExchange(ctx, x, res, v, status, err)
	}
}
