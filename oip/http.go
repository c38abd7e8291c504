package oip

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"

	"github.com/switchyard-dev/switchyard/internal/h1"
	"github.com/switchyard-dev/switchyard/oip/compress"
)

// DefaultMaxBodyBytes bounds a REST request body (and is the suggested
// gRPC grpc.MaxRecvMsgSize, whose own default is only 4 MiB).
const DefaultMaxBodyBytes = 64 << 20

// HTTPOptions configures NewHTTPHandler.
type HTTPOptions struct {
	// MaxBodyBytes refuses larger request bodies with 413; 0 means
	// DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// Logger receives internal (5xx) errors; nil discards them.
	Logger *slog.Logger
}

// RouteKind names an OIP v2 REST endpoint.
type RouteKind int

// The REST endpoints.
const (
	RouteUnknown          RouteKind = iota
	RouteHealthLive                 // GET  /v2/health/live
	RouteHealthReady                // GET  /v2/health/ready
	RouteServerMetadata             // GET  /v2
	RouteModelMetadata              // GET  /v2/models/{name}[/versions/{v}]
	RouteModelReady                 // GET  /v2/models/{name}[/versions/{v}]/ready
	RouteInfer                      // POST /v2/models/{name}[/versions/{v}]/infer
	RouteRepositoryIndex            // POST /v2/repository/index
	RouteRepositoryLoad             // POST /v2/repository/models/{name}/load
	RouteRepositoryUnload           // POST /v2/repository/models/{name}/unload
	RouteModelConfig                // GET  /v2/models/{name}[/versions/{v}]/config (Triton)
	RouteModelStats                 // GET  /v2/models[/{name}[/versions/{v}]]/stats (Triton; no name: every model)
)

// Method is the HTTP method the endpoint accepts.
func (k RouteKind) Method() string {
	switch k {
	case RouteInfer, RouteRepositoryIndex, RouteRepositoryLoad, RouteRepositoryUnload:
		return http.MethodPost
	case RouteUnknown:
		return ""
	}
	return http.MethodGet
}

// HTTPRoute is a parsed OIP v2 REST path.
type HTTPRoute struct {
	Kind    RouteKind
	Model   string // unescaped; empty for server-wide endpoints
	Version string // unescaped; empty when the path names none
}

// ParseHTTPPath parses an escaped URL path (url.URL.EscapedPath) into an OIP
// v2 route. Unknown paths give RouteUnknown. It allocates only when a path
// segment is percent-encoded.
func ParseHTTPPath(path string) HTTPRoute {
	rest, ok := strings.CutPrefix(path, "/v2")
	if !ok {
		return HTTPRoute{}
	}
	switch rest {
	case "":
		return HTTPRoute{Kind: RouteServerMetadata}
	case "/health/live":
		return HTTPRoute{Kind: RouteHealthLive}
	case "/health/ready":
		return HTTPRoute{Kind: RouteHealthReady}
	case "/repository/index":
		return HTTPRoute{Kind: RouteRepositoryIndex}
	case "/models/stats": // Triton: every model's statistics (a model named "stats" loses its metadata path, as in Triton)
		return HTTPRoute{Kind: RouteModelStats}
	}
	if r, ok := strings.CutPrefix(rest, "/repository/models/"); ok {
		name, action, ok := strings.Cut(r, "/")
		if !ok || name == "" {
			return HTTPRoute{}
		}
		var kind RouteKind
		switch action {
		case "load":
			kind = RouteRepositoryLoad
		case "unload":
			kind = RouteRepositoryUnload
		default:
			return HTTPRoute{}
		}
		name, err := url.PathUnescape(name)
		if err != nil {
			return HTTPRoute{}
		}
		return HTTPRoute{Kind: kind, Model: name}
	}
	r, ok := strings.CutPrefix(rest, "/models/")
	if !ok {
		return HTTPRoute{}
	}
	name, r, _ := strings.Cut(r, "/")
	if name == "" {
		return HTTPRoute{}
	}
	var version string
	if v, ok := strings.CutPrefix(r, "versions/"); ok {
		version, r, _ = strings.Cut(v, "/")
		if version == "" {
			return HTTPRoute{}
		}
	} else if r == "versions" {
		return HTTPRoute{}
	}
	var kind RouteKind
	switch r {
	case "":
		if strings.HasSuffix(path, "/") {
			return HTTPRoute{}
		}
		kind = RouteModelMetadata
	case "ready":
		kind = RouteModelReady
	case "infer":
		kind = RouteInfer
	case "config":
		kind = RouteModelConfig
	case "stats":
		kind = RouteModelStats
	default:
		return HTTPRoute{}
	}
	var err error
	if name, err = url.PathUnescape(name); err != nil {
		return HTTPRoute{}
	}
	if version, err = url.PathUnescape(version); err != nil {
		return HTTPRoute{}
	}
	return HTTPRoute{Kind: kind, Model: name, Version: version}
}

// NewHTTPHandler serves the OIP v2 REST protocol from s: health, server and
// model metadata, model readiness, inference (JSON, and the binary tensor
// data extension) and the model repository extension. Errors are JSON
// {"error": "..."} with the status of their *Error code; unknown paths are
// 404, wrong methods 405, bodies over MaxBodyBytes 413.
func NewHTTPHandler(s Server, opts HTTPOptions) http.Handler {
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	h := &httpHandler{s: s, opts: opts}
	h.config, _ = s.(ConfigServer)
	h.stats, _ = s.(StatsServer)
	return h
}

type httpHandler struct {
	s      Server
	config ConfigServer // nil: the server has no model configuration
	stats  StatsServer  // nil: the server keeps no statistics
	opts   HTTPOptions
}

// bufPool holds body and response buffers; buffers that grew past
// maxPooledBuf are dropped rather than kept.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

const maxPooledBuf = 4 << 20

func getBuf() *[]byte { return bufPool.Get().(*[]byte) }

func putBuf(b *[]byte) {
	if cap(*b) > maxPooledBuf {
		return
	}
	*b = (*b)[:0]
	bufPool.Put(b)
}

func (h *httpHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	route := ParseHTTPPath(r.URL.EscapedPath())
	if route.Kind == RouteUnknown {
		h.writeError(w, Errorf(NotFound, "no such endpoint: %s %s", r.Method, r.URL.Path))
		return
	}
	if m := route.Kind.Method(); r.Method != m && !(m == http.MethodGet && r.Method == http.MethodHead) {
		w.Header().Set("Allow", m)
		h.writeErrorStatus(w, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed on "+r.URL.Path+"; use "+m)
		return
	}
	ctx := r.Context()
	switch route.Kind {
	case RouteHealthLive:
		h.writeBool(w, "live", h.s.Live(ctx))
	case RouteHealthReady:
		h.writeBool(w, "ready", h.s.Ready(ctx))
	case RouteServerMetadata:
		h.writeJSON(w, h.s.ServerMetadata(ctx))
	case RouteModelMetadata:
		md, err := h.s.ModelMetadata(ctx, route.Model, route.Version)
		if err != nil {
			h.writeError(w, err)
			return
		}
		h.writeJSON(w, md)
	case RouteModelReady:
		ok, err := h.s.ModelReady(ctx, route.Model, route.Version)
		if err != nil {
			h.writeError(w, err)
			return
		}
		h.writeBool(w, "ready", ok)
	case RouteInfer:
		h.infer(w, r, route)
	case RouteModelConfig:
		if h.config == nil {
			h.writeError(w, Errorf(NotFound, "this server does not serve model configurations (%s)", r.URL.Path))
			return
		}
		c, err := h.config.ModelConfig(ctx, route.Model, route.Version)
		if err != nil {
			h.writeError(w, err)
			return
		}
		h.writeJSON(w, c)
	case RouteModelStats:
		if h.stats == nil {
			h.writeError(w, Errorf(NotFound, "this server keeps no statistics (%s)", r.URL.Path))
			return
		}
		st, err := h.stats.ModelStatistics(ctx, route.Model, route.Version)
		if err != nil {
			h.writeError(w, err)
			return
		}
		if st == nil {
			st = []ModelStatistics{}
		}
		h.writeJSON(w, struct {
			ModelStats []ModelStatistics `json:"model_stats"`
		}{st})
	case RouteRepositoryIndex:
		var body struct {
			Ready bool `json:"ready"`
		}
		if err := h.readSmallJSON(r, &body); err != nil {
			h.writeError(w, err)
			return
		}
		models, err := h.s.RepositoryIndex(ctx, body.Ready)
		if err != nil {
			h.writeError(w, err)
			return
		}
		if models == nil {
			models = []RepositoryModel{}
		}
		h.writeJSON(w, models)
	case RouteRepositoryLoad, RouteRepositoryUnload:
		var body struct {
			Parameters map[string]any `json:"parameters"`
		}
		if err := h.readSmallJSON(r, &body); err != nil {
			h.writeError(w, err)
			return
		}
		var err error
		if route.Kind == RouteRepositoryLoad {
			err = h.s.LoadModel(ctx, route.Model)
		} else {
			err = h.s.UnloadModel(ctx, route.Model)
		}
		if err != nil {
			h.writeError(w, err)
			return
		}
		w.Header().Set("Content-Length", "0")
		w.WriteHeader(http.StatusOK)
	}
}

func (h *httpHandler) infer(w http.ResponseWriter, r *http.Request, route HTTPRoute) {
	buf := getBuf()
	body, err := readBody(r, h.opts.MaxBodyBytes, buf)
	*buf = body
	if err != nil {
		putBuf(buf)
		h.writeError(w, err)
		return
	}
	dbuf := getBuf()
	defer putBuf(dbuf)
	if body, err = DecodeBody(r.Header.Get("Content-Encoding"), body, h.opts.MaxBodyBytes, dbuf); err != nil {
		putBuf(buf)
		h.writeError(w, err)
		return
	}
	out := getBuf()
	defer putBuf(out)
	b, hl, err := h.inferBody(r.Context(), route, []byte(r.Header.Get(HeaderContentLength)), body, (*out)[:0])
	putBuf(buf)
	*out = b
	if err != nil {
		h.writeError(w, err)
		return
	}
	hdr := w.Header()
	binary := hl < len(b)
	if len(b) >= compress.MinGzipBytes && compress.AcceptsGzip(r.Header.Get("Accept-Encoding")) {
		gz := getBuf()
		defer putBuf(gz)
		*gz = compress.AppendGzip((*gz)[:0], b)
		b = *gz
		hdr.Set("Content-Encoding", "gzip")
		hdr.Set("Vary", "Accept-Encoding")
	}
	if binary {
		hdr.Set("Content-Type", "application/octet-stream")
		hdr.Set(HeaderContentLength, strconv.Itoa(hl))
	} else {
		hdr.Set("Content-Type", "application/json")
	}
	hdr.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

// inferBody is the infer endpoint on bytes, for both servers (net/http and
// the lean one, httpfast.go): it decodes body (headerLen: the
// Inference-Header-Content-Length value, empty when absent), runs the
// inference and appends the encoded answer to out; hl is the length of
// its JSON part (== len(answer) when all JSON). The decoded request does
// not alias body.
func (h *httpHandler) inferBody(ctx context.Context, route HTTPRoute, headerLen, body, out []byte) (answer []byte, hl int, err error) {
	n := 0
	if len(headerLen) > 0 {
		v, ok := h1.ParseDigits(headerLen)
		if !ok {
			return out, 0, Errorf(InvalidArgument, "%s: %q is not a non-negative integer", HeaderContentLength, headerLen)
		}
		n = int(v)
	}
	req, err := DecodeInferRequest(body, n)
	if err != nil {
		return out, 0, err
	}
	req.ModelName, req.ModelVersion = route.Model, route.Version
	resp, err := h.s.Infer(ctx, req)
	if err != nil {
		return out, 0, err
	}
	if resp.ModelName == "" {
		resp.ModelName = req.ModelName
	}
	if resp.ID == "" {
		resp.ID = req.ID
	}
	return AppendInferResponse(out, resp, req)
}

// DecodeBody undoes a request body's Content-Encoding (gzip, deflate:
// zlib-wrapped or raw) into *scratch; max bounds the decompressed size
// (TooLarge naming it; a corrupt body or an unknown coding is
// InvalidArgument). Without a coding body is returned as is. Every REST
// server of the project (backend, proxy) reads bodies through it.
func DecodeBody(contentEncoding string, body []byte, max int64, scratch *[]byte) ([]byte, error) {
	if contentEncoding == "" {
		return body, nil
	}
	out, err := compress.Decode((*scratch)[:0], contentEncoding, body, max)
	if out != nil {
		*scratch = out
	}
	var tl *compress.TooLargeError
	switch {
	case errors.As(err, &tl):
		return nil, Errorf(TooLarge, "%v", err)
	case err != nil:
		return nil, Errorf(InvalidArgument, "request body: %v", err)
	}
	return out, nil
}

// readBody reads the request body into *buf, refusing bodies over max with
// a TooLarge error.
func readBody(r *http.Request, max int64, buf *[]byte) ([]byte, error) {
	if r.ContentLength > max {
		return nil, Errorf(TooLarge, "request body of %d bytes exceeds the limit of %d bytes", r.ContentLength, max)
	}
	b := (*buf)[:0]
	if r.ContentLength > 0 && int64(cap(b)) < r.ContentLength+1 {
		b = make([]byte, 0, r.ContentLength+1)
	}
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Body.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if int64(len(b)) > max {
			*buf = b
			return nil, Errorf(TooLarge, "request body exceeds the limit of %d bytes", max)
		}
		if err == io.EOF {
			*buf = b
			return b, nil
		}
		if err != nil {
			*buf = b
			return nil, Errorf(InvalidArgument, "reading request body: %v", err)
		}
	}
}

// readSmallJSON decodes an optional JSON body (empty is fine) into v.
func (h *httpHandler) readSmallJSON(r *http.Request, v any) error {
	buf := getBuf()
	defer putBuf(buf)
	body, err := readBody(r, min(h.opts.MaxBodyBytes, 1<<20), buf)
	if err != nil {
		return err
	}
	dbuf := getBuf()
	defer putBuf(dbuf)
	if body, err = DecodeBody(r.Header.Get("Content-Encoding"), body, min(h.opts.MaxBodyBytes, 1<<20), dbuf); err != nil {
		return err
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		return nil
	}
	if err := json.Unmarshal(body, v); err != nil {
		return Errorf(InvalidArgument, "malformed JSON body: %v", err)
	}
	return nil
}

func (h *httpHandler) writeBool(w http.ResponseWriter, key string, ok bool) {
	status := http.StatusOK
	body := `{"` + key + `":true}`
	if !ok {
		status = http.StatusServiceUnavailable
		body = `{"` + key + `":false}`
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

func (h *httpHandler) writeJSON(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		h.writeError(w, Errorf(Internal, "encoding response: %v", err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

func (h *httpHandler) writeError(w http.ResponseWriter, err error) {
	e := AsError(err)
	if e.Code == Internal {
		h.opts.Logger.Error("oip: internal error", "err", e.Msg)
	}
	if ra := e.RetryAfterSeconds(); ra != "" {
		w.Header().Set("Retry-After", ra)
	}
	h.writeErrorStatus(w, e.HTTPStatus(), e.Msg)
}

func (h *httpHandler) writeErrorStatus(w http.ResponseWriter, status int, msg string) {
	b := appendJSONString([]byte(`{"error":`), msg)
	b = append(b, '}')
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
