// Package rawio reads and writes a network connection with raw system
// calls where it can (Linux, *net.TCPConn): inside syscall.RawConn's Read
// and Write, so the Go netpoller still parks the goroutine on EAGAIN and
// the connection's read and write deadlines still apply, but a call that
// does not block skips the runtime's entersyscall/exitsyscall. Used by the
// proxy's client-facing front-end and its upstream HTTP/1.1 client.
//
// Measured on the proxy's cache-hit path (docs/benchmarks-proxy.md): with
// one read and one write per request, the runtime's syscall bookkeeping
// (sysmon waking every 20 µs to retake the P of a goroutine "in a
// syscall" and hand it to another thread, threads woken and parked again)
// cost about a fifth of the proxy's CPU.
//
// A Conn is used by one reader and one writer goroutine at a time (one
// call per direction at a time), like the connection it wraps.
package rawio

import "net"

// maxRawIO bounds one read or write, as internal/poll does (1 GiB).
const maxRawIO = 1 << 30

// NetConn wraps c so that its Read and Write are a Conn's (raw system calls
// where c is a TCP connection, or a wrapper handing one out); everything
// else (deadlines, Close, CloseWrite, addresses) is c's. Used under
// crypto/tls, which reads and writes its records through the connection it
// is given: a TLS listener or dialer keeps the raw path below the record
// layer. c itself when it cannot do raw I/O.
func NetConn(c net.Conn) net.Conn {
	w := &netConn{Conn: c}
	w.raw.Reset(c)
	if !w.raw.Raw() {
		return c
	}
	return w
}

type netConn struct {
	net.Conn
	raw Conn
}

func (c *netConn) Read(p []byte) (int, error)  { return c.raw.Read(p) }
func (c *netConn) Write(p []byte) (int, error) { return c.raw.Write(p) }

// CloseWrite shuts the write side of the TCP connection, if c has one.
func (c *netConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
