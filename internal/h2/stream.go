package h2

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// stream is one request stream. Its fields are guarded by conn.mu, but
// for those the worker owns while the FastFunc runs (msg, answer) and the
// body pipe's own.
type stream struct {
	c      *conn
	id     uint32
	ctx    context.Context
	cancel context.CancelFunc
	fields []hpack.HeaderField
	method string
	// sendWindow is the peer's window for this stream; recvWindow ours
	// (what the client may still send), recvUnacked the credit not yet
	// given back.
	sendWindow  int64
	recvWindow  int32
	recvUnacked int32
	recvDone    bool // END_STREAM received
	reset       bool // reset, answered, or the connection died

	// A fast stream: the FastFunc, the gathered bytes (prefix included),
	// the message, and whether it was answered without calling it (a
	// refused message).
	fast  FastFunc
	buf   []byte
	msg   []byte
	early bool

	// A fallback stream: the request body.
	body *pipe
}

func (st *stream) resetLocked() {
	st.reset = true
	if st.cancel != nil {
		st.cancel()
	}
	if st.body != nil {
		st.body.closeWithError(errStreamReset)
	}
}

var errStreamReset = errors.New("h2: stream reset")

// creditLocked gives back n bytes of the stream's window once half of it
// is owed.
func (st *stream) creditLocked(n int32) {
	st.recvUnacked += n
	if st.recvUnacked < st.c.streamWindow/2 || st.reset || st.recvDone {
		return
	}
	st.c.fr.WriteWindowUpdate(st.id, uint32(st.recvUnacked))
	st.recvWindow += st.recvUnacked
	st.recvUnacked = 0
}

// gatherLocked appends a fast stream's data; a message it refuses (too
// large, compressed) is answered at once.
func (st *stream) gatherLocked(p []byte) {
	if st.early {
		return
	}
	st.buf = append(st.buf, p...)
	if len(st.buf) < 5 {
		return
	}
	var refuse *status.Status
	n := int(uint32(st.buf[1])<<24 | uint32(st.buf[2])<<16 | uint32(st.buf[3])<<8 | uint32(st.buf[4]))
	switch {
	case st.buf[0] == 1:
		refuse = status.New(codes.Internal, "grpc: compressed flag set with identity or empty encoding")
	case st.buf[0] != 0:
		refuse = status.Newf(codes.Internal, "grpc: received unexpected payload format %d", st.buf[0])
	case n > st.c.maxMsg:
		refuse = status.Newf(codes.ResourceExhausted, "grpc: received message larger than max (%d vs. %d)", n, st.c.maxMsg)
	case len(st.buf) > 5+n:
		refuse = status.New(codes.Internal, "grpc: more than one request message for a unary call")
	}
	if refuse != nil {
		st.refuseLocked(refuse)
		return
	}
	if cap(st.buf) < 5+n {
		st.buf = append(make([]byte, 0, 5+n), st.buf...)
	}
}

// refuseLocked answers a fast stream without calling its FastFunc.
func (st *stream) refuseLocked(s *status.Status) {
	st.early = true
	st.buf = nil
	c := st.c
	c.answerLocked(st, Answer{Status: s})
	c.finishLocked(st)
	st.cancel()
}

// endRecvLocked: the client's side of the stream has ended.
func (st *stream) endRecvLocked() {
	st.recvDone = true
	if st.body != nil {
		st.body.closeWithError(io.EOF)
		return
	}
	if st.early || st.reset {
		return
	}
	switch n := len(st.buf); {
	case n == 0:
		st.refuseLocked(status.New(codes.Internal, "grpc: the unary call's request has no message"))
		return
	case n < 5 || n != 5+int(uint32(st.buf[1])<<24|uint32(st.buf[2])<<16|uint32(st.buf[3])<<8|uint32(st.buf[4])):
		st.refuseLocked(status.New(codes.Internal, "grpc: the request message is truncated"))
		return
	}
	st.msg = st.buf[5:]
	st.buf = nil
	st.c.running++
	st.c.srv.dispatch(st)
}

// reservedHeaders are the fields grpc-go leaves out of the request
// metadata.
var reservedHeaders = map[string]bool{
	"content-type": true, "grpc-message-type": true, "grpc-encoding": true, "grpc-message": true,
	"grpc-status": true, "grpc-timeout": true, "grpc-status-details-bin": true, "te": true,
}

// metadata is the request metadata, as grpc-go's server builds it.
func (st *stream) metadata() metadata.MD {
	md := make(metadata.MD, len(st.fields))
	for _, h := range st.fields {
		if (strings.HasPrefix(h.Name, ":") && h.Name != ":authority") || reservedHeaders[h.Name] {
			continue
		}
		v := h.Value
		if strings.HasSuffix(h.Name, "-bin") {
			b, err := decodeBin(v)
			if err != nil {
				continue
			}
			v = string(b)
		}
		md[h.Name] = append(md[h.Name], v)
	}
	return md
}

func decodeBin(v string) ([]byte, error) {
	if len(v)%4 == 0 {
		return base64.StdEncoding.DecodeString(v)
	}
	return base64.RawStdEncoding.DecodeString(v)
}

// decodeTimeout parses grpc-timeout (at most 8 digits and a unit).
func decodeTimeout(s string) (time.Duration, bool) {
	if len(s) < 2 || len(s) > 9 {
		return 0, false
	}
	n, err := strconv.ParseInt(s[:len(s)-1], 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	var unit time.Duration
	switch s[len(s)-1] {
	case 'H':
		unit = time.Hour
	case 'M':
		unit = time.Minute
	case 'S':
		unit = time.Second
	case 'm':
		unit = time.Millisecond
	case 'u':
		unit = time.Microsecond
	case 'n':
		unit = time.Nanosecond
	default:
		return 0, false
	}
	if n > int64(1<<63-1)/int64(unit) {
		return 1<<63 - 1, true
	}
	return time.Duration(n) * unit, true
}

// statusFields writes a status's trailer fields and the trailer metadata.
func statusFields(enc func(string, string), s *status.Status, trailer metadata.MD) {
	if s == nil {
		enc("grpc-status", "0")
	} else {
		enc("grpc-status", strconv.Itoa(int(s.Code())))
		if m := s.Message(); m != "" {
			enc("grpc-message", encodeGrpcMessage(m))
		}
		if p := s.Proto(); len(p.GetDetails()) > 0 {
			if b, err := proto.Marshal(p); err == nil {
				enc("grpc-status-details-bin", base64.RawStdEncoding.EncodeToString(b))
			}
		}
	}
	mdFields(enc, trailer)
}

// mdFields writes metadata as header fields (-bin values in base64).
func mdFields(enc func(string, string), md metadata.MD) {
	for k, vs := range md {
		if reservedHeaders[k] || strings.HasPrefix(k, ":") {
			continue
		}
		for _, v := range vs {
			if strings.HasSuffix(k, "-bin") {
				v = base64.RawStdEncoding.EncodeToString([]byte(v))
			}
			enc(k, v)
		}
	}
}

// encodeGrpcMessage percent-encodes a status message (grpc-message).
func encodeGrpcMessage(m string) string {
	clean := true
	for i := 0; i < len(m); i++ {
		if c := m[i]; c < ' ' || c > '~' || c == '%' {
			clean = false
			break
		}
	}
	if clean {
		return m
	}
	var b strings.Builder
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(m); i++ {
		c := m[i]
		if c < ' ' || c > '~' || c == '%' {
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// startFallbackLocked hands the stream to the Fallback handler on its own
// goroutine.
func (st *stream) startFallbackLocked(method string, ended bool) {
	c := st.c
	st.body = &pipe{st: st}
	st.body.cond.L = &st.body.mu
	if ended {
		st.recvDone = true
		st.body.closeWithError(io.EOF)
	}
	hdr := make(http.Header, len(st.fields))
	var authority, httpMethod string
	for _, h := range st.fields {
		switch h.Name {
		case ":authority":
			authority = h.Value
		case ":method":
			httpMethod = h.Value
		}
		if !strings.HasPrefix(h.Name, ":") {
			hdr.Add(h.Name, h.Value)
		}
	}
	remote := ""
	if a := c.nc.RemoteAddr(); a != nil {
		remote = a.String()
	}
	req := (&http.Request{
		Method: httpMethod, URL: &url.URL{Path: method}, RequestURI: method, Proto: "HTTP/2.0", ProtoMajor: 2,
		Header: hdr, Body: st.body, ContentLength: -1, Host: authority, RemoteAddr: remote, TLS: c.tls,
	}).WithContext(st.ctx)
	c.running++
	go st.serveFallback(req)
}

func (st *stream) serveFallback(req *http.Request) {
	c := st.c
	w := &responseWriter{st: st, header: http.Header{}}
	if h := c.srv.Fallback; h != nil {
		h.ServeHTTP(w, req)
	} else {
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set(http.TrailerPrefix+"Grpc-Status", strconv.Itoa(int(codes.Unimplemented)))
		w.Header().Set(http.TrailerPrefix+"Grpc-Message", "unknown method "+req.URL.Path)
	}
	st.body.Close()
	c.mu.Lock()
	if !st.reset {
		if !w.wrote {
			w.writeHeaderLocked()
		}
		var tr [][2]string
		w.trailers(func(k, v string) { tr = append(tr, [2]string{k, v}) })
		if len(tr) > 0 {
			c.writeHeadersLocked(st.id, true, func(enc func(string, string)) {
				for _, f := range tr {
					enc(f[0], f[1])
				}
			})
		} else {
			c.writeDataLocked(st, nil, true)
		}
		c.finishLocked(st)
		c.flushLocked()
	}
	c.running--
	c.mu.Unlock()
	st.cancel()
}

// responseWriter is a fallback stream's http.ResponseWriter and
// http.Flusher: the header is sent at the first Write or Flush, the
// trailers (declared in "Trailer" or set under http.TrailerPrefix) when
// the handler returns.
type responseWriter struct {
	st     *stream
	header http.Header
	status int
	wrote  bool
}

func (w *responseWriter) Header() http.Header { return w.header }

func (w *responseWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}

func (w *responseWriter) Write(p []byte) (int, error) {
	c := w.st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if !w.wrote {
		w.writeHeaderLocked()
	}
	if !c.writeDataLocked(w.st, p, false) {
		return 0, errStreamReset
	}
	return len(p), nil
}

func (w *responseWriter) Flush() {
	c := w.st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if w.st.reset {
		return
	}
	if !w.wrote {
		w.writeHeaderLocked()
	}
	c.flushLocked()
}

func (w *responseWriter) declared() map[string]bool {
	var d map[string]bool
	for _, v := range w.header["Trailer"] {
		for _, k := range strings.Split(v, ",") {
			if k = strings.TrimSpace(k); k != "" {
				if d == nil {
					d = map[string]bool{}
				}
				d[http.CanonicalHeaderKey(k)] = true
			}
		}
	}
	return d
}

func (w *responseWriter) writeHeaderLocked() {
	w.wrote = true
	if w.st.reset {
		return
	}
	if w.status == 0 {
		w.status = http.StatusOK
	}
	declared := w.declared()
	w.st.c.writeHeadersLocked(w.st.id, false, func(enc func(string, string)) {
		enc(":status", strconv.Itoa(w.status))
		for k, vs := range w.header {
			if k == "Trailer" || declared[k] || strings.HasPrefix(k, http.TrailerPrefix) || isConnectionHeader(k) {
				continue
			}
			lk := strings.ToLower(k)
			for _, v := range vs {
				enc(lk, v)
			}
		}
	})
}

func isConnectionHeader(k string) bool {
	switch k {
	case "Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Upgrade":
		return true
	}
	return false
}

func (w *responseWriter) trailers(enc func(string, string)) {
	declared := w.declared()
	for k, vs := range w.header {
		name := ""
		switch {
		case strings.HasPrefix(k, http.TrailerPrefix):
			name = strings.ToLower(k[len(http.TrailerPrefix):])
		case declared[k]:
			name = strings.ToLower(k)
		default:
			continue
		}
		for _, v := range vs {
			enc(name, v)
		}
	}
}

// pipe is a fallback stream's request body: DATA frames in, the handler's
// reads out, the stream window credited as it reads.
type pipe struct {
	st   *stream
	mu   sync.Mutex
	cond sync.Cond
	buf  []byte
	err  error
}

func (p *pipe) put(b []byte) {
	p.mu.Lock()
	if p.err == nil {
		p.buf = append(p.buf, b...)
		p.cond.Broadcast()
	}
	p.mu.Unlock()
}

func (p *pipe) closeWithError(err error) {
	p.mu.Lock()
	if p.err == nil {
		p.err = err
	}
	p.cond.Broadcast()
	p.mu.Unlock()
}

func (p *pipe) Read(b []byte) (int, error) {
	p.mu.Lock()
	for len(p.buf) == 0 && p.err == nil {
		p.cond.Wait()
	}
	if len(p.buf) == 0 {
		err := p.err
		p.mu.Unlock()
		return 0, err
	}
	n := copy(b, p.buf)
	p.buf = p.buf[n:]
	if len(p.buf) == 0 {
		p.buf = nil
	}
	p.mu.Unlock()
	c := p.st.c
	c.mu.Lock()
	if c.streams[p.st.id] == p.st {
		p.st.creditLocked(int32(n))
		if c.bw.Buffered() > 0 {
			c.flushLocked()
		}
	}
	c.mu.Unlock()
	return n, nil
}

// Close ends the handler's reading: the rest of the body is dropped.
func (p *pipe) Close() error {
	p.closeWithError(http.ErrBodyReadAfterClose)
	p.mu.Lock()
	p.buf = nil
	p.mu.Unlock()
	return nil
}

var _ http.Flusher = (*responseWriter)(nil)
