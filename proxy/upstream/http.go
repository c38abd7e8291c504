// Package upstream holds the proxy's connections to inference backends: a
// lean pooled HTTP/1.1 client, gRPC connections, power-of-two-choices
// least-request balancing, outlier ejection, a retry budget and circuit
// breakers.
package upstream

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchyard-dev/switchyard/internal/h1"
	"github.com/switchyard-dev/switchyard/internal/rawio"
)

// ErrConnect marks a failure to open a connection: nothing reached the
// backend, so the request is always safe to retry.
var ErrConnect = errors.New("connect failed")

// ErrTimeout marks an attempt that ran out of its deadline.
var ErrTimeout = errors.New("upstream timed out")

// ErrProtocol marks a response the client could not parse.
var ErrProtocol = errors.New("malformed upstream response")

// Request is one HTTP/1.1 request to an upstream. Path is the request target
// (e.g. /v2/models/recommender-v1/infer); Body is sent as is. Header lines in
// Extra ("Name: value", no CRLF) are appended verbatim.
type Request struct {
	Method      string // default POST
	Path        string
	ContentType string
	// HeaderLen is the Inference-Header-Content-Length of a binary-extension
	// body (0: none).
	HeaderLen int
	Body      []byte
	// TraceParent and TraceState are W3C trace context values ("" to omit).
	TraceParent, TraceState string
	// Extra header lines ("Name: value", no CRLF), appended verbatim.
	Extra []string
	// Ctx, when it can be cancelled, cuts the call short when it ends
	// (the client went away): the connection's deadline is moved to the
	// past and the connection is not reused. Nil: only the deadline.
	Ctx context.Context
}

// Response is an upstream's answer. Body is appended to the slice the caller
// passes in (reuse it through a pool).
type Response struct {
	Status      int
	ContentType string // "" unless the upstream sent one
	HeaderLen   int    // Inference-Header-Content-Length, 0 if absent
	// RetryAfter: the answer carried Retry-After, the form of a queue
	// rejection (an overload answer, not a failure of the version).
	RetryAfter bool
	Body       []byte

	keepAlive bool
}

const maxHeaderLines = 100

// MaxResponseBody bounds an upstream response body.
const MaxResponseBody = 256 << 20

// HTTPPool is a pool of keep-alive HTTP/1.1 connections to one endpoint. It
// writes requests and parses responses itself on pooled buffered connections:
// no goroutine per request or connection, and no allocation per request on
// the common path.
type HTTPPool struct {
	addr    string
	host    string // Host header line value
	dialer  net.Dialer
	maxIdle int
	tls     *tls.Config // nil: plain TCP (raw system calls)

	mu     sync.Mutex
	idle   []*conn
	closed bool
	// open is every connection the pool dialled and has not closed, idle
	// or in use (changed at dial and close only, never per request): what
	// Cut reaches. cut refuses dials after Cut.
	open map[*conn]struct{}
	cut  bool
}

type conn struct {
	nc      net.Conn
	io      connIO // br and bw read and write through it
	br      *bufio.Reader
	bw      *bufio.Writer
	scratch [32]byte
}

// NewHTTPPool returns a pool for addr (host:port) keeping at most maxIdle idle
// connections.
func NewHTTPPool(addr string, maxIdle int) *HTTPPool {
	if maxIdle <= 0 {
		maxIdle = 256
	}
	return &HTTPPool{
		addr: addr, host: addr, maxIdle: maxIdle,
		dialer: net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second},
	}
}

// NewHTTPSPool is NewHTTPPool over TLS with cfg (its ServerName, when
// empty, is the address's host).
func NewHTTPSPool(addr string, maxIdle int, cfg *tls.Config) *HTTPPool {
	p := NewHTTPPool(addr, maxIdle)
	if cfg != nil {
		cfg = cfg.Clone()
		if cfg.ServerName == "" {
			if h, _, err := net.SplitHostPort(addr); err == nil {
				cfg.ServerName = h
			}
		}
		cfg.NextProtos = []string{"http/1.1"}
		p.tls = cfg
	}
	return p
}

// Addr is the endpoint's address.
func (p *HTTPPool) Addr() string { return p.addr }

// Close closes idle connections; connections in use are closed when returned.
func (p *HTTPPool) Close() {
	p.mu.Lock()
	p.closed = true
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, c := range idle {
		p.discard(c)
	}
}

// Cut ends every call in flight at once (their connections get a deadline
// in the past: a blocked read or write returns a timeout) and refuses new
// connections (ErrConnect): for a shutdown whose drain bound has passed.
// It closes the pool too.
func (p *HTTPPool) Cut() {
	p.mu.Lock()
	p.cut = true
	for c := range p.open {
		c.nc.SetDeadline(time.Unix(1, 0))
	}
	p.mu.Unlock()
	p.Close()
}

// discard closes c and forgets it.
func (p *HTTPPool) discard(c *conn) {
	c.nc.Close()
	p.mu.Lock()
	delete(p.open, c)
	p.mu.Unlock()
}

func (p *HTTPPool) get() *conn {
	p.mu.Lock()
	n := len(p.idle)
	if n == 0 {
		p.mu.Unlock()
		return nil
	}
	c := p.idle[n-1]
	p.idle[n-1] = nil
	p.idle = p.idle[:n-1]
	p.mu.Unlock()
	return c
}

func (p *HTTPPool) put(c *conn) {
	p.mu.Lock()
	if p.closed || len(p.idle) >= p.maxIdle {
		p.mu.Unlock()
		p.discard(c)
		return
	}
	p.idle = append(p.idle, c)
	p.mu.Unlock()
}

func (p *HTTPPool) dial(deadline time.Time) (*conn, error) {
	p.mu.Lock()
	cut := p.cut
	p.mu.Unlock()
	if cut {
		return nil, fmt.Errorf("%w: %s: the proxy is shutting down", ErrConnect, p.addr)
	}
	d := p.dialer
	if !deadline.IsZero() {
		d.Deadline = deadline
	}
	nc, err := d.Dial("tcp", p.addr)
	if err != nil {
		if isTimeout(err) {
			return nil, fmt.Errorf("%w: connect %s: %w", ErrTimeout, p.addr, err)
		}
		return nil, fmt.Errorf("%w: %s: %w", ErrConnect, p.addr, err)
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	if p.tls != nil {
		tc := tls.Client(rawio.NetConn(nc), p.tls) // records on raw system calls, as plain bytes
		hd := d.Deadline
		if hd.IsZero() {
			hd = time.Now().Add(p.dialer.Timeout)
		}
		tc.SetDeadline(hd)
		if err := tc.Handshake(); err != nil {
			nc.Close()
			if isTimeout(err) {
				return nil, fmt.Errorf("%w: TLS handshake with %s: %w", ErrTimeout, p.addr, err)
			}
			return nil, fmt.Errorf("%w: TLS handshake with %s: %w", ErrConnect, p.addr, err)
		}
		tc.SetDeadline(time.Time{})
		nc = tc // reads and writes through crypto/tls
	}
	c := &conn{nc: nc}
	c.io.reset(nc)
	c.br, c.bw = bufio.NewReaderSize(&c.io, 16<<10), bufio.NewWriterSize(&c.io, 16<<10)
	p.mu.Lock()
	cut = p.cut
	if !cut {
		if p.open == nil {
			p.open = map[*conn]struct{}{}
		}
		p.open[c] = struct{}{}
	}
	p.mu.Unlock()
	if cut { // cut while dialling
		nc.Close()
		return nil, fmt.Errorf("%w: %s: the proxy is shutting down", ErrConnect, p.addr)
	}
	return c, nil
}

// Do sends req and reads the response into resp (resp.Body is appended to).
// A connection that fails before any response byte arrived on a reused
// keep-alive connection is retried once on a fresh connection (the backend
// closed an idle connection). Errors wrap ErrConnect, ErrTimeout or
// ErrProtocol, or are I/O errors.
func (p *HTTPPool) Do(deadline time.Time, req *Request, resp *Response) error {
	c := p.get()
	reused := c != nil
	if c == nil {
		var err error
		if c, err = p.dial(deadline); err != nil {
			return err
		}
	}
	var cut *canceller
	if req.Ctx != nil && req.Ctx.Done() != nil {
		cut = &canceller{}
		cut.c.Store(c)
		cut.stop = context.AfterFunc(req.Ctx, cut.fire)
	}
	err := p.roundTrip(c, deadline, req, resp)
	if err != nil && reused && errors.Is(err, errStale) && (req.Ctx == nil || req.Ctx.Err() == nil) {
		p.discard(c)
		if c, err = p.dial(deadline); err != nil {
			if cut != nil {
				cut.stop()
			}
			return err
		}
		if cut != nil {
			cut.c.Store(c)
		}
		err = p.roundTrip(c, deadline, req, resp)
	}
	// A cut that fired (even as the answer completed) spoilt the
	// connection's deadline: it is not reused.
	spoilt := cut != nil && !cut.stop()
	if err != nil {
		p.discard(c)
		if errors.Is(err, errStale) {
			return fmt.Errorf("%w: %s closed the connection before answering", ErrConnect, p.addr)
		}
		return err
	}
	if resp.keepAlive && !spoilt {
		p.put(c)
	} else {
		p.discard(c)
	}
	return nil
}

var errStale = errors.New("connection closed before response")

// canceller cuts a call short when its context ends: the connection in use
// gets a deadline in the past, so the blocked read or write returns.
type canceller struct {
	c    atomic.Pointer[conn]
	stop func() bool
}

func (k *canceller) fire() {
	if c := k.c.Load(); c != nil {
		c.io.cut.Store(true)
		c.nc.SetDeadline(time.Unix(1, 0))
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (p *HTTPPool) roundTrip(c *conn, deadline time.Time, req *Request, resp *Response) error {
	if err := c.io.setDeadline(deadline); err != nil {
		return err
	}
	bw := c.bw
	method := req.Method
	if method == "" {
		method = "POST"
	}
	bw.WriteString(method)
	bw.WriteByte(' ')
	bw.WriteString(req.Path)
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(p.host)
	if req.ContentType != "" {
		bw.WriteString("\r\nContent-Type: ")
		bw.WriteString(req.ContentType)
	}
	if method == "POST" || len(req.Body) > 0 {
		bw.WriteString("\r\nContent-Length: ")
		bw.Write(strconv.AppendInt(c.scratch[:0], int64(len(req.Body)), 10))
	}
	if req.HeaderLen > 0 {
		bw.WriteString("\r\nInference-Header-Content-Length: ")
		bw.Write(strconv.AppendInt(c.scratch[:0], int64(req.HeaderLen), 10))
	}
	if req.TraceParent != "" {
		bw.WriteString("\r\nTraceparent: ")
		bw.WriteString(req.TraceParent)
		if req.TraceState != "" {
			bw.WriteString("\r\nTracestate: ")
			bw.WriteString(req.TraceState)
		}
	}
	for _, h := range req.Extra {
		bw.WriteString("\r\n")
		bw.WriteString(h)
	}
	bw.WriteString("\r\n\r\n")
	bw.Write(req.Body)
	if err := bw.Flush(); err != nil {
		return classify(err, true)
	}
	return readResponse(c.br, resp)
}

// classify maps an I/O error before any response byte to errStale (a dead
// keep-alive connection) or a timeout.
func classify(err error, beforeResponse bool) error {
	if isTimeout(err) {
		return fmt.Errorf("%w: %w", ErrTimeout, err)
	}
	if beforeResponse {
		return fmt.Errorf("%w: %w", errStale, err)
	}
	return err
}

var (
	hdrContentLength    = []byte("content-length")
	hdrContentType      = []byte("content-type")
	hdrTransferEncoding = []byte("transfer-encoding")
	hdrConnection       = []byte("connection")
	hdrInferenceHeader  = []byte("inference-header-content-length")
	hdrRetryAfter       = []byte("retry-after")
)

func readResponse(br *bufio.Reader, resp *Response) error {
	line, err := br.ReadSlice('\n')
	if err != nil {
		return classify(err, len(line) == 0)
	}
	// HTTP/1.1 200 OK
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
		return fmt.Errorf("%w: status line %q", ErrProtocol, trim(line))
	}
	status, ok := atoi(line[9:12])
	if !ok || status < 100 {
		return fmt.Errorf("%w: status line %q", ErrProtocol, trim(line))
	}
	resp.Status = status
	resp.keepAlive = line[7] == '1'
	resp.ContentType = ""
	resp.HeaderLen = 0
	resp.RetryAfter = false
	contentLength, chunked := -1, false
	for i := 0; ; i++ {
		if i > maxHeaderLines {
			return fmt.Errorf("%w: too many header lines", ErrProtocol)
		}
		line, err = br.ReadSlice('\n')
		if err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				return fmt.Errorf("%w: header line too long", ErrProtocol)
			}
			return classify(err, false)
		}
		line = trim(line)
		if len(line) == 0 {
			break
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return fmt.Errorf("%w: header line %q", ErrProtocol, line)
		}
		name, value := line[:colon], bytes.TrimSpace(line[colon+1:])
		switch {
		case equalFold(name, hdrContentLength):
			n, ok := atoi(value)
			if !ok {
				return fmt.Errorf("%w: content-length %q", ErrProtocol, value)
			}
			contentLength = n
		case equalFold(name, hdrContentType):
			resp.ContentType = internContentType(value)
		case equalFold(name, hdrTransferEncoding):
			chunked = bytes.EqualFold(value, []byte("chunked"))
		case equalFold(name, hdrConnection):
			if bytes.EqualFold(value, []byte("close")) {
				resp.keepAlive = false
			}
		case equalFold(name, hdrInferenceHeader):
			if n, ok := atoi(value); ok {
				resp.HeaderLen = n
			}
		case equalFold(name, hdrRetryAfter):
			resp.RetryAfter = len(value) > 0
		}
	}
	if status < 200 || status == 204 || status == 304 {
		if status < 200 {
			return fmt.Errorf("%w: unexpected informational status %d", ErrProtocol, status)
		}
		return nil
	}
	switch {
	case chunked:
		return readChunked(br, resp)
	case contentLength >= 0:
		if contentLength > MaxResponseBody {
			return fmt.Errorf("%w: body of %d bytes exceeds %d", ErrProtocol, contentLength, MaxResponseBody)
		}
		start := len(resp.Body)
		resp.Body = h1.Grow(resp.Body, contentLength)
		if _, err := io.ReadFull(br, resp.Body[start:start+contentLength]); err != nil {
			return classify(err, false)
		}
	default:
		resp.keepAlive = false
		for {
			resp.Body = h1.Grow(resp.Body, 4096)
			n, err := br.Read(resp.Body[len(resp.Body):cap(resp.Body)])
			resp.Body = resp.Body[:len(resp.Body)+n]
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return classify(err, false)
			}
			if len(resp.Body) > MaxResponseBody {
				return fmt.Errorf("%w: body exceeds %d bytes", ErrProtocol, MaxResponseBody)
			}
		}
	}
	return nil
}

// readChunked reads a chunked transfer-encoded body (internal/h1's
// reader, which refuses a chunk not followed by CRLF: another reader could
// frame it differently) into resp.Body, at most MaxResponseBody bytes.
func readChunked(br *bufio.Reader, resp *Response) error {
	body, err := h1.ReadChunked(br, resp.Body, MaxResponseBody)
	resp.Body = body
	switch {
	case err == nil:
		return nil
	case errors.Is(err, h1.ErrTooLarge):
		return fmt.Errorf("%w: body exceeds %d bytes", ErrProtocol, MaxResponseBody)
	case errors.Is(err, h1.ErrMalformed):
		return fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	return classify(err, false)
}

func trim(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

func atoi(b []byte) (int, bool) {
	n, ok := h1.ParseDigits(b)
	return int(n), ok
}

func equalFold(a, lower []byte) bool {
	if len(a) != len(lower) {
		return false
	}
	for i, c := range a {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// internContentType avoids allocating for the common content types.
func internContentType(v []byte) string {
	switch string(v) {
	case "application/json":
		return "application/json"
	case "application/octet-stream":
		return "application/octet-stream"
	case "text/plain; charset=utf-8":
		return "text/plain; charset=utf-8"
	}
	return string(v)
}
