package lifecycle

import (
	"errors"
	"net"
	"net/http"
	"time"
)

// Acceptor accepts a listener's connections for a server's Serve loop.
// A temporary failure (a net.Error that times out, e.g. out of file
// descriptors) is slept through with a delay doubling from 5 ms to 1 s, as
// net/http does; the delay resets after a connection. The zero value is
// ready.
type Acceptor struct {
	delay time.Duration
	sleep func(time.Duration) // nil: time.Sleep (tests)
}

// Accept returns l's next connection, or the error that ends the loop:
// http.ErrServerClosed when closed() says the server has been shut down
// (the listener's error is then only the shutdown closing it), else the
// listener's error.
func (a *Acceptor) Accept(l net.Listener, closed func() bool) (net.Conn, error) {
	for {
		nc, err := l.Accept()
		if err == nil {
			a.delay = 0
			return nc, nil
		}
		if closed() {
			return nil, http.ErrServerClosed
		}
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			return nil, err
		}
		a.delay = min(max(2*a.delay, 5*time.Millisecond), time.Second)
		if a.sleep != nil {
			a.sleep(a.delay)
		} else {
			time.Sleep(a.delay)
		}
	}
}
