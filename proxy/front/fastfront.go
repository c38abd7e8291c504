package front

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/switchyard-dev/switchyard/proxy/pipeline"

	"go.opentelemetry.io/otel/propagation"

	"github.com/switchyard-dev/switchyard/fallback"
	"github.com/switchyard-dev/switchyard/internal/h1"
	"github.com/switchyard-dev/switchyard/oip"
	"github.com/switchyard-dev/switchyard/oip/compress"
	"github.com/switchyard-dev/switchyard/routing"
)

// FastServer is the REST front-end: the lean HTTP/1.1 server (internal/h1:
// one goroutine per connection, pooled buffers, request heads parsed in
// place, raw-syscall I/O) with every POST .../infer (origin- or
// absolute-form target) answered on its buffers without net/http (no
// per-request goroutine, background read or header maps): the REST adapter
// of the request pipeline (proxy/pipeline). Every other request (health,
// metadata, ready, errors) goes to the net/http handler (httpFront).
// Measured: net/http's server cost most of the gap to nginx (see
// docs/benchmarks-proxy.md).
type FastServer struct {
	h1.Server
	p         *pipeline.Pipeline
	exchanges sync.Pool // *exchangeState
}

// exchangeState is one request's pooled exchange, result and encoding
// buffer.
type exchangeState struct {
	x   pipeline.Exchange
	res pipeline.Result
	out []byte // encoded response when the transport had to encode one
	// spare holds the other side of a Content-Encoding: the compressed
	// request once inflated, then the gzip answer.
	spare []byte
	// gzip: the client accepts a gzip answer (Accept-Encoding).
	gzip bool
}

func (s *FastServer) get() *exchangeState {
	if st, ok := s.exchanges.Get().(*exchangeState); ok {
		return st
	}
	return &exchangeState{}
}

func (s *FastServer) put(st *exchangeState) {
	if cap(st.x.Body) > 1<<20 || cap(st.res.Body) > 1<<20 || cap(st.spare) > 1<<20 {
		return // don't keep huge buffers
	}
	st.x.Reset()
	st.res.Reset()
	st.out, st.spare, st.gzip = st.out[:0], st.spare[:0], false
	s.exchanges.Put(st)
}

// NewFastServer serves p's REST front-end; zero timeouts are h1's
// defaults.
func NewFastServer(p *pipeline.Pipeline, head, body, idle time.Duration) *FastServer {
	s := &FastServer{p: p}
	s.Server.Fast = s.fast
	s.Server.Handler = &httpFront{p: p}
	s.Server.MaxBodyBytes = p.MaxBodyBytes()
	s.Server.HeadTimeout, s.Server.BodyTimeout, s.Server.IdleTimeout = head, body, idle
	return s
}

// fast takes POST .../infer; everything else goes to the handler.
func (s *FastServer) fast(c *h1.Conn, r *h1.Request) (served, keep bool, err error) {
	if !bytes.Equal(r.Method, []byte("POST")) {
		return false, false, nil
	}
	path := originPath(r.Path())
	if !bytes.HasSuffix(path, []byte("/infer")) {
		return false, false, nil
	}
	if model, ok := plainInferPath(path); ok {
		keep, err = s.infer(c, r, model, "")
		return true, keep, err
	}
	rt := oip.ParseHTTPPath(string(path))
	if rt.Kind != oip.RouteInfer {
		return false, false, nil
	}
	keep, err = s.infer(c, r, []byte(rt.Model), rt.Version)
	return true, keep, err
}

// originPath is the path of a request target: an absolute-form target
// (http://host/v2/..., as sent to a proxy) loses its scheme and authority.
func originPath(target []byte) []byte {
	if len(target) > 0 && target[0] == '/' {
		return target
	}
	i := bytes.Index(target, []byte("://"))
	if i < 0 {
		return target
	}
	rest := target[i+3:]
	if j := bytes.IndexByte(rest, '/'); j >= 0 {
		return rest[j:]
	}
	return []byte("/")
}

// plainInferPath returns the model of /v2/models/{name}/infer when the name
// needs no unescaping (no '%'), the common case, without allocating; other
// paths go through oip.ParseHTTPPath.
func plainInferPath(path []byte) ([]byte, bool) {
	const prefix, suffix = "/v2/models/", "/infer"
	if len(path) <= len(prefix)+len(suffix) || string(path[:len(prefix)]) != prefix || string(path[len(path)-len(suffix):]) != suffix {
		return nil, false
	}
	name := path[len(prefix) : len(path)-len(suffix)]
	if bytes.IndexByte(name, '/') >= 0 || bytes.IndexByte(name, '%') >= 0 {
		return nil, false
	}
	return name, true
}

// infer is the fast path of POST /v2/models/{name}[/versions/{v}]/infer
// (model: the unescaped name; version: "" unless the path names one).
func (s *FastServer) infer(c *h1.Conn, r *h1.Request, model []byte, version string) (bool, error) {
	p := s.p
	start := time.Now()
	snap := p.Snapshot()
	var route *pipeline.Route
	var choice routing.Choice
	var oerr *oip.Error
	if snap != nil && version == "" {
		if route = snap.RouteBytes(model); route != nil {
			key := ""
			if route.StickyMetadata() != "" {
				key = r.HeaderString(route.StickyMetadata())
			}
			choice = route.Picker.Pick(r.HeaderString(route.OverrideMetadata()), key, rand.Uint64())
		}
	}
	if route == nil {
		route, choice, oerr = snap.Resolve(string(model), version, "", "")
	}
	// The buffered-bytes budget (proxy/pipeline/overload.go): a body that does not fit
	// is not read. (One over the body limit gets ReadBody's 413.)
	held := r.ContentLength
	if held < 0 || held > p.MaxBodyBytes() {
		held = 0
	}
	if !p.Budget().Take(held) {
		return s.refuse(c, r, model, start, p.Budget().OverBudget(held))
	}
	defer func() { p.Budget().Give(held) }()
	st := s.get()
	defer s.put(st)
	x := &st.x
	var err error
	x.Body, err = c.ReadBody(r, x.Body)
	if err != nil {
		c.AnswerError(err)
		return false, err
	}
	if r.ContentLength < 0 { // chunked: counted once read
		n := int64(len(x.Body))
		if !p.Budget().Take(n) {
			return s.refuse(c, r, model, start, p.Budget().OverBudget(n))
		}
		held = n
	}
	// Not c.Context(): a cancellable context costs the upstream call a
	// context.AfterFunc (4 allocations) per request. A drain that runs
	// out of time closes the client connections; the upstream calls in
	// flight end at their route's timeout.
	ctx := context.Background()
	if oerr != nil {
		writeErrorTo(c.W, oerr.HTTPStatus(), oerr.Msg, nil, r.Close || c.Closing(), "")
		p.LogRequest(ctx, string(model), "", oerr.HTTPStatus(), start, oerr, r.HeaderString("traceparent"))
		return !r.Close && !c.Closing(), c.Flush()
	}
	x.Route, x.Choice, x.Start = route, choice, start
	x.Deadline = start.Add(route.Timeout)
	if route.StickyMetadata() != "" {
		x.StickyKey = r.HeaderString(route.StickyMetadata())
	}
	x.ContentType = internCT(r.Header("content-type"))
	x.NoCache = pipeline.HasNoCache(r.Header("cache-control"))
	v := route.Variants[choice.Index]
	if ce := r.Header("content-encoding"); ce != nil {
		// The pipeline, its limit and Inference-Header-Content-Length see
		// the inflated body.
		body, err := oip.DecodeBody(string(ce), x.Body, p.MaxBodyBytes(), &st.spare)
		if err == nil {
			if n := int64(len(body)); p.Budget().Take(n) {
				held += n
			} else {
				return s.refuse(c, r, model, start, p.Budget().OverBudget(n))
			}
		}
		if err != nil {
			e := oip.AsError(err)
			writeErrorTo(c.W, e.HTTPStatus(), e.Msg, v, r.Close || c.Closing(), "")
			v.CountRequest(pipeline.HTTPCode(e.HTTPStatus()), time.Since(start).Seconds())
			return !r.Close && !c.Closing(), c.Flush()
		}
		st.spare, x.Body = x.Body, body
	}
	if hl := r.Header("inference-header-content-length"); hl != nil {
		n, err := strconv.Atoi(string(hl))
		if err != nil || n < 0 || n > len(x.Body) {
			e := oip.Errorf(oip.InvalidArgument, "%s %q is not an integer in 0..%d (the body size)", hdrInferHeader, hl, len(x.Body))
			writeErrorTo(c.W, e.HTTPStatus(), e.Msg, v, r.Close || c.Closing(), "")
			v.CountRequest(pipeline.HTTPCode(e.HTTPStatus()), time.Since(start).Seconds())
			return !r.Close && !c.Closing(), c.Flush()
		}
		x.HeaderLen = n
	}
	st.gzip = compress.AcceptsGzip(string(r.Header("accept-encoding")))
	x.TraceParent = r.HeaderString("traceparent")
	x.TraceState = r.HeaderString("tracestate")
	ctx, span := p.Begin(ctx, x, headCarrier{r})
	res := &st.res
	err = p.Serve(ctx, x, res)
	closing := r.Close || c.Closing() // draining: the last answer on this connection
	status := s.respond(c.W, st, err, closing)
	end := time.Now()
	c.RequestDone(end) // the base of the idle wait's and the write's deadlines
	p.Finish(ctx, span, x, res, status, pipeline.HTTPCode(status), err, end.Sub(start))
	ferr := c.Flush()
	p.HandOff(x) // after the answer is written: the shadow enqueue
	return !closing, ferr
}

// refuse answers a request shed before the pipeline (the buffered-bytes
// budget): 503 with Retry-After, and the connection ends (lingering) since
// the body may be unread.
func (s *FastServer) refuse(c *h1.Conn, r *h1.Request, model []byte, start time.Time, e *oip.Error) (bool, error) {
	s.p.Shed("buffer")
	if resp, step, ok := s.p.BodylessFallback(string(model)); ok {
		// The route's static or empty answer (the body, unread, is not
		// needed for it); the connection still ends, lingering.
		if body, _, err := oip.AppendInferResponse(nil, resp, nil); err == nil {
			extra := "X-Switchyard-Fallback: " + step + "\r\nX-Switchyard-Fallback-Reason: " + fallback.Overload.String() + "\r\n"
			writeHead(c.W, http.StatusOK, "application/json", nil, nil, 0, len(body), true, extra)
			c.W.Write(body)
			c.Refuse()
			s.p.LogRequest(context.Background(), string(model), "", http.StatusOK, start, nil, r.HeaderString("traceparent"))
			return false, c.Flush()
		}
	}
	writeErrorTo(c.W, e.HTTPStatus(), e.Msg, nil, true, pipeline.RetryAfterHeader)
	c.Refuse()
	s.p.LogRequest(context.Background(), string(model), "", e.HTTPStatus(), start, e, r.HeaderString("traceparent"))
	return false, c.Flush()
}

func internCT(v []byte) string {
	switch string(v) {
	case "":
		return ""
	case "application/json":
		return "application/json"
	case "application/octet-stream":
		return "application/octet-stream"
	}
	return string(v)
}

// writeHead writes an answer's head; extra holds further header lines
// (each ending in CRLF), e.g. Content-Encoding or Retry-After.
func writeHead(bw *bufio.Writer, status int, ct string, v *pipeline.Variant, res *pipeline.Result, headerLen, n int, close bool, extra string) {
	h1.StartHead(bw, status, ct)
	bw.WriteString(extra)
	if v != nil {
		bw.WriteString("X-Switchyard-Variant: ")
		bw.WriteString(v.Name)
		bw.WriteString("\r\n")
	}
	if res != nil {
		pipeline.WriteMarks(bw, res) // fallback / cache marks (proxy/pipeline/marks.go)
	}
	if headerLen > 0 {
		bw.WriteString("Inference-Header-Content-Length: ")
		h1.WriteInt(bw, headerLen)
		bw.WriteString("\r\n")
	}
	h1.EndHead(bw, n, close)
}

func writeErrorTo(bw *bufio.Writer, status int, msg string, v *pipeline.Variant, close bool, extra string) {
	body := h1.ErrorJSON(msg)
	writeHead(bw, status, "application/json", v, nil, 0, len(body), close, extra)
	bw.Write(body)
}

// respond writes the result (or error) and returns the status sent.
func (s *FastServer) respond(bw *bufio.Writer, st *exchangeState, err error, close bool) int {
	res := &st.res
	if err != nil {
		e := oip.AsError(err)
		body := h1.ErrorJSON(e.Msg)
		extra := ""
		if res.Trigger == fallback.Overload {
			extra = pipeline.RetryAfterHeader // shed: come back in a second
		}
		writeHead(bw, e.HTTPStatus(), "application/json", res.Variant, res, 0, len(body), close, extra)
		bw.Write(body)
		return e.HTTPStatus()
	}
	body, status, ct, headerLen := res.Body, res.Status, res.ContentType, res.HeaderLen
	if res.PB != nil || (res.Decoded() && len(res.Body) == 0) {
		resp, perr := res.Response()
		var req *oip.InferRequest
		if perr == nil {
			req, perr = st.x.Request()
		}
		if perr == nil {
			st.out, headerLen, perr = oip.AppendInferResponse(st.out[:0], resp, req)
		}
		if perr != nil {
			msg := h1.ErrorJSON(fmt.Sprintf("model %q: cannot encode the upstream answer: %v", st.x.Route.Name, perr))
			writeHead(bw, http.StatusBadGateway, "application/json", res.Variant, res, 0, len(msg), close, "")
			bw.Write(msg)
			return http.StatusBadGateway
		}
		body, status, ct = st.out, http.StatusOK, "application/json"
		if headerLen > 0 && headerLen < len(body) {
			ct = "application/octet-stream" // binary tensor data follows the JSON header
		} else {
			headerLen = 0 // all JSON: no Inference-Header-Content-Length
		}
	}
	extra := ""
	if st.gzip && status == http.StatusOK && len(body) >= compress.MinGzipBytes {
		// The request is done with: its spare buffer takes the answer.
		st.spare = compress.AppendGzip(st.spare[:0], body)
		body, extra = st.spare, "Content-Encoding: gzip\r\nVary: Accept-Encoding\r\n"
	}
	writeHead(bw, status, ct, res.Variant, res, headerLen, len(body), close, extra)
	bw.Write(body)
	return status
}

// headCarrier reads W3C trace context from a parsed request head.
type headCarrier struct{ r *h1.Request }

func (h headCarrier) Get(k string) string { return h.r.HeaderString(strings.ToLower(k)) }
func (h headCarrier) Set(string, string)  {}
func (h headCarrier) Keys() []string {
	out := make([]string, 0, len(h.r.Headers))
	for _, x := range h.r.Headers {
		out = append(out, strings.ToLower(string(x.Name)))
	}
	return out
}

var _ propagation.TextMapCarrier = headCarrier{}
