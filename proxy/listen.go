package proxy

import (
	"net"
	"sync"
)

// DefaultMaxConnections is Config.MaxConnections's default.
const DefaultMaxConnections = 4096

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
