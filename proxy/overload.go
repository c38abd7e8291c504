package proxy

import (
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchyard-dev/switchyard/oip"
)

// Overload protection, proxy-wide (the per-version concurrency limit is
// the pipeline's, fallback.Limiter):
//
//   - a budget for the bytes of request bodies held at once, REST and gRPC
//     alike, inflated bytes counted (Config.MaxBufferedBytes, default 256
//     MiB). A REST request whose Content-Length does not fit is answered
//     503 with Retry-After before its body is read, and the connection
//     closes (lingering, so the client reads the answer); a body that
//     grows past it (chunked, or inflating) is refused once read. A gRPC
//     message is counted once grpc-go has read it (its size is bounded by
//     MaxBodyBytes and the connection cap).
//   - a cap on connections per listener (Config.MaxConnections, default
//     4096): past it, new connections wait in the kernel's accept queue.

// DefaultMaxBufferedBytes is Config.MaxBufferedBytes's default.
const DefaultMaxBufferedBytes = 256 << 20

// DefaultMaxConnections is Config.MaxConnections's default.
const DefaultMaxConnections = 4096

// byteBudget counts the request bytes held by requests in flight.
type byteBudget struct {
	limit int64
	used  atomic.Int64
}

// take reserves n bytes; false (nothing reserved) when they do not fit.
func (b *byteBudget) take(n int64) bool {
	if n <= 0 {
		return true
	}
	if b.used.Add(n) > b.limit {
		b.used.Add(-n)
		return false
	}
	return true
}

// give returns n reserved bytes.
func (b *byteBudget) give(n int64) {
	if n > 0 {
		b.used.Add(-n)
	}
}

// overBudget is the answer to a request that does not fit the budget.
func (b *byteBudget) overBudget(n int64) *oip.Error {
	e := oip.Errorf(oip.Unavailable, "the proxy is holding %d bytes of request bodies (limit %d) and cannot take %d more now; retry shortly",
		b.used.Load(), b.limit, n)
	e.RetryAfter = overloadRetryAfter
	return e
}

// overloadRetryAfter is what an overload answer (shed, or a backend's
// queue rejection passed on) tells the client to wait: REST Retry-After,
// gRPC UNAVAILABLE with a RetryInfo detail.
const overloadRetryAfter = time.Second

// retryAfterHeader is the REST header line of an overload answer.
const retryAfterHeader = "Retry-After: 1\r\n"

// limitListener caps the connections l hands out at once: past max,
// Accept waits for one to close (new connections wait in the kernel's
// accept queue). Accepted TCP connections keep their methods (CloseWrite
// for the lingering close, SyscallConn for raw I/O).
func limitListener(l net.Listener, max int) net.Listener {
	if max <= 0 {
		return l
	}
	return &capListener{Listener: l, slots: make(chan struct{}, max), done: make(chan struct{})}
}

type capListener struct {
	net.Listener
	slots     chan struct{}
	done      chan struct{} // closed by Close: a waiting Accept returns
	closeOnce sync.Once
}

func (l *capListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

func (l *capListener) Accept() (net.Conn, error) {
	select {
	case l.slots <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	release := func() { <-l.slots }
	if tc, ok := c.(*net.TCPConn); ok {
		return &cappedTCPConn{TCPConn: tc, release: release}, nil
	}
	return &cappedConn{Conn: c, release: release}, nil
}

// cappedTCPConn frees its slot on the first Close; its I/O is the TCP
// connection's own (RawTCPConn lets internal/rawio use the socket).
type cappedTCPConn struct {
	*net.TCPConn
	once    sync.Once
	release func()
}

func (c *cappedTCPConn) RawTCPConn() *net.TCPConn { return c.TCPConn }

func (c *cappedTCPConn) Close() error {
	err := c.TCPConn.Close()
	c.once.Do(c.release)
	return err
}

type cappedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *cappedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

func (p *Proxy) shed(reason string) {
	p.metrics.Shed.WithLabelValues(reason).Inc()
}
