package h2

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/internal/lifecycle"
	"github.com/switchyard-dev/switchyard/internal/rawio"
)

// Defaults for the Server's limits.
const (
	DefaultMaxConcurrentStreams = 1000
	DefaultMaxHeaderListSize    = 16 << 10
	DefaultMaxRecvMsgSize       = 4 << 20
	// DefaultStreamWindow and DefaultConnWindow are the receive windows
	// advertised: per stream and for the connection.
	DefaultStreamWindow = 4 << 20
	DefaultConnWindow   = 16 << 20
	DefaultHeadTimeout  = 10 * time.Second
	DefaultWriteTimeout = time.Minute
	// DefaultWorkers is the number of worker goroutines kept for fast
	// streams (more start a goroutine each while busy).
	DefaultWorkers = 128
)

// Call is one unary call on a fast stream.
type Call struct {
	// Method is the :path ("/package.Service/Method").
	Method string
	// MD is the request metadata as grpc-go's server gives it (lower-case
	// keys, -bin values decoded, :authority and user-agent included); the
	// FastFunc's context carries it too (metadata.FromIncomingContext).
	MD metadata.MD
	// Msg is the request message (uncompressed); the FastFunc owns it.
	Msg []byte
	// TLS is the connection's TLS state (nil: plain).
	TLS *tls.ConnectionState
}

// Answer is a fast stream's answer: the message (when Status is OK or
// nil), header and trailer metadata and the status.
type Answer struct {
	Msg     []byte
	Header  metadata.MD
	Trailer metadata.MD
	Status  *status.Status
}

// FastFunc serves a unary call. ctx ends when the client cancels or the
// call's deadline (grpc-timeout) passes.
type FastFunc func(ctx context.Context, c *Call) Answer

// Server serves HTTP/2 (gRPC) connections. Set the fields before Serve.
type Server struct {
	// Route is the FastFunc for a method (:path), nil for a method left to
	// Fallback. Nil: none.
	Route func(method string) FastFunc
	// Fallback serves every other stream (a *grpc.Server). Nil: they get
	// UNIMPLEMENTED.
	Fallback http.Handler
	// Limits; zero: the defaults above.
	MaxConcurrentStreams uint32
	MaxHeaderListSize    uint32
	MaxRecvMsgSize       int
	StreamWindow         int32
	ConnWindow           int32
	// HeadTimeout bounds a TLS handshake and the client preface;
	// WriteTimeout one write to the socket.
	HeadTimeout, WriteTimeout time.Duration
	// Workers is the number of goroutines kept for fast streams.
	Workers int
	// TLSConfig, if set, serves TLS (ALPN "h2") on every connection.
	TLSConfig *tls.Config

	mu       sync.Mutex
	ln       net.Listener
	conns    map[*conn]struct{}
	closed   bool
	wg       sync.WaitGroup
	work     chan *stream
	workOnce sync.Once
	idleW    atomic.Int32
}

func orDefault[T int | int32 | uint32 | time.Duration](v, def T) T {
	if v > 0 {
		return v
	}
	return def
}

// Serve accepts connections on l until Shutdown or Close; it returns
// http.ErrServerClosed then.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		l.Close()
		return http.ErrServerClosed
	}
	s.ln = l
	if s.conns == nil {
		s.conns = map[*conn]struct{}{}
	}
	if s.work == nil {
		s.work = make(chan *stream)
	}
	s.mu.Unlock()
	var acc lifecycle.Acceptor
	closed := func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.closed
	}
	for {
		nc, err := acc.Accept(l, closed)
		if err != nil {
			return err
		}
		if s.TLSConfig != nil {
			nc = tls.Server(rawio.NetConn(nc), s.TLSConfig)
		} else {
			nc = rawio.NetConn(nc)
		}
		c := s.newConn(nc)
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			nc.Close()
			return http.ErrServerClosed
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go c.serve()
	}
}

// Shutdown stops accepting, sends every connection a GOAWAY, lets the
// streams in flight finish and closes each connection once it has none;
// when ctx ends first it closes the rest.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	if s.ln != nil {
		s.ln.Close()
	}
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.goAway(http2.ErrCodeNo, false)
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		s.stopWorkers()
		return nil
	case <-ctx.Done():
		s.Close()
		return ctx.Err()
	}
}

// stopWorkers ends the idle workers once no connection is left (none can
// dispatch any more).
func (s *Server) stopWorkers() {
	s.workOnce.Do(func() {
		s.mu.Lock()
		w := s.work
		s.mu.Unlock()
		if w != nil {
			close(w)
		}
	})
}

// Close closes the listener and every connection at once, and waits for
// their goroutines to end (the FastFuncs running see their contexts end).
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	if s.ln != nil {
		s.ln.Close()
	}
	for c := range s.conns {
		c.nc.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	s.stopWorkers()
	return nil
}

// dispatch runs st's FastFunc on an idle worker, or a new goroutine.
func (s *Server) dispatch(st *stream) {
	select {
	case s.work <- st:
		return
	default:
	}
	go func() {
		st.c.runFast(st)
		if int(s.idleW.Add(1)) > orDefault(s.Workers, DefaultWorkers) {
			s.idleW.Add(-1)
			return
		}
		for st := range s.work {
			s.idleW.Add(-1)
			st.c.runFast(st)
			s.idleW.Add(1)
		}
	}()
}

// conn is one client connection. The reader goroutine (serve) owns the
// read side; mu guards the rest: the framer's writes and the buffered
// writer, the streams, the flow-control windows.
type conn struct {
	srv *Server
	nc  net.Conn
	br  *bufio.Reader
	bw  *bufio.Writer
	fr  *http2.Framer
	tls *tls.ConnectionState

	ctx    context.Context
	cancel context.CancelFunc

	mu       sync.Mutex
	writers  atomic.Int32 // fast answers writing or waiting to (runFast)
	waitingW int          // writers waiting for a window (mu)
	cond     sync.Cond    // signalled on window updates, resets, close
	henc     *hpack.Encoder
	hbuf     hbuffer
	wd       time.Time // write deadline armed
	werr     error     // a write failed: the connection is dead
	dead     bool
	goneA    bool // GOAWAY sent
	// streams open (ours: not yet answered and removed).
	streams map[uint32]*stream
	// lastID is the highest client stream id seen.
	lastID uint32
	// running counts the streams whose FastFunc or Fallback handler has
	// started and not returned.
	running int
	// Send side: the peer's settings and the connection window.
	peerMaxFrame   uint32
	peerInitWindow int32
	sendWindow     int64
	// Receive side: the connection window's unacknowledged credit.
	recvConnUnacked int32
	// Our settings.
	maxStreams   uint32
	streamWindow int32
	connWindow   int32
	maxMsg       int
}

// hbuffer is a bytes buffer the hpack encoder writes into.
type hbuffer struct{ b []byte }

func (h *hbuffer) Write(p []byte) (int, error) { h.b = append(h.b, p...); return len(p), nil }

func (s *Server) newConn(nc net.Conn) *conn {
	c := &conn{srv: s, nc: nc, streams: map[uint32]*stream{},
		peerMaxFrame: 16384, peerInitWindow: 65535, sendWindow: 65535,
		maxStreams:   orDefault(s.MaxConcurrentStreams, DefaultMaxConcurrentStreams),
		streamWindow: orDefault(s.StreamWindow, DefaultStreamWindow),
		connWindow:   orDefault(s.ConnWindow, DefaultConnWindow),
		maxMsg:       orDefault(s.MaxRecvMsgSize, DefaultMaxRecvMsgSize),
	}
	c.cond.L = &c.mu
	c.br = bufio.NewReaderSize(nc, 32<<10)
	c.bw = bufio.NewWriterSize(&deadlineWriter{c: c}, 32<<10)
	c.fr = http2.NewFramer(c.bw, c.br)
	c.fr.SetReuseFrames()
	c.fr.SetMaxReadFrameSize(16384) // SETTINGS_MAX_FRAME_SIZE: the default, not advertised otherwise
	c.fr.MaxHeaderListSize = orDefault(s.MaxHeaderListSize, DefaultMaxHeaderListSize)
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.fr.ReadMetaHeaders.SetMaxStringLength(int(c.fr.MaxHeaderListSize))
	c.henc = hpack.NewEncoder(&c.hbuf)
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c
}

// deadlineWriter writes to the connection with a write deadline re-armed
// lazily (at most once per sixteenth of the timeout).
type deadlineWriter struct{ c *conn }

func (w *deadlineWriter) Write(p []byte) (int, error) {
	c := w.c
	d := orDefault(c.srv.WriteTimeout, DefaultWriteTimeout)
	now := time.Now()
	if c.wd.IsZero() || c.wd.Sub(now) < d-d/16 {
		c.wd = now.Add(d)
		c.nc.SetWriteDeadline(c.wd)
	}
	return c.nc.Write(p)
}

// connError ends the connection with a GOAWAY naming code.
type connError struct {
	code http2.ErrCode
	msg  string
}

func (e connError) Error() string { return fmt.Sprintf("h2: connection error %v: %s", e.code, e.msg) }

func (c *conn) serve() {
	s := c.srv
	defer func() {
		c.close()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		s.wg.Done()
	}()
	headT := orDefault(s.HeadTimeout, DefaultHeadTimeout)
	if tc, ok := c.nc.(*tls.Conn); ok {
		ctx, cancel := context.WithTimeout(context.Background(), headT)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			return
		}
		cs := tc.ConnectionState()
		c.tls = &cs
	}
	c.nc.SetReadDeadline(time.Now().Add(headT))
	var pre [len(http2.ClientPreface)]byte
	if _, err := io.ReadFull(c.br, pre[:]); err != nil || string(pre[:]) != http2.ClientPreface {
		return
	}
	// Our settings, and the connection window raised to ours.
	c.mu.Lock()
	c.fr.WriteSettings(
		http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: c.maxStreams},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: uint32(c.streamWindow)},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: c.fr.MaxHeaderListSize},
	)
	if c.connWindow > 65535 {
		c.fr.WriteWindowUpdate(0, uint32(c.connWindow-65535))
	}
	c.flushLocked()
	c.mu.Unlock()
	f, err := c.fr.ReadFrame()
	if err != nil {
		return
	}
	if sf, ok := f.(*http2.SettingsFrame); !ok || sf.IsAck() {
		c.fatal(connError{http2.ErrCodeProtocol, "the first frame is not SETTINGS"})
		return
	}
	c.nc.SetReadDeadline(time.Time{})
	for {
		if err := c.process(f); err != nil {
			c.fatal(err)
			return
		}
		if c.br.Buffered() == 0 {
			// The batch read is done: what it produced goes out in one write.
			c.mu.Lock()
			if c.bw.Buffered() > 0 {
				c.flushLocked()
			}
			done := c.goneA && len(c.streams) == 0
			c.mu.Unlock()
			if done {
				return
			}
		}
		if f, err = c.fr.ReadFrame(); err != nil {
			c.readError(err)
			return
		}
	}
}

// readError ends the connection after a read that failed: a malformed
// frame gets a GOAWAY naming it.
func (c *conn) readError(err error) {
	if errors.Is(err, http2.ErrFrameTooLarge) {
		c.fatal(connError{http2.ErrCodeFrameSize, err.Error()})
		return
	}
	var ce http2.ConnectionError
	if errors.As(err, &ce) {
		msg := ce.Error()
		if d := c.fr.ErrorDetail(); d != nil {
			msg = d.Error()
		}
		c.fatal(connError{http2.ErrCode(ce), msg})
		return
	}
	var se http2.StreamError
	if errors.As(err, &se) {
		// The Framer reports a stream error only for frames it cannot give
		// back; the connection can't continue reliably past it here.
		c.fatal(connError{se.Code, se.Error()})
	}
}

// fatal sends a GOAWAY for err (a connError) and the connection ends.
func (c *conn) fatal(err error) {
	var ce connError
	if !errors.As(err, &ce) {
		return
	}
	c.mu.Lock()
	if !c.dead {
		c.fr.WriteGoAway(c.lastID, ce.code, []byte(ce.msg))
		c.flushLocked()
	}
	c.mu.Unlock()
}

// close ends the connection: streams in flight are cancelled, writers
// waiting for a window wake up.
func (c *conn) close() {
	c.cancel()
	c.mu.Lock()
	c.dead = true
	for _, st := range c.streams {
		st.resetLocked()
	}
	c.cond.Broadcast()
	c.mu.Unlock()
	c.nc.Close()
}

// goAway sends a GOAWAY (Shutdown: code NO_ERROR); the connection closes
// once its streams are done.
func (c *conn) goAway(code http2.ErrCode, _ bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.goneA || c.dead {
		return
	}
	c.goneA = true
	c.fr.WriteGoAway(c.lastID, code, nil)
	c.flushLocked()
	if len(c.streams) == 0 {
		// Idle: the reader leaves at once.
		c.nc.SetReadDeadline(time.Now())
	}
}

func (c *conn) flushLocked() {
	if c.werr != nil {
		c.bw.Reset(io.Discard)
		return
	}
	if err := c.bw.Flush(); err != nil {
		c.werr = err
		c.nc.Close()
	}
}

// process handles one frame read.
func (c *conn) process(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.SettingsFrame:
		if f.IsAck() {
			return nil
		}
		return c.settings(f)
	case *http2.PingFrame:
		if f.IsAck() {
			return nil
		}
		c.mu.Lock()
		c.fr.WritePing(true, f.Data)
		c.mu.Unlock()
	case *http2.WindowUpdateFrame:
		return c.windowUpdate(f)
	case *http2.MetaHeadersFrame:
		return c.headers(f)
	case *http2.DataFrame:
		return c.data(f)
	case *http2.RSTStreamFrame:
		c.mu.Lock()
		if st := c.streams[f.StreamID]; st != nil {
			st.resetLocked()
			delete(c.streams, f.StreamID)
			c.cond.Broadcast()
			c.doneLocked()
		} else if f.StreamID > c.lastID {
			c.mu.Unlock()
			return connError{http2.ErrCodeProtocol, "RST_STREAM on an idle stream"}
		}
		c.mu.Unlock()
	case *http2.GoAwayFrame:
		// The client leaves: the streams in flight finish; no new ones come.
		c.mu.Lock()
		c.goneA = true
		c.mu.Unlock()
	case *http2.PriorityFrame, *http2.UnknownFrame:
	case *http2.PushPromiseFrame:
		return connError{http2.ErrCodeProtocol, "PUSH_PROMISE from a client"}
	default:
		return connError{http2.ErrCodeProtocol, fmt.Sprintf("unexpected frame %v", f.Header().Type)}
	}
	return nil
}

func (c *conn) settings(f *http2.SettingsFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return connError{http2.ErrCodeProtocol, err.Error()}
		}
		switch s.ID {
		case http2.SettingMaxFrameSize:
			c.peerMaxFrame = s.Val
		case http2.SettingInitialWindowSize:
			delta := int64(s.Val) - int64(c.peerInitWindow)
			c.peerInitWindow = int32(s.Val)
			for _, st := range c.streams {
				st.sendWindow += delta
				if st.sendWindow > 1<<31-1 {
					return connError{http2.ErrCodeFlowControl, "a stream window past 2^31-1"}
				}
			}
			c.cond.Broadcast()
		case http2.SettingHeaderTableSize:
			c.henc.SetMaxDynamicTableSizeLimit(s.Val)
		}
		return nil
	})
	if err != nil {
		return err
	}
	c.fr.WriteSettingsAck()
	return nil
}

func (c *conn) windowUpdate(f *http2.WindowUpdateFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	inc := int64(f.Increment)
	if f.StreamID == 0 {
		c.sendWindow += inc
		if c.sendWindow > 1<<31-1 {
			return connError{http2.ErrCodeFlowControl, "the connection window past 2^31-1"}
		}
	} else if st := c.streams[f.StreamID]; st != nil {
		st.sendWindow += inc
		if st.sendWindow > 1<<31-1 {
			st.resetLocked()
			delete(c.streams, st.id)
			c.fr.WriteRSTStream(st.id, http2.ErrCodeFlowControl)
			c.doneLocked()
		}
	} else if f.StreamID > c.lastID {
		return connError{http2.ErrCodeProtocol, "WINDOW_UPDATE on an idle stream"}
	}
	c.cond.Broadcast()
	return nil
}

// doneLocked: after a stream is removed, a connection shutting down with
// no stream left lets its reader leave.
func (c *conn) doneLocked() {
	if c.goneA && len(c.streams) == 0 {
		c.nc.SetReadDeadline(time.Now())
	}
}

// refuseLocked resets a stream the connection does not take.
func (c *conn) refuseLocked(id uint32, code http2.ErrCode) {
	c.fr.WriteRSTStream(id, code)
}

func (c *conn) headers(f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	if id%2 == 0 {
		return connError{http2.ErrCodeProtocol, "an even stream id from a client"}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if st := c.streams[id]; st != nil {
		// Trailers from the client: the end of its stream.
		if !f.StreamEnded() {
			return connError{http2.ErrCodeProtocol, "HEADERS within a stream"}
		}
		st.endRecvLocked()
		return nil
	}
	if id <= c.lastID {
		return connError{http2.ErrCodeStreamClosed, "HEADERS on a closed stream"}
	}
	c.lastID = id
	if c.goneA {
		c.refuseLocked(id, http2.ErrCodeRefusedStream)
		return nil
	}
	if f.Truncated {
		c.refuseLocked(id, http2.ErrCodeFrameSize) // as grpc-go: header list over the limit
		return nil
	}
	if uint32(len(c.streams)) >= c.maxStreams || uint32(c.running) >= c.maxStreams {
		// (running: handlers of streams the client reset may still be
		// running; a client resetting as fast as it opens does not get
		// more than maxStreams of them at once.)
		c.refuseLocked(id, http2.ErrCodeRefusedStream)
		return nil
	}
	st := &stream{c: c, id: id, sendWindow: int64(c.peerInitWindow), recvWindow: c.streamWindow}
	var method, ctype, encoding, timeout string
	var post bool
	for _, h := range f.Fields {
		switch h.Name {
		case ":path":
			method = h.Value
		case ":method":
			post = h.Value == "POST"
		case "content-type":
			ctype = h.Value
		case "grpc-encoding":
			encoding = h.Value
		case "grpc-timeout":
			timeout = h.Value
		}
	}
	var fast FastFunc
	if c.srv.Route != nil && post && (ctype == "application/grpc" || ctype == "application/grpc+proto") &&
		(encoding == "" || encoding == "identity") {
		fast = c.srv.Route(method)
	}
	// The Framer allocates each MetaHeadersFrame (only DATA frames are
	// reused): the fields stay valid.
	st.fields = f.Fields
	ctx, cancel := c.ctx, context.CancelFunc(nil)
	if d, ok := decodeTimeout(timeout); ok {
		ctx, cancel = context.WithTimeout(ctx, d)
	} else {
		ctx, cancel = context.WithCancel(ctx)
	}
	st.ctx, st.cancel = ctx, cancel
	c.streams[id] = st
	if fast != nil {
		st.fast = fast
		st.method = method
		if f.StreamEnded() {
			st.endRecvLocked()
		}
		return nil
	}
	st.startFallbackLocked(method, f.StreamEnded())
	return nil
}

func (c *conn) data(f *http2.DataFrame) error {
	id := f.StreamID
	n := int32(f.Length) // padding included: it counts against the windows
	c.mu.Lock()
	defer c.mu.Unlock()
	if n > c.connWindow-c.recvConnUnacked {
		return connError{http2.ErrCodeFlowControl, "DATA past the connection window"}
	}
	c.recvConnUnacked += n
	if c.recvConnUnacked >= c.connWindow/2 {
		c.fr.WriteWindowUpdate(0, uint32(c.recvConnUnacked))
		c.recvConnUnacked = 0
	}
	st := c.streams[id]
	if st == nil {
		if id > c.lastID {
			return connError{http2.ErrCodeProtocol, "DATA on an idle stream"}
		}
		// A stream already answered (or reset): its data is dropped.
		return nil
	}
	if st.recvDone {
		c.fr.WriteRSTStream(id, http2.ErrCodeStreamClosed)
		st.resetLocked()
		delete(c.streams, id)
		c.doneLocked()
		return nil
	}
	if n > st.recvWindow {
		c.fr.WriteRSTStream(id, http2.ErrCodeFlowControl)
		st.resetLocked()
		delete(c.streams, id)
		c.doneLocked()
		return nil
	}
	st.recvWindow -= n
	if st.fast != nil {
		st.gatherLocked(f.Data())
		// The message is bounded by the size limit: credit back at once.
		if pad := n - int32(len(f.Data())); pad > 0 {
			st.recvWindow += pad
		}
		if !f.StreamEnded() {
			st.creditLocked(int32(len(f.Data())))
		}
	} else {
		st.body.put(f.Data())
		// Padding is credited now; the data as the handler reads it.
		if pad := n - int32(len(f.Data())); pad > 0 {
			st.creditLocked(pad)
		}
	}
	if f.StreamEnded() {
		st.endRecvLocked()
	}
	return nil
}

// writeHeadersLocked encodes fields and writes them as HEADERS (and
// CONTINUATION frames past the peer's frame size).
func (c *conn) writeHeadersLocked(id uint32, end bool, fields func(enc func(name, value string))) {
	writeHeaderBlock(c.fr, &c.hbuf, c.henc, c.peerMaxFrame, id, end, fields)
}

// writeHeaderBlock encodes fields into buf with enc (whose output is buf)
// and writes the block as HEADERS and, past maxFrame, CONTINUATION frames:
// the server's answers and the client's requests alike.
func writeHeaderBlock(fr *http2.Framer, buf *hbuffer, enc *hpack.Encoder, maxFrame uint32, id uint32, end bool, fields func(enc func(name, value string))) {
	buf.b = buf.b[:0]
	fields(func(name, value string) { enc.WriteField(hpack.HeaderField{Name: name, Value: value}) })
	block := buf.b
	max := int(maxFrame)
	first := true
	for first || len(block) > 0 {
		chunk := block
		if len(chunk) > max {
			chunk = chunk[:max]
		}
		block = block[len(chunk):]
		if first {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: chunk, EndStream: end, EndHeaders: len(block) == 0})
			first = false
		} else {
			fr.WriteContinuation(id, len(block) == 0, chunk)
		}
	}
}

// writeDataLocked writes data as DATA frames within the peer's windows,
// waiting (mu released) for WINDOW_UPDATE when they are spent. It reports
// false if the stream was reset or the connection died meanwhile.
func (c *conn) writeDataLocked(st *stream, data []byte, end bool) bool {
	for {
		if st.reset || c.dead || c.werr != nil {
			return false
		}
		if len(data) == 0 {
			if end {
				c.fr.WriteData(st.id, true, nil)
			}
			return true
		}
		n := min(int64(len(data)), int64(c.peerMaxFrame), st.sendWindow, c.sendWindow)
		if n <= 0 {
			// Out of window: what is buffered goes out, and we wait.
			// While we wait, the other writers flush their own answers
			// (waitingW): we are counted in writers but cannot be the
			// last writer who flushes for them, and their unsent bytes
			// may be what the peer has to see before it opens the window.
			c.flushLocked()
			c.waitingW++
			c.cond.Wait()
			c.waitingW--
			continue
		}
		chunk := data[:n]
		data = data[n:]
		st.sendWindow -= n
		c.sendWindow -= n
		c.fr.WriteData(st.id, end && len(data) == 0, chunk)
		if end && len(data) == 0 {
			return true
		}
	}
}

// runFast serves a fast stream whose message has arrived, on a worker.
func (c *conn) runFast(st *stream) {
	call := &Call{Method: st.method, MD: st.metadata(), Msg: st.msg, TLS: c.tls}
	a := st.fast(metadata.NewIncomingContext(st.ctx, call.MD), call)
	st.cancel()
	// Answers written at once share a write: the last writer flushes
	// (one that waits for a window flushes before it waits).
	c.writers.Add(1)
	c.mu.Lock()
	c.running--
	if !st.reset {
		c.answerLocked(st, a)
		c.finishLocked(st)
	}
	if c.writers.Add(-1) == 0 || c.waitingW > 0 || c.bw.Available() < 1024 {
		c.flushLocked()
	}
	c.mu.Unlock()
}

// answerLocked writes a unary answer: HEADERS, DATA and trailers, or a
// trailers-only answer for an error without header metadata.
func (c *conn) answerLocked(st *stream, a Answer) {
	code := codes.OK
	if a.Status != nil {
		code = a.Status.Code()
	}
	if code != codes.OK && len(a.Header) == 0 {
		c.writeHeadersLocked(st.id, true, func(enc func(string, string)) {
			enc(":status", "200")
			enc("content-type", "application/grpc")
			statusFields(enc, a.Status, a.Trailer)
		})
		return
	}
	c.writeHeadersLocked(st.id, false, func(enc func(string, string)) {
		enc(":status", "200")
		enc("content-type", "application/grpc")
		mdFields(enc, a.Header)
	})
	if code == codes.OK {
		msg := make([]byte, 5+len(a.Msg))
		msg[1], msg[2], msg[3], msg[4] = byte(len(a.Msg)>>24), byte(len(a.Msg)>>16), byte(len(a.Msg)>>8), byte(len(a.Msg))
		copy(msg[5:], a.Msg)
		if !c.writeDataLocked(st, msg, false) {
			return
		}
	}
	c.writeHeadersLocked(st.id, true, func(enc func(string, string)) {
		statusFields(enc, a.Status, a.Trailer)
	})
}

// finishLocked removes an answered stream; one whose client is still
// sending is reset (NO_ERROR), as RFC 9113 §8.1 has it.
func (c *conn) finishLocked(st *stream) {
	if c.streams[st.id] != st {
		return
	}
	delete(c.streams, st.id)
	if !st.recvDone {
		c.fr.WriteRSTStream(st.id, http2.ErrCodeNo)
	}
	st.reset = true
	c.doneLocked()
}
