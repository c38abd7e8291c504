package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/switchyard-dev/switchyard/oip"
	"github.com/switchyard-dev/switchyard/proxy/upstream"
	"github.com/switchyard-dev/switchyard/routing"
	"github.com/switchyard-dev/switchyard/telemetry"
)

// fastServer is the REST front-end's HTTP/1.1 server: one goroutine per
// connection, pooled buffered readers and writers, request heads parsed in
// place. POST .../infer is answered on this path without net/http (no
// per-request goroutine, background read or header maps); every other
// request is handed to the net/http handler (httpFront) through a small
// adapter. Measured: net/http's server costs most of the gap to nginx (see
// docs/benchmarks-proxy.md).
type fastServer struct {
	p     *Proxy
	front *httpFront

	mu     sync.Mutex
	ln     net.Listener
	conns  map[net.Conn]struct{}
	closed bool
	// shut mirrors closed for the per-request check (no lock).
	shut atomic.Bool
	wg   sync.WaitGroup
	bufs sync.Pool

	// Read deadlines (zero: the defaults below): the wait for a next
	// request on a kept-alive connection, reading a request head, reading
	// a request body.
	idleTimeout, headTimeout, bodyTimeout time.Duration
}

const (
	maxHeaderBytes  = 64 << 10
	fastIdleTimeout = 5 * time.Minute
	fastHeadTimeout = 10 * time.Second
	fastBodyTimeout = time.Minute
	// fastWriteTimeout bounds writing one answer (or a batch of pipelined
	// answers) to the client.
	fastWriteTimeout = time.Minute
)

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

type connBufs struct {
	io   connIO // the connection's reads and writes (fastio_*.go)
	br   *bufio.Reader
	bw   *bufio.Writer
	head []byte
	hdrs []hdrRef
	req  request // the request being served (readHead)
}

type hdrRef struct{ name, value []byte }

func (s *fastServer) Serve(l net.Listener) error {
	s.mu.Lock()
	s.ln = l
	s.conns = map[net.Conn]struct{}{}
	s.mu.Unlock()
	var delay time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return http.ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return http.ErrServerClosed
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(c)
	}
}

// Shutdown stops accepting, closes idle connections as they finish their
// request, and waits (until ctx ends) for connections to finish.
func (s *fastServer) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	s.shut.Store(true)
	if s.ln != nil {
		s.ln.Close()
	}
	// Wake readers blocked waiting for a next request: they see closed and
	// leave. A request in progress finishes first (a head or body read
	// arms its own deadline, connIO).
	for c := range s.conns {
		c.SetReadDeadline(time.Now())
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		<-done
		return ctx.Err()
	}
}

func (s *fastServer) isClosed() bool { return s.shut.Load() }

func (s *fastServer) serveConn(c net.Conn) {
	defer s.wg.Done()
	defer func() {
		c.Close()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	b, _ := s.bufs.Get().(*connBufs)
	if b == nil {
		b = &connBufs{br: bufio.NewReaderSize(nil, 16<<10), bw: bufio.NewWriterSize(nil, 16<<10)}
	}
	b.io.reset(c, fastWriteTimeout)
	b.br.Reset(&b.io)
	b.bw.Reset(&b.io)
	defer func() {
		// Answers to pipelined requests may still be buffered when a later
		// request ends the connection (closed mid-body): send them.
		b.bw.Flush()
		b.br.Reset(nil)
		b.bw.Reset(nil)
		b.io.reset(nil, 0)
		if cap(b.head) <= maxHeaderBytes {
			s.bufs.Put(b)
		}
	}()
	idle, headT := orDefault(s.idleTimeout, fastIdleTimeout), orDefault(s.headTimeout, fastHeadTimeout)
	var y yielder
	for {
		if s.isClosed() {
			return
		}
		if b.br.Buffered() == 0 {
			yielded := y.before()
			b.io.readPhase(idle, true)
			waits := b.io.sys.waits
			if _, err := b.br.Peek(1); err != nil {
				return
			}
			y.after(yielded, b.io.sys.waits != waits)
		}
		b.io.readPhase(headT, false)
		keep, err := s.serveOne(c, b)
		if err != nil || !keep {
			return
		}
	}
}

// yielder decides whether a connection's goroutine yields (runtime.Gosched)
// before reading its next request. On a busy proxy (many connections, each
// client sending its next request as soon as it has an answer) a yield lets
// the other connections run first, and by the time this one reads, its
// request has usually arrived: the read that would have found nothing (a
// system call, a park and a netpoller wake-up) is saved. On a quiet proxy
// the yield only costs (it may wake an idle thread), so a yield whose read
// still had to wait backs off: the next 1, 3, 7, ... 63 waits for a request
// do not yield.
type yielder struct{ skip, backoff uint8 }

func (y *yielder) before() bool {
	if y.skip > 0 {
		y.skip--
		return false
	}
	runtime.Gosched()
	return true
}

// after records whether the read after a yield had to wait.
func (y *yielder) after(yielded, waited bool) {
	switch {
	case !yielded:
	case waited:
		y.backoff = min(2*y.backoff+1, 63)
		y.skip = y.backoff
	default:
		y.backoff = 0
	}
}

// request is a parsed request head; byte slices point into connBufs.head.
type request struct {
	method, target, proto []byte
	hdrs                  []hdrRef
	contentLength         int64
	chunked, close        bool
	expectContinue        bool
}

func (r *request) header(lowerName string) []byte {
	for _, h := range r.hdrs {
		if equalFoldLower(h.name, lowerName) {
			return h.value
		}
	}
	return nil
}

func equalFoldLower(a []byte, lower string) bool {
	if len(a) != len(lower) {
		return false
	}
	for i := 0; i < len(a); i++ {
		c := a[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

func trimCRLF(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

// readHead parses the request line and headers into b.head.
func readHead(b *connBufs) (*request, error) {
	b.head = b.head[:0]
	b.hdrs = b.hdrs[:0]
	type span struct{ n0, n1, v0, v1 int }
	var spans [64]span
	sp := spans[:0]
	line, err := b.br.ReadSlice('\n')
	// RFC 9112 §2.2: ignore empty lines before the request line (some
	// clients send a CRLF after a POST body).
	for skip := 0; err == nil && skip < 4 && len(trimCRLF(line)) == 0; skip++ {
		line, err = b.br.ReadSlice('\n')
	}
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, &protoError{http.StatusRequestURITooLong, fmt.Sprintf("request line longer than %d bytes", b.br.Size())}
		}
		return nil, err
	}
	b.head = append(b.head, trimCRLF(line)...)
	reqLineEnd := len(b.head)
	for {
		line, err = b.br.ReadSlice('\n')
		if err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				return nil, errHeadTooLarge
			}
			return nil, err
		}
		line = trimCRLF(line)
		if len(line) == 0 {
			break
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || !isToken(line[:colon]) {
			return nil, badRequest("malformed header line %q (want token: value)", line)
		}
		if !validHeaderValue(line[colon+1:]) {
			return nil, badRequest("header %q has a control character in its value", line[:colon])
		}
		if len(b.head)+len(line) > maxHeaderBytes {
			return nil, errHeadTooLarge
		}
		start := len(b.head)
		b.head = append(b.head, line...)
		v0 := start + colon + 1
		for v0 < len(b.head) && (b.head[v0] == ' ' || b.head[v0] == '\t') {
			v0++
		}
		v1 := len(b.head)
		for v1 > v0 && (b.head[v1-1] == ' ' || b.head[v1-1] == '\t') {
			v1--
		}
		sp = append(sp, span{start, start + colon, v0, v1})
	}
	for _, s := range sp {
		b.hdrs = append(b.hdrs, hdrRef{name: b.head[s.n0:s.n1], value: b.head[s.v0:s.v1]})
	}
	rl := b.head[:reqLineEnd]
	i := bytes.IndexByte(rl, ' ')
	j := bytes.LastIndexByte(rl, ' ')
	if i <= 0 || j <= i || !isToken(rl[:i]) || !validTarget(rl[i+1:j]) {
		return nil, badRequest("malformed request line %q (want METHOD /path HTTP/1.1)", rl)
	}
	r := &b.req
	*r = request{method: rl[:i], target: rl[i+1 : j], proto: rl[j+1:], hdrs: b.hdrs, contentLength: -1}
	switch {
	case bytes.Equal(r.proto, []byte("HTTP/1.1")):
	case bytes.Equal(r.proto, []byte("HTTP/1.0")):
		r.close = true
	case len(r.proto) == 8 && bytes.HasPrefix(r.proto, []byte("HTTP/")) && isDigit(r.proto[5]) && r.proto[6] == '.' && isDigit(r.proto[7]):
		return nil, &protoError{http.StatusHTTPVersionNotSupported, fmt.Sprintf("unsupported protocol version %q (this server speaks HTTP/1.1)", r.proto)}
	default:
		return nil, badRequest("malformed protocol %q in request line (want HTTP/1.1)", r.proto)
	}
	for _, h := range r.hdrs {
		switch {
		case equalFoldLower(h.name, "content-length"):
			n, ok := parseContentLength(h.value)
			if !ok || (r.contentLength >= 0 && r.contentLength != n) {
				return nil, badRequest("bad Content-Length %q (want one non-negative decimal integer)", h.value)
			}
			r.contentLength = n
		case equalFoldLower(h.name, "transfer-encoding"):
			if !bytes.EqualFold(h.value, []byte("chunked")) || r.chunked {
				return nil, badRequest("unsupported Transfer-Encoding %q (only a single \"chunked\" is accepted)", h.value)
			}
			r.chunked = true
		case equalFoldLower(h.name, "connection"):
			if bytes.EqualFold(h.value, []byte("close")) {
				r.close = true
			} else if bytes.EqualFold(h.value, []byte("keep-alive")) {
				r.close = false
			}
		case equalFoldLower(h.name, "expect"):
			r.expectContinue = bytes.EqualFold(h.value, []byte("100-continue"))
		}
	}
	if r.chunked && r.contentLength >= 0 {
		// Both framings at once is the request-smuggling shape (RFC 9112
		// §6.3): refuse rather than pick one.
		return nil, badRequest("both Content-Length and Transfer-Encoding: chunked are set; send one")
	}
	return r, nil
}

var errHeadTooLarge = errors.New("request head too large")

// protoError is a malformed request that gets an answer with its status
// before the connection is closed.
type protoError struct {
	status int
	msg    string
}

func (e *protoError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &protoError{http.StatusBadRequest, fmt.Sprintf(format, args...)}
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// parseContentLength accepts 1*DIGIT only (no sign, no spaces, no list),
// up to 18 digits (no int64 overflow).
func parseContentLength(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if !isDigit(c) {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// tchar bits for bytes 0..63 and 64..127: ALPHA, DIGIT and
// "!#$%&'*+-.^_`|~" (RFC 9110 §5.6.2).
const tcharLo, tcharHi = 0x3ff6cfa00000000, 0x57ffffffc7fffffe

// isToken reports whether b is an RFC 9110 token (method, header name).
func isToken(b []byte) bool {
	for _, c := range b {
		var ok uint64
		switch {
		case c < 64:
			ok = tcharLo >> c & 1
		case c < 128:
			ok = tcharHi >> (c - 64) & 1
		}
		if ok == 0 {
			return false
		}
	}
	return len(b) > 0
}

// validHeaderValue refuses control characters other than tab: a bare CR
// or NUL passed on to an upstream could split its header.
func validHeaderValue(b []byte) bool {
	// Eight bytes at a time while no byte is < 0x20 or 0x7f (exact "any
	// byte below n" and "any byte equal" word tests); the byte loop decides
	// the rest, tabs included.
	const lo, hi = 0x0101010101010101, 0x8080808080808080
	for len(b) >= 8 {
		w := binary.LittleEndian.Uint64(b)
		d := w ^ (0x7f * lo)
		if (w-0x20*lo)&^w&hi != 0 || (d-lo)&^d&hi != 0 {
			break
		}
		b = b[8:]
	}
	for _, c := range b {
		if (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// validTarget refuses an empty target or one with control characters or
// spaces (bytes >= 0x80 are left to the router, which answers 404).
func validTarget(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if c <= ' ' || c == 0x7f {
			return false
		}
	}
	return true
}

// readBody reads the request body into dst.
func (s *fastServer) readBody(b *connBufs, r *request, dst []byte) ([]byte, error) {
	max := s.p.cfg.MaxBodyBytes
	if r.expectContinue && (r.contentLength > 0 || r.chunked) {
		if r.contentLength > max {
			return dst, oip.Errorf(oip.TooLarge, "request body of %d bytes exceeds the limit of %d bytes", r.contentLength, max)
		}
		b.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
		if err := b.bw.Flush(); err != nil {
			return dst, err
		}
	}
	switch {
	case r.chunked:
		out, err := upstream.ReadChunked(b.br, dst[:0], int(max))
		switch {
		case err == nil:
		case errors.Is(err, upstream.ErrTooLarge):
			return out, oip.Errorf(oip.TooLarge, "request body exceeds the limit of %d bytes", max)
		case isTimeout(err):
			return out, s.bodyTimeoutError()
		case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
			return out, err // the client left: nobody to answer
		default:
			return out, oip.Errorf(oip.InvalidArgument, "bad chunked request body: %v", err)
		}
		return out, nil
	case r.contentLength > max:
		return dst, oip.Errorf(oip.TooLarge, "request body of %d bytes exceeds the limit of %d bytes", r.contentLength, max)
	case r.contentLength > 0:
		n := int(r.contentLength)
		if cap(dst) < n {
			dst = make([]byte, n)
		}
		dst = dst[:n]
		_, err := io.ReadFull(b.br, dst)
		if isTimeout(err) {
			err = s.bodyTimeoutError()
		}
		return dst, err
	}
	return dst[:0], nil
}

func (s *fastServer) bodyTimeoutError() error {
	return &protoError{http.StatusRequestTimeout, fmt.Sprintf("request body not received within %s", orDefault(s.bodyTimeout, fastBodyTimeout))}
}

// answerBodyError answers a request whose body could not be read (a
// malformed, oversized or late body) and closes; a client that left gets
// nothing. Earlier pipelined answers still buffered go out first.
func answerBodyError(b *connBufs, err error) {
	var pe *protoError
	if e, ok := err.(*oip.Error); ok {
		writeErrorTo(b.bw, e.HTTPStatus(), e.Msg, nil, true)
	} else if errors.As(err, &pe) {
		writeErrorTo(b.bw, pe.status, pe.msg, nil, true)
	}
	b.bw.Flush()
}

// serveOne serves one request; it reports whether the connection stays open.
func (s *fastServer) serveOne(c net.Conn, b *connBufs) (bool, error) {
	r, err := readHead(b)
	if err != nil {
		if !errors.Is(err, io.EOF) && !isTimeout(err) {
			status := http.StatusBadRequest
			var pe *protoError
			if errors.Is(err, errHeadTooLarge) {
				status = http.StatusRequestHeaderFieldsTooLarge
			} else if errors.As(err, &pe) {
				status = pe.status
			}
			writeSimple(b.bw, status, string(errorJSON(err.Error())), true)
			b.bw.Flush()
		}
		return false, err
	}
	// The body (if any) must arrive within the body timeout; nothing reads
	// the connection after it until the next request's idle wait.
	b.io.readPhase(orDefault(s.bodyTimeout, fastBodyTimeout), false)
	path := r.target
	if i := bytes.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	if bytes.Equal(r.method, []byte("POST")) && bytes.HasSuffix(path, []byte("/infer")) {
		if model, ok := plainInferPath(path); ok {
			return s.infer(c, b, r, model, "")
		}
		rt := oip.ParseHTTPPath(string(path))
		if rt.Kind == oip.RouteInfer {
			return s.infer(c, b, r, []byte(rt.Model), rt.Version)
		}
	}
	return s.fallback(c, b, r)
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

func isTimeout(err error) bool {
	if err == nil {
		return false
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func writeSimple(bw *bufio.Writer, status int, body string, close bool) {
	bw.WriteString("HTTP/1.1 ")
	bw.WriteString(strconv.Itoa(status))
	bw.WriteByte(' ')
	bw.WriteString(http.StatusText(status))
	bw.WriteString("\r\nContent-Type: application/json\r\nContent-Length: ")
	bw.WriteString(strconv.Itoa(len(body)))
	if close {
		bw.WriteString("\r\nConnection: close")
	}
	bw.WriteString("\r\n\r\n")
	bw.WriteString(body)
}

func headerString(r *request, lowerName string) string {
	v := r.header(lowerName)
	if v == nil {
		return ""
	}
	return string(v)
}

// infer is the fast path of POST /v2/models/{name}[/versions/{v}]/infer
// (model: the unescaped name; version: "" unless the path names one).
func (s *fastServer) infer(c net.Conn, b *connBufs, r *request, model []byte, version string) (bool, error) {
	p := s.p
	start := time.Now()
	snap := p.snap.Load()
	var route *Route
	var choice routing.Choice
	var oerr *oip.Error
	if snap != nil && version == "" {
		if route = snap.routes[string(model)]; route != nil {
			key := ""
			if route.stickyMD != "" {
				key = headerString(r, route.stickyMD)
			}
			choice = route.Picker.Pick(headerString(r, route.overrideMD), key, rand.Uint64())
		}
	}
	if route == nil {
		route, choice, oerr = p.resolve(snap, string(model), version, "", "")
	}
	st := s.front.get()
	defer s.front.put(st)
	x := &st.x
	var err error
	x.body, err = s.readBody(b, r, x.body)
	if err != nil {
		answerBodyError(b, err)
		return false, err
	}
	ctx := context.Background()
	if oerr != nil {
		writeErrorTo(b.bw, oerr.HTTPStatus(), oerr.Msg, nil, r.close)
		p.logRequest(ctx, string(model), "", oerr.HTTPStatus(), start, oerr, headerString(r, "traceparent"))
		return !r.close, s.flush(b)
	}
	x.Route, x.Choice, x.Start = route, choice, start
	x.Deadline = start.Add(route.Timeout)
	if route.stickyMD != "" {
		x.StickyKey = headerString(r, route.stickyMD)
	}
	x.contentType = internCT(r.header("content-type"))
	x.ext.noCache = hasNoCache(r.header("cache-control"))
	v := route.Variants[choice.Index]
	if hl := r.header("inference-header-content-length"); hl != nil {
		n, err := strconv.Atoi(string(hl))
		if err != nil || n < 0 || n > len(x.body) {
			e := oip.Errorf(oip.InvalidArgument, "%s %q is not an integer in 0..%d (the body size)", hdrInferHeader, hl, len(x.body))
			writeErrorTo(b.bw, e.HTTPStatus(), e.Msg, v, r.close)
			v.metrics.request(httpCode(e.HTTPStatus()), time.Since(start).Seconds())
			return !r.close, s.flush(b)
		}
		x.headerLen = n
	}
	x.TraceParent = headerString(r, "traceparent")
	x.TraceState = headerString(r, "tracestate")
	var span trace.Span
	if p.tracing {
		ctx = p.prop.Extract(ctx, headCarrier{r})
		ctx, span = p.tracer.Start(ctx, "infer "+route.Name, trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(attribute.String("switchyard.model", route.Name), attribute.String("switchyard.pick", choice.Reason.String())))
		x.TraceParent = telemetry.FormatTraceparent(span.SpanContext())
	}
	route.Budget.Deposit()
	res := &st.res
	err = route.invoker.Invoke(ctx, x, v, res)
	status := s.respond(b.bw, st, err, r.close)
	end := time.Now()
	b.io.requestDone(end) // the base of the idle wait's and the write's deadlines
	p.finishExchange(ctx, span, x, res, v, status, err, end.Sub(start))
	ferr := s.flush(b)
	x.ext.answered(x, res) // after the answer is written: shadow enqueue
	return !r.close, ferr
}

// flush writes out buffered responses unless more pipelined requests are
// already waiting (then they share one write).
func (s *fastServer) flush(b *connBufs) error {
	if b.br.Buffered() > 0 {
		return nil
	}
	return b.bw.Flush()
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

func writeHead(bw *bufio.Writer, status int, ct string, v *Variant, res *Result, headerLen, n int, close bool) {
	if status == 200 {
		bw.WriteString("HTTP/1.1 200 OK\r\n")
	} else {
		bw.WriteString("HTTP/1.1 ")
		writeInt(bw, status)
		bw.WriteByte(' ')
		bw.WriteString(http.StatusText(status))
		bw.WriteString("\r\n")
	}
	if ct != "" {
		bw.WriteString("Content-Type: ")
		bw.WriteString(ct)
		bw.WriteString("\r\n")
	}
	if v != nil {
		bw.WriteString("X-Switchyard-Variant: ")
		bw.WriteString(v.Name)
		bw.WriteString("\r\n")
	}
	if res != nil {
		writeExtHeaders(bw, res) // fallback / cache marks (cache_state.go)
	}
	if headerLen > 0 {
		bw.WriteString("Inference-Header-Content-Length: ")
		writeInt(bw, headerLen)
		bw.WriteString("\r\n")
	}
	if close {
		bw.WriteString("Connection: close\r\n")
	}
	bw.WriteString("Content-Length: ")
	writeInt(bw, n)
	bw.WriteString("\r\n\r\n")
}

// writeInt writes n in decimal without allocating (formatted in the
// writer's free space).
func writeInt(bw *bufio.Writer, n int) {
	if bw.Available() < 20 {
		bw.Flush()
	}
	bw.Write(strconv.AppendInt(bw.AvailableBuffer(), int64(n), 10))
}

func writeErrorTo(bw *bufio.Writer, status int, msg string, v *Variant, close bool) {
	body := errorJSON(msg)
	writeHead(bw, status, "application/json", v, nil, 0, len(body), close)
	bw.Write(body)
}

// errorJSON is {"error": msg} as valid JSON whatever msg holds (control
// characters escaped, invalid UTF-8 replaced; strconv.Quote's \x and \U
// escapes are not JSON).
func errorJSON(msg string) []byte {
	b := make([]byte, 0, len(msg)+16)
	b = append(b, `{"error":"`...)
	for _, c := range strings.ToValidUTF8(msg, "\uFFFD") {
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', byte(c))
		case c == '\n':
			b = append(b, `\n`...)
		case c == '\r':
			b = append(b, `\r`...)
		case c == '\t':
			b = append(b, `\t`...)
		case c < 0x20 || c == 0x7f || c == 0x2028 || c == 0x2029:
			b = fmt.Appendf(b, `\u%04x`, c)
		default:
			b = utf8.AppendRune(b, c)
		}
	}
	return append(b, `"}`...)
}

// respond writes the result (or error) and returns the status sent.
func (s *fastServer) respond(bw *bufio.Writer, st *exchangeState, err error, close bool) int {
	res := &st.res
	if err != nil {
		e := oip.AsError(err)
		body := errorJSON(e.Msg)
		writeHead(bw, e.HTTPStatus(), "application/json", res.Variant, res, 0, len(body), close)
		bw.Write(body)
		return e.HTTPStatus()
	}
	body, status, ct, headerLen := res.Body, res.Status, res.ContentType, res.HeaderLen
	if res.PB != nil || (res.parsed != nil && len(res.Body) == 0) {
		resp, perr := res.Response()
		var req *oip.InferRequest
		if perr == nil {
			req, perr = st.x.Request()
		}
		if perr == nil {
			st.out, headerLen, perr = oip.AppendInferResponse(st.out[:0], resp, req)
		}
		if perr != nil {
			msg := errorJSON(fmt.Sprintf("model %q: cannot encode the upstream answer: %v", st.x.Route.Name, perr))
			writeHead(bw, http.StatusBadGateway, "application/json", res.Variant, res, 0, len(msg), close)
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
	writeHead(bw, status, ct, res.Variant, res, headerLen, len(body), close)
	bw.Write(body)
	return status
}

// headCarrier reads W3C trace context from a parsed request head.
type headCarrier struct{ r *request }

func (h headCarrier) Get(k string) string { return headerString(h.r, strings.ToLower(k)) }
func (h headCarrier) Set(string, string)  {}
func (h headCarrier) Keys() []string {
	out := make([]string, 0, len(h.r.hdrs))
	for _, x := range h.r.hdrs {
		out = append(out, strings.ToLower(string(x.name)))
	}
	return out
}

var _ propagation.TextMapCarrier = headCarrier{}

// fallback serves any other request through the net/http handler.
func (s *fastServer) fallback(c net.Conn, b *connBufs, r *request) (bool, error) {
	body, err := s.readBody(b, r, nil)
	if err != nil {
		answerBodyError(b, err)
		return false, err
	}
	target := string(r.target)
	u, err := url.ParseRequestURI(target)
	if err != nil {
		// The request was framed correctly (its body is read): answer and
		// keep the connection.
		writeErrorTo(b.bw, http.StatusBadRequest, fmt.Sprintf("bad request target %q: %v", target, err), nil, r.close)
		return !r.close, s.flush(b)
	}
	hdr := make(http.Header, len(r.hdrs))
	for _, h := range r.hdrs {
		hdr.Add(string(h.name), string(h.value))
	}
	req := (&http.Request{
		Method: string(r.method), URL: u, RequestURI: target, Proto: string(r.proto), ProtoMajor: 1, ProtoMinor: 1,
		Header: hdr, Body: io.NopCloser(bytes.NewReader(body)), ContentLength: int64(len(body)),
		Host: hdr.Get("Host"), RemoteAddr: c.RemoteAddr().String(),
	}).WithContext(context.Background())
	w := &bufferedWriter{header: http.Header{}}
	s.front.ServeHTTP(w, req)
	if w.status == 0 {
		w.status = http.StatusOK
	}
	b.bw.WriteString("HTTP/1.1 ")
	b.bw.WriteString(strconv.Itoa(w.status))
	b.bw.WriteByte(' ')
	b.bw.WriteString(http.StatusText(w.status))
	b.bw.WriteString("\r\n")
	w.header.Del("Content-Length")
	w.header.Del("Connection")
	w.header.Write(b.bw)
	if r.close {
		b.bw.WriteString("Connection: close\r\n")
	}
	fmt.Fprintf(b.bw, "Content-Length: %d\r\n\r\n", w.buf.Len())
	if !bytes.Equal(r.method, []byte("HEAD")) {
		b.bw.Write(w.buf.Bytes())
	}
	return !r.close, s.flush(b)
}

type bufferedWriter struct {
	header http.Header
	status int
	buf    bytes.Buffer
}

func (w *bufferedWriter) Header() http.Header { return w.header }
func (w *bufferedWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
}
func (w *bufferedWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.buf.Write(b)
}
