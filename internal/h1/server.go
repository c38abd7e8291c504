package h1

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchyard-dev/switchyard/internal/lifecycle"
	"github.com/switchyard-dev/switchyard/internal/rawio"
)

// Defaults for the Server's timeouts and body limit.
const (
	DefaultIdleTimeout  = 5 * time.Minute
	DefaultHeadTimeout  = 10 * time.Second
	DefaultBodyTimeout  = time.Minute
	DefaultWriteTimeout = time.Minute
	DefaultMaxBodyBytes = 64 << 20
	// A lingering close (see Server.LingerTimeout) ends after this long or
	// this many bytes read, whichever comes first.
	DefaultLingerTimeout = 2 * time.Second
	DefaultLingerBytes   = 4 << 20
)

// FastFunc answers a request on the connection's buffers. It returns
// served=false, before reading the body, for a request it leaves to the
// Server's Handler; otherwise whether the connection stays open and the
// error (if any) that ended it.
type FastFunc func(c *Conn, r *Request) (served, keep bool, err error)

// Server serves HTTP/1.1 connections. Set the fields before Serve.
type Server struct {
	// Fast is offered every request first (nil: none).
	Fast FastFunc
	// Handler serves the requests Fast leaves (nil: 404 for all of them).
	// It gets the whole body read, and its answer is buffered and sent
	// with a Content-Length (no streaming).
	Handler http.Handler
	// MaxBodyBytes bounds a request body (0: DefaultMaxBodyBytes).
	MaxBodyBytes int64
	// Read deadlines: the wait for a next request on a kept-alive
	// connection, reading a request head, reading a request body; and
	// the bound on writing one answer (or a batch of pipelined answers).
	// Zero: the defaults above.
	IdleTimeout, HeadTimeout, BodyTimeout, WriteTimeout time.Duration
	// A connection the server ends while the client may still be sending
	// (an answer before the whole request was read: a body over the limit,
	// a malformed head or body; requests pipelined behind the last one)
	// is closed the way nginx's lingering close does it: the answer goes
	// out, the write side is shut (the client reads the answer and an end
	// of stream), and what the client still sends is read and dropped
	// until it closes, for at most LingerTimeout or LingerBytes, before the
	// socket is closed. Closing with unread input at once makes the kernel
	// answer with a reset, and a client still writing its body (curl,
	// Python requests, Go's transport) then reports "connection reset by
	// peer" instead of the answer. Zero: the defaults above.
	LingerTimeout time.Duration
	LingerBytes   int64
	// TLSConfig, if set, serves TLS on every accepted connection (its
	// handshake bounded by HeadTimeout, in the connection's goroutine);
	// reads and writes then go through crypto/tls instead of raw system
	// calls. The Handler's requests carry the connection's TLS state
	// (http.Request.TLS); a FastFunc reads it from Conn.TLS. Nil: plain
	// TCP on the raw-syscall path.
	TLSConfig *tls.Config

	mu     sync.Mutex
	ln     net.Listener
	conns  map[net.Conn]*Conn
	closed bool
	// shut mirrors closed for the per-request check (no lock).
	shut atomic.Bool
	wg   sync.WaitGroup
	pool sync.Pool

	// base is every request's context (Conn.Context): cancelled when
	// Shutdown gives up waiting and cuts the connections, so the work of
	// a request in flight (an upstream call, an inference) stops too.
	baseOnce sync.Once
	base     context.Context
	cut      context.CancelFunc
}

func (s *Server) baseContext() context.Context {
	s.baseOnce.Do(func() { s.base, s.cut = context.WithCancel(context.Background()) })
	return s.base
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

func (s *Server) maxBody() int64 {
	if s.MaxBodyBytes > 0 {
		return s.MaxBodyBytes
	}
	return DefaultMaxBodyBytes
}

// Conn is one client connection: its buffered reader and writer (W) and
// the request head being served. A FastFunc writes its answer to W and
// calls Flush.
type Conn struct {
	srv  *Server
	nc   net.Conn
	io   connIO
	br   *bufio.Reader
	W    *bufio.Writer
	head []byte
	hdrs []Header
	req  Request
	// state is connIdle while the connection waits for a next request,
	// connActive while it serves one; Shutdown moves idle connections to
	// connClosing (and only those: see Shutdown).
	state atomic.Int32
	// linger: the connection ends after an answer while the client may
	// still be sending (Server.LingerTimeout).
	linger bool
	// tls is the connection's TLS state after its handshake (nil: plain).
	tls *tls.ConnectionState
}

// TLS is the connection's TLS state (nil on a plain connection): the
// peer's verified certificates under mTLS.
func (c *Conn) TLS() *tls.ConnectionState { return c.tls }

// Connection states (Conn.state).
const (
	connIdle int32 = iota
	connActive
	connClosing
)

// NetConn is the underlying connection.
func (c *Conn) NetConn() net.Conn { return c.nc }

// Flush writes out buffered answers unless more pipelined requests are
// already waiting (then they share one write).
func (c *Conn) Flush() error {
	if c.br.Buffered() > 0 {
		return nil
	}
	return c.W.Flush()
}

// RequestDone records the time a request was answered (written to W): the
// base of the next idle wait's and the write's deadlines, saving clock
// readings.
func (c *Conn) RequestDone(now time.Time) { c.io.now = now }

// Closing reports whether the server is shutting down: an answer written
// now should say Connection: close (and the FastFunc return keep=false),
// so the client sends its next request elsewhere.
func (c *Conn) Closing() bool { return c.srv.shut.Load() }

// Context is the context a request's work runs under: cancelled when the
// server's Shutdown runs out of time and cuts the connections in flight.
// (It is not cancelled when a client goes away: the server notices that
// only when it writes.)
func (c *Conn) Context() context.Context { return c.srv.baseContext() }

// Refuse marks the connection to end after the answer being written, with
// a lingering close: for an answer given without reading the request's
// body (e.g. a load-shedding 503). The FastFunc then returns keep=false.
func (c *Conn) Refuse() { c.linger = true }

// AnswerError answers a request whose body could not be read (a
// *StatusError from ReadBody) with its status and closes; for a client
// that left it writes nothing. Earlier pipelined answers still buffered go
// out first. The FastFunc then returns keep=false.
//
// The rest of the body is unread: the connection closes with a lingering
// close (Server.LingerTimeout), so a client still sending it reads the
// answer instead of a reset.
func (c *Conn) AnswerError(err error) {
	var se *StatusError
	if errors.As(err, &se) {
		WriteError(c.W, se.Status, se.Msg, true)
		c.linger = true
	}
	c.W.Flush()
}

// Serve accepts connections on l until Shutdown; it returns
// http.ErrServerClosed after Shutdown.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		l.Close()
		return http.ErrServerClosed
	}
	s.ln = l
	s.conns = map[net.Conn]*Conn{}
	s.mu.Unlock()
	var acc lifecycle.Acceptor
	closed := func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.closed
	}
	for {
		c, err := acc.Accept(l, closed)
		if err != nil {
			return err
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return http.ErrServerClosed
		}
		if s.TLSConfig != nil {
			// The records go through raw system calls (rawio.NetConn)
			// below crypto/tls, as plain connections' bytes do.
			c = tls.Server(rawio.NetConn(c), s.TLSConfig)
		}
		conn := s.newConn(c)
		s.conns[c] = conn
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(conn)
	}
}

// Shutdown stops accepting, closes idle connections (kept-alive ones and
// those that never sent a request) at once and the others after the
// request they are serving (the Handler's answers then say Connection:
// close), and waits (until ctx ends) for connections to finish; then it
// closes the rest.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	s.shut.Store(true)
	if s.ln != nil {
		s.ln.Close()
	}
	// Wake readers blocked waiting for a next request: they leave. Only
	// idle ones: a connection reading a request's head or body keeps its
	// read deadline, so a request in flight (a slow upload too) finishes.
	// A connection that goes idle later sees shut before it waits.
	for nc, c := range s.conns {
		if c.state.CompareAndSwap(connIdle, connClosing) {
			nc.SetReadDeadline(time.Now())
		}
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.baseContext()
		s.cut()
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		<-done
		return ctx.Err()
	}
}

// newConn takes a Conn from the pool for nc (idle: no request yet).
func (s *Server) newConn(nc net.Conn) *Conn {
	c, _ := s.pool.Get().(*Conn)
	if c == nil {
		c = &Conn{br: bufio.NewReaderSize(nil, 16<<10), W: bufio.NewWriterSize(nil, 16<<10)}
	}
	c.srv, c.nc, c.linger, c.tls = s, nc, false, nil
	c.state.Store(connIdle)
	return c
}

func (s *Server) serveConn(c *Conn) {
	defer s.wg.Done()
	nc := c.nc
	if tc, ok := nc.(interface{ SetNoDelay(bool) error }); ok { // TCP, or a wrapper embedding it
		tc.SetNoDelay(true) // Go's default already; kept for other dialers' sockets
	}
	if tc, ok := nc.(*tls.Conn); ok && !s.handshake(c, tc) {
		s.mu.Lock()
		delete(s.conns, nc)
		s.mu.Unlock()
		nc.Close()
		c.nc = nil
		s.pool.Put(c)
		return
	}
	c.io.reset(nc, orDefault(s.WriteTimeout, DefaultWriteTimeout))
	c.br.Reset(&c.io)
	c.W.Reset(&c.io)
	defer func() {
		// Answers to pipelined requests may still be buffered when a later
		// request ends the connection (closed mid-body): send them.
		if c.W.Flush() == nil && (c.linger || c.br.Buffered() > 0) {
			s.lingerClose(c)
		}
		nc.Close()
		s.mu.Lock()
		delete(s.conns, nc)
		s.mu.Unlock()
		c.br.Reset(nil)
		c.W.Reset(nil)
		c.io.reset(nil, 0)
		c.nc, c.req = nil, Request{}
		if cap(c.head) <= MaxHeaderBytes {
			s.pool.Put(c)
		}
	}()
	idle, headT := orDefault(s.IdleTimeout, DefaultIdleTimeout), orDefault(s.HeadTimeout, DefaultHeadTimeout)
	var y yielder
	for {
		// Idle first, then the check: a Shutdown that has not seen this
		// connection idle has set shut before (Shutdown).
		c.state.Store(connIdle)
		if s.shut.Load() {
			return
		}
		if c.br.Buffered() == 0 {
			yielded := y.before()
			c.io.readPhase(idle, true)
			waits := c.io.waits
			if _, err := c.br.Peek(1); err != nil {
				return
			}
			y.after(yielded, c.io.waits != waits)
		}
		if !c.state.CompareAndSwap(connIdle, connActive) {
			// Shutdown took it as idle (and set its read deadline) just as
			// a request arrived: leave it unanswered, as a refused
			// connection, but let an answer sent before it arrive.
			c.linger = true
			return
		}
		c.io.readPhase(headT, false)
		keep, err := s.serveOne(c)
		if err != nil || !keep {
			return
		}
	}
}

// handshake runs a TLS connection's handshake within HeadTimeout; it
// reports whether the connection is to be served.
func (s *Server) handshake(c *Conn, tc *tls.Conn) bool {
	ctx, cancel := context.WithTimeout(context.Background(), orDefault(s.HeadTimeout, DefaultHeadTimeout))
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		return false
	}
	tc.SetDeadline(time.Time{})
	cs := tc.ConnectionState()
	c.tls = &cs
	return true
}

// lingerClose shuts the connection's write side after its last answer and
// reads (and drops) what the client still sends until it closes, for at
// most LingerTimeout or LingerBytes; the caller then closes the socket
// (Server.LingerTimeout).
func (s *Server) lingerClose(c *Conn) {
	cw, ok := c.nc.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil {
		return
	}
	n := s.LingerBytes
	if n <= 0 {
		n = DefaultLingerBytes
	}
	// One deadline for the whole linger, armed at its first socket read.
	c.io.readPhase(orDefault(s.LingerTimeout, DefaultLingerTimeout), false)
	c.br.Discard(int(n))
}

// yielder decides whether a connection's goroutine yields (runtime.Gosched)
// before reading its next request. On a busy server (many connections, each
// client sending its next request as soon as it has an answer) a yield lets
// the other connections run first, and by the time this one reads, its
// request has usually arrived: the read that would have found nothing (a
// system call, a park and a netpoller wake-up) is saved. On a quiet server
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

// serveOne serves one request; it reports whether the connection stays open.
func (s *Server) serveOne(c *Conn) (bool, error) {
	r, err := c.readHead()
	if err != nil {
		if !errors.Is(err, io.EOF) && !IsTimeout(err) {
			status, msg := http.StatusBadRequest, err.Error()
			var se *StatusError
			if errors.As(err, &se) {
				status = se.Status
			}
			WriteError(c.W, status, msg, true)
			c.W.Flush()
			// The rest of the head and any body are unread.
			c.linger = true
		}
		return false, err
	}
	// The body (if any) must arrive within the body timeout; nothing reads
	// the connection after it until the next request's idle wait.
	c.io.readPhase(orDefault(s.BodyTimeout, DefaultBodyTimeout), false)
	if s.Fast != nil {
		if served, keep, err := s.Fast(c, r); served {
			return keep, err
		}
	}
	return s.handle(c, r)
}

// handle serves a request through the http.Handler.
func (s *Server) handle(c *Conn, r *Request) (bool, error) {
	body, err := c.ReadBody(r, nil)
	if err != nil {
		c.AnswerError(err)
		return false, err
	}
	target := string(r.Target)
	u, err := url.ParseRequestURI(target)
	if err != nil {
		// The request was framed correctly (its body is read): answer and
		// keep the connection.
		WriteError(c.W, http.StatusBadRequest, fmt.Sprintf("bad request target %q: %v", target, err), r.Close)
		return !r.Close, c.Flush()
	}
	hdr := make(http.Header, len(r.Headers))
	for _, h := range r.Headers {
		hdr.Add(string(h.Name), string(h.Value))
	}
	req := (&http.Request{
		Method: string(r.Method), URL: u, RequestURI: target, Proto: string(r.Proto), ProtoMajor: 1, ProtoMinor: 1,
		Header: hdr, Body: io.NopCloser(bytes.NewReader(body)), ContentLength: int64(len(body)),
		Host: hdr.Get("Host"), RemoteAddr: c.nc.RemoteAddr().String(), TLS: c.tls,
	}).WithContext(s.baseContext())
	if r.Proto[len(r.Proto)-1] == '0' {
		req.ProtoMinor = 0
	}
	if s.Handler == nil {
		WriteError(c.W, http.StatusNotFound, "no such endpoint: "+string(r.Method)+" "+u.Path, r.Close)
		return !r.Close, c.Flush()
	}
	w := &bufferedWriter{header: http.Header{}}
	s.Handler.ServeHTTP(w, req)
	// Shutting down: this is the connection's last answer; say so, so the
	// client does not send another request on it.
	closing := r.Close || s.shut.Load()
	if w.status == 0 {
		w.status = http.StatusOK
	}
	c.W.WriteString("HTTP/1.1 ")
	c.W.WriteString(strconv.Itoa(w.status))
	c.W.WriteByte(' ')
	c.W.WriteString(http.StatusText(w.status))
	c.W.WriteString("\r\n")
	w.header.Del("Content-Length")
	w.header.Del("Connection")
	w.header.Write(c.W)
	if closing {
		c.W.WriteString("Connection: close\r\n")
	}
	fmt.Fprintf(c.W, "Content-Length: %d\r\n\r\n", w.buf.Len())
	if !bytes.Equal(r.Method, []byte("HEAD")) {
		c.W.Write(w.buf.Bytes())
	}
	return !closing, c.Flush()
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
