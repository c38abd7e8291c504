package h2

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/switchyard-dev/switchyard/internal/backoff"
	"github.com/switchyard-dev/switchyard/internal/rawio"
)

// DefaultMaxCallRecvMsgSize is the largest answer a Client takes, as
// grpc-go's client default.
const DefaultMaxCallRecvMsgSize = 4 << 20

// Client makes unary gRPC calls to one address over one HTTP/2 connection
// (h2c with prior knowledge, or TLS with ALPN h2) with multiplexed
// streams: the caller
// writes its HEADERS and DATA itself (one write system call, shared when
// calls are written at once), one goroutine per connection reads the
// answers and hands each to its caller. A connection that fails or is
// going away (GOAWAY) is replaced on the next call. Errors are gRPC
// statuses as grpc-go's client gives them: UNAVAILABLE for a connection
// that cannot be made or fails, DEADLINE_EXCEEDED or CANCELLED from the
// context (the stream reset with CANCEL), the server's status otherwise.
type Client struct {
	Addr string
	// TLS, when set, dials TLS (ALPN h2; ServerName defaults to Addr's
	// host); a server that does not negotiate h2 is a dial failure.
	TLS *tls.Config
	// Windows advertised (zero: DefaultStreamWindow, DefaultConnWindow)
	// and the largest answer (zero: DefaultMaxCallRecvMsgSize).
	StreamWindow, ConnWindow int32
	MaxRecvMsgSize           int
	// DialTimeout bounds a connection's dial and preface (zero: 20 s).
	DialTimeout time.Duration
	// Redial bounds how soon a connection is dialled again after a dial
	// failed: calls in between fail at once with UNAVAILABLE naming the
	// failure, as grpc-go's client does in TRANSIENT_FAILURE (zero:
	// from DefaultRedialMin doubling to DefaultRedialMax, jittered).
	Redial backoff.Backoff

	mu      sync.Mutex
	cc      *clientConn
	closed  bool
	dialing chan struct{} // closed when the dial in progress ends
	dialErr error         // the last dial's failure
	downTil time.Time     // no dial before this, after dialErr
}

// The defaults of Client.Redial.
const (
	DefaultRedialMin = 100 * time.Millisecond
	DefaultRedialMax = 5 * time.Second
)

// Close closes the connection; calls in flight fail with UNAVAILABLE.
func (c *Client) Close() {
	c.mu.Lock()
	c.closed = true
	cc := c.cc
	c.cc = nil
	c.mu.Unlock()
	if cc != nil {
		cc.fail(errors.New("client closed"))
	}
}

// conn is the connection to use, dialled if needed. One dial runs at a
// time, in a goroutine of its own: the calls that need it wait for it or
// for their own context, whichever ends first (a black-holed address holds
// no caller past its deadline), and a failed dial makes the calls until
// the next one (Redial) fail at once.
func (c *Client) conn(ctx context.Context) (*clientConn, error) {
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, status.Error(codes.Unavailable, "grpc: the client connection is closing")
		}
		if cc := c.cc; cc != nil && cc.usable() {
			c.mu.Unlock()
			return cc, nil
		}
		if c.dialing == nil {
			if c.dialErr != nil && time.Now().Before(c.downTil) {
				err := c.dialErr
				c.mu.Unlock()
				return nil, status.Errorf(codes.Unavailable, "connection error: desc = %q", err.Error())
			}
			c.dialing = make(chan struct{})
			go c.redial(c.dialing)
		}
		wait := c.dialing
		c.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
}

// redial dials a connection and publishes it, or the failure.
func (c *Client) redial(done chan struct{}) {
	cc, err := c.dial(context.Background())
	c.mu.Lock()
	defer c.mu.Unlock()
	defer close(done)
	c.dialing = nil
	if c.Redial.Initial == 0 {
		c.Redial = backoff.Backoff{Initial: DefaultRedialMin, Max: DefaultRedialMax, Jitter: true}
	}
	if err != nil {
		c.dialErr, c.downTil = err, time.Now().Add(c.Redial.Next())
		return
	}
	c.dialErr = nil
	c.Redial.Reset()
	if c.closed {
		cc.fail(errors.New("client closed"))
		return
	}
	c.cc = cc
}

func (c *Client) dial(ctx context.Context) (*clientConn, error) {
	d := orDefault(c.DialTimeout, 20*time.Second)
	dctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var dialer net.Dialer
	nc, err := dialer.DialContext(dctx, "tcp", c.Addr)
	if err != nil {
		return nil, err
	}
	conn := rawio.NetConn(nc)
	if c.TLS != nil {
		if conn, err = c.handshake(dctx, conn); err != nil {
			nc.Close()
			return nil, err
		}
	}
	cc := &clientConn{nc: conn, tcp: nc, streams: map[uint32]*call{}, nextID: 1,
		peerMaxFrame: 16384, peerInitWindow: 65535, sendWindow: 65535, peerMaxStreams: 1<<32 - 1, // unlimited until its SETTINGS say
		streamWindow: orDefault(c.StreamWindow, DefaultStreamWindow),
		connWindow:   orDefault(c.ConnWindow, DefaultConnWindow),
		maxMsg:       orDefault(c.MaxRecvMsgSize, DefaultMaxCallRecvMsgSize),
		authority:    c.Addr,
	}
	cc.cond.L = &cc.mu
	cc.br = bufio.NewReaderSize(cc.nc, 32<<10)
	cc.bw = bufio.NewWriterSize(cc.nc, 32<<10)
	cc.fr = http2.NewFramer(cc.bw, cc.br)
	cc.fr.SetReuseFrames()
	cc.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	cc.fr.MaxHeaderListSize = DefaultMaxHeaderListSize
	cc.henc = hpack.NewEncoder(&cc.hbuf)
	if dl, ok := dctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	cc.bw.WriteString(http2.ClientPreface)
	cc.fr.WriteSettings(
		http2.Setting{ID: http2.SettingEnablePush, Val: 0},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: uint32(cc.streamWindow)},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: DefaultMaxHeaderListSize},
	)
	if cc.connWindow > 65535 {
		cc.fr.WriteWindowUpdate(0, uint32(cc.connWindow-65535))
	}
	if err := cc.bw.Flush(); err != nil {
		nc.Close()
		return nil, err
	}
	// The server's SETTINGS come first.
	f, err := cc.fr.ReadFrame()
	if err != nil {
		nc.Close()
		return nil, err
	}
	sf, ok := f.(*http2.SettingsFrame)
	if !ok || sf.IsAck() {
		nc.Close()
		return nil, errors.New("the server did not start with SETTINGS")
	}
	if err := cc.settings(sf); err != nil {
		nc.Close()
		return nil, err
	}
	nc.SetDeadline(time.Time{})
	go cc.readLoop()
	return cc, nil
}

// handshake runs the TLS handshake on conn, asking for h2.
func (c *Client) handshake(ctx context.Context, conn net.Conn) (net.Conn, error) {
	cfg := c.TLS.Clone()
	cfg.NextProtos = []string{"h2"}
	if cfg.ServerName == "" {
		host, _, err := net.SplitHostPort(c.Addr)
		if err != nil {
			host = c.Addr
		}
		cfg.ServerName = host
	}
	tc := tls.Client(conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	if p := tc.ConnectionState().NegotiatedProtocol; p != "h2" {
		return nil, fmt.Errorf("tls: the server did not negotiate HTTP/2 (ALPN %q): not a gRPC server", p)
	}
	return tc, nil
}

// clientConn is one connection; mu guards all but the read side.
type clientConn struct {
	nc        net.Conn // the connection (TLS over tcp, or tcp)
	tcp       net.Conn
	br        *bufio.Reader
	bw        *bufio.Writer
	fr        *http2.Framer
	authority string

	mu      sync.Mutex
	cond    sync.Cond // window updates, stream slots, failure
	henc    *hpack.Encoder
	hbuf    hbuffer
	writers atomic.Int32 // callers writing or waiting to (the last one flushes)
	waiting int          // writers waiting for a window or a stream slot (mu)
	streams map[uint32]*call
	nextID  uint32
	err     error // the connection failed (calls get UNAVAILABLE)
	goAway  bool

	peerMaxFrame    uint32
	peerInitWindow  int32
	peerMaxStreams  uint32
	sendWindow      int64
	recvConnUnacked int32
	streamWindow    int32
	connWindow      int32
	maxMsg          int
}

// call is one unary call's stream.
type call struct {
	id         uint32
	sendWindow int64
	recvWindow int32
	unacked    int32
	headers    bool // response HEADERS seen
	httpStatus int
	buf        []byte
	st         *status.Status
	trailer    metadata.MD
	err        error // transport: reset, connection failed
	refused    bool  // never processed (REFUSED_STREAM, past GOAWAY): safe to retry
	done       chan struct{}
}

func (cc *clientConn) usable() bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.err == nil && !cc.goAway && cc.nextID < 1<<31-1
}

// Invoke makes a unary call: req is the message's bytes, md the request
// metadata (the outgoing metadata of ctx is added); it returns the
// answer's bytes.
func (c *Client) Invoke(ctx context.Context, method string, req []byte) ([]byte, error) {
	for attempt := 0; ; attempt++ {
		cc, err := c.conn(ctx)
		if err != nil {
			return nil, err
		}
		resp, retry, err := cc.invoke(ctx, method, req)
		if retry && attempt < 2 {
			continue // refused before processing: once more on a fresh connection
		}
		return resp, err
	}
}

func (cc *clientConn) invoke(ctx context.Context, method string, req []byte) ([]byte, bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, false, status.FromContextError(err).Err()
	}
	cl := &call{done: make(chan struct{}), recvWindow: cc.streamWindow}
	cc.writers.Add(1)
	cc.mu.Lock()
	for cc.err == nil && !cc.goAway && uint32(len(cc.streams)) >= cc.peerMaxStreams {
		// What others left for the last writer goes out before we wait.
		cc.flushLocked()
		cc.waiting++
		cc.cond.Wait()
		cc.waiting--
	}
	if cc.err != nil || cc.goAway {
		retry := cc.goAway && cc.err == nil
		err := cc.err
		cc.writers.Add(-1)
		cc.mu.Unlock()
		if retry {
			return nil, true, nil
		}
		return nil, false, unavailable(err)
	}
	cl.id = cc.nextID
	cc.nextID += 2
	cl.sendWindow = int64(cc.peerInitWindow)
	cc.streams[cl.id] = cl
	timeout := ""
	if dl, ok := ctx.Deadline(); ok {
		timeout = encodeTimeout(time.Until(dl))
	}
	md, _ := metadata.FromOutgoingContext(ctx)
	cc.writeHeadersLocked(cl.id, false, func(enc func(string, string)) {
		enc(":method", "POST")
		enc(":scheme", "http")
		enc(":path", method)
		enc(":authority", cc.authority)
		enc("content-type", "application/grpc")
		enc("te", "trailers")
		if timeout != "" {
			enc("grpc-timeout", timeout)
		}
		mdFields(enc, md)
	})
	msg := make([]byte, 5+len(req))
	msg[1], msg[2], msg[3], msg[4] = byte(len(req)>>24), byte(len(req)>>16), byte(len(req)>>8), byte(len(req))
	copy(msg[5:], req)
	cc.writeDataLocked(cl, msg)
	if cc.writers.Add(-1) == 0 || cc.waiting > 0 || cc.bw.Available() < 1024 {
		cc.flushLocked()
	}
	cc.mu.Unlock()
	select {
	case <-cl.done:
	case <-ctx.Done():
		cc.mu.Lock()
		if cc.streams[cl.id] == cl {
			delete(cc.streams, cl.id)
			cc.fr.WriteRSTStream(cl.id, http2.ErrCodeCancel)
			cc.flushLocked()
			cc.cond.Broadcast()
		}
		cc.mu.Unlock()
		return nil, false, status.FromContextError(ctx.Err()).Err()
	}
	return cl.result(cc.maxMsg)
}

func unavailable(err error) error {
	if err == nil {
		err = io.ErrUnexpectedEOF
	}
	return status.Errorf(codes.Unavailable, "error reading from server: %v", err)
}

// result is the call's answer or its error.
func (cl *call) result(maxMsg int) ([]byte, bool, error) {
	if cl.refused {
		return nil, true, nil
	}
	if cl.err != nil {
		return nil, false, cl.err
	}
	if cl.st == nil {
		return nil, false, status.Error(codes.Internal, "server closed the stream without sending trailers")
	}
	if cl.st.Code() != codes.OK {
		return nil, false, cl.st.Err()
	}
	b := cl.buf
	if len(b) < 5 {
		return nil, false, status.Error(codes.Internal, "grpc: the answer has no message")
	}
	if b[0] != 0 {
		return nil, false, status.Error(codes.Internal, "grpc: a compressed answer (none was asked for)")
	}
	n := int(uint32(b[1])<<24 | uint32(b[2])<<16 | uint32(b[3])<<8 | uint32(b[4]))
	if n > maxMsg {
		return nil, false, status.Errorf(codes.ResourceExhausted, "grpc: received message larger than max (%d vs. %d)", n, maxMsg)
	}
	if len(b) != 5+n {
		return nil, false, status.Error(codes.Internal, "grpc: the answer's message is truncated or followed by another")
	}
	return b[5:], false, nil
}

func (cc *clientConn) writeHeadersLocked(id uint32, end bool, fields func(enc func(name, value string))) {
	writeHeaderBlock(cc.fr, &cc.hbuf, cc.henc, cc.peerMaxFrame, id, end, fields)
}

// writeDataLocked writes the message with END_STREAM within the windows,
// waiting for WINDOW_UPDATE (mu released) when they are spent.
func (cc *clientConn) writeDataLocked(cl *call, data []byte) {
	for {
		if cc.err != nil || cc.streams[cl.id] != cl {
			return
		}
		n := min(int64(len(data)), int64(cc.peerMaxFrame), cl.sendWindow, cc.sendWindow)
		if n <= 0 && len(data) > 0 {
			// As the server's writers: while we wait, the others flush
			// their own requests (waiting).
			cc.flushLocked()
			cc.waiting++
			cc.cond.Wait()
			cc.waiting--
			continue
		}
		cl.sendWindow -= n
		cc.sendWindow -= n
		cc.fr.WriteData(cl.id, int(n) == len(data), data[:n])
		data = data[n:]
		if len(data) == 0 {
			return
		}
	}
}

func (cc *clientConn) flushLocked() {
	if cc.err != nil {
		cc.bw.Reset(io.Discard)
		return
	}
	if err := cc.bw.Flush(); err != nil {
		cc.failLocked(err)
	}
}

// fail ends the connection: calls in flight get UNAVAILABLE.
func (cc *clientConn) fail(err error) {
	cc.mu.Lock()
	cc.failLocked(err)
	cc.mu.Unlock()
}

func (cc *clientConn) failLocked(err error) {
	if cc.err != nil {
		return
	}
	cc.err = err
	cc.tcp.Close() // not a TLS close_notify: that write could wait, under mu
	for id, cl := range cc.streams {
		cl.err = unavailable(err)
		close(cl.done)
		delete(cc.streams, id)
	}
	cc.cond.Broadcast()
}

func (cc *clientConn) readLoop() {
	for {
		f, err := cc.fr.ReadFrame()
		if err != nil {
			cc.fail(err)
			return
		}
		if err := cc.process(f); err != nil {
			cc.mu.Lock()
			var ce connError
			if errors.As(err, &ce) {
				cc.fr.WriteGoAway(0, ce.code, []byte(ce.msg))
				cc.bw.Flush()
			}
			cc.failLocked(err)
			cc.mu.Unlock()
			return
		}
		if cc.br.Buffered() == 0 {
			cc.mu.Lock()
			if cc.bw.Buffered() > 0 {
				cc.flushLocked()
			}
			idle := cc.goAway && len(cc.streams) == 0
			if idle {
				cc.failLocked(errors.New("the server sent GOAWAY"))
			}
			cc.mu.Unlock()
			if idle {
				return
			}
		}
	}
}

func (cc *clientConn) settings(f *http2.SettingsFrame) error {
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return connError{http2.ErrCodeProtocol, err.Error()}
		}
		switch s.ID {
		case http2.SettingMaxFrameSize:
			cc.peerMaxFrame = s.Val
		case http2.SettingMaxConcurrentStreams:
			cc.peerMaxStreams = s.Val
		case http2.SettingInitialWindowSize:
			delta := int64(s.Val) - int64(cc.peerInitWindow)
			cc.peerInitWindow = int32(s.Val)
			for _, cl := range cc.streams {
				cl.sendWindow += delta
			}
		case http2.SettingHeaderTableSize:
			cc.henc.SetMaxDynamicTableSizeLimit(s.Val)
		}
		return nil
	})
	if err != nil {
		return err
	}
	cc.fr.WriteSettingsAck()
	cc.cond.Broadcast()
	return nil
}

func (cc *clientConn) process(f http2.Frame) error {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	switch f := f.(type) {
	case *http2.SettingsFrame:
		if !f.IsAck() {
			return cc.settings(f)
		}
	case *http2.PingFrame:
		if !f.IsAck() {
			cc.fr.WritePing(true, f.Data)
		}
	case *http2.WindowUpdateFrame:
		if f.StreamID == 0 {
			cc.sendWindow += int64(f.Increment)
		} else if cl := cc.streams[f.StreamID]; cl != nil {
			cl.sendWindow += int64(f.Increment)
		}
		cc.cond.Broadcast()
	case *http2.GoAwayFrame:
		cc.goAway = true
		for id, cl := range cc.streams {
			if id > f.LastStreamID {
				cl.refused = true
				cc.endLocked(cl)
			}
		}
		cc.cond.Broadcast()
	case *http2.RSTStreamFrame:
		if cl := cc.streams[f.StreamID]; cl != nil {
			switch f.ErrCode {
			case http2.ErrCodeRefusedStream:
				cl.refused = true
			case http2.ErrCodeNo:
				if cl.st != nil {
					break // answered: the server only stops our sending
				}
				fallthrough
			default:
				cl.err = status.Errorf(rstCode(f.ErrCode), "stream terminated by RST_STREAM with error code: %v", f.ErrCode)
			}
			cc.endLocked(cl)
		}
	case *http2.MetaHeadersFrame:
		cl := cc.streams[f.StreamID]
		if cl == nil {
			return nil
		}
		cc.headersLocked(cl, f)
		if f.StreamEnded() {
			cc.endLocked(cl)
		}
	case *http2.DataFrame:
		n := int32(f.Length)
		cc.recvConnUnacked += n
		if cc.recvConnUnacked >= cc.connWindow/2 {
			cc.fr.WriteWindowUpdate(0, uint32(cc.recvConnUnacked))
			cc.recvConnUnacked = 0
		}
		cl := cc.streams[f.StreamID]
		if cl == nil {
			return nil
		}
		if len(cl.buf)+len(f.Data()) > cc.maxMsg+5 {
			cl.err = status.Errorf(codes.ResourceExhausted, "grpc: received message larger than max (%d vs. %d)", len(cl.buf)+len(f.Data())-5, cc.maxMsg)
			cc.fr.WriteRSTStream(cl.id, http2.ErrCodeCancel)
			cc.endLocked(cl)
			return nil
		}
		cl.buf = append(cl.buf, f.Data()...)
		if !f.StreamEnded() {
			cl.unacked += n
			if cl.unacked >= cc.streamWindow/2 {
				cc.fr.WriteWindowUpdate(cl.id, uint32(cl.unacked))
				cl.unacked = 0
			}
		} else {
			cl.err = status.Error(codes.Internal, "server closed the stream without sending trailers")
			cc.endLocked(cl)
		}
	}
	return nil
}

// rstCode is the status code for a stream reset (grpc-go's mapping).
func rstCode(c http2.ErrCode) codes.Code {
	switch c {
	case http2.ErrCodeCancel:
		return codes.Canceled
	case http2.ErrCodeRefusedStream:
		return codes.Unavailable
	case http2.ErrCodeEnhanceYourCalm:
		return codes.ResourceExhausted
	case http2.ErrCodeInadequateSecurity:
		return codes.PermissionDenied
	}
	return codes.Internal
}

func (cc *clientConn) endLocked(cl *call) {
	if cc.streams[cl.id] != cl {
		return
	}
	delete(cc.streams, cl.id)
	close(cl.done)
	cc.cond.Broadcast()
}

// headersLocked reads response headers or trailers.
func (cc *clientConn) headersLocked(cl *call, f *http2.MetaHeadersFrame) {
	var code, msg, details string
	haveStatus := false
	for _, h := range f.Fields {
		switch h.Name {
		case ":status":
			cl.httpStatus, _ = strconv.Atoi(h.Value)
		case "grpc-status":
			code, haveStatus = h.Value, true
		case "grpc-message":
			msg = decodeGrpcMessage(h.Value)
		case "grpc-status-details-bin":
			details = h.Value
		}
	}
	first := !cl.headers
	cl.headers = true
	if first && cl.httpStatus != 200 && !haveStatus {
		cl.err = status.Errorf(httpCode(cl.httpStatus), "unexpected HTTP status code received from server: %d", cl.httpStatus)
		return
	}
	if !haveStatus {
		if f.StreamEnded() {
			cl.err = status.Error(codes.Internal, "server closed the stream without sending trailers")
		}
		return
	}
	n, err := strconv.Atoi(code)
	if err != nil {
		cl.err = status.Errorf(codes.Internal, "transport: malformed grpc-status: %q", code)
		return
	}
	if details != "" {
		if b, err := decodeBin(details); err == nil {
			p := &spb.Status{}
			if proto.Unmarshal(b, p) == nil && p.Code == int32(n) {
				cl.st = status.FromProto(p)
				return
			}
		}
	}
	cl.st = status.New(codes.Code(n), msg)
}

func httpCode(s int) codes.Code {
	switch s {
	case 400:
		return codes.Internal
	case 401:
		return codes.Unauthenticated
	case 403:
		return codes.PermissionDenied
	case 404:
		return codes.Unimplemented
	case 429, 502, 503, 504:
		return codes.Unavailable
	}
	return codes.Unknown
}

func decodeGrpcMessage(m string) string {
	if !strings.Contains(m, "%") {
		return m
	}
	if s, err := url.PathUnescape(m); err == nil {
		return s
	}
	return m
}

// encodeTimeout is grpc-timeout for d (at most 8 digits).
func encodeTimeout(d time.Duration) string {
	if d <= 0 {
		return "0n"
	}
	for _, u := range []struct {
		d time.Duration
		c byte
	}{{time.Nanosecond, 'n'}, {time.Microsecond, 'u'}, {time.Millisecond, 'm'}, {time.Second, 'S'}, {time.Minute, 'M'}, {time.Hour, 'H'}} {
		v := d / u.d
		if d%u.d != 0 {
			v++ // round up: never a shorter deadline... than asked
		}
		if v < 1e8 {
			return strconv.FormatInt(int64(v), 10) + string(u.c)
		}
	}
	return fmt.Sprintf("%dH", 99999999)
}
