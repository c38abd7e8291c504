//go:build linux

package rawio

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// Conn reads and writes one connection. On Linux, for a *net.TCPConn, with
// raw read and write system calls through syscall.RawConn; any other
// connection (tests, wrappers, Unix sockets) falls back to its own Read
// and Write. The zero Conn is detached; Reset attaches one.
type Conn struct {
	c  net.Conn
	rc syscall.RawConn

	// Per-call arguments and results of rf / wf (one call at a time per
	// direction).
	rp, wp []byte
	rn, wn int
	rerr   error
	werr   error
	rf, wf func(uintptr) bool

	// Waits counts raw reads that found the socket empty and had to wait
	// for it (or for the read deadline). Never reset; compare two
	// readings.
	Waits uint64
}

// Reset attaches the connection (nil: detach).
func (sc *Conn) Reset(c net.Conn) {
	sc.c, sc.rc = c, nil
	sc.rp, sc.wp, sc.rerr, sc.werr = nil, nil, nil, nil
	if c == nil {
		return
	}
	// A TCP connection, or a wrapper that changes none of its I/O and says
	// so by handing it out (RawTCPConn; e.g. a listener's connection cap).
	// Other wrappers keep their Read and Write.
	tc, ok := c.(*net.TCPConn)
	if w, isWrapper := c.(interface{ RawTCPConn() *net.TCPConn }); !ok && isWrapper {
		tc, ok = w.RawTCPConn(), true
	}
	if ok {
		if rc, err := tc.SyscallConn(); err == nil {
			sc.rc = rc
		}
	}
	if sc.rf == nil {
		sc.rf, sc.wf = sc.readFD, sc.writeFD
	}
}

// Raw reports whether reads and writes go through raw system calls.
func (sc *Conn) Raw() bool { return sc.rc != nil }

func (sc *Conn) readFD(fd uintptr) bool {
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&sc.rp[0])), uintptr(len(sc.rp)))
		switch e {
		case 0:
			sc.rn = int(n)
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			sc.Waits++
			return false // wait for readability (or the deadline)
		}
		sc.rerr = sc.opError("read", e)
		return true
	}
}

func (sc *Conn) writeFD(fd uintptr) bool {
	for sc.wn < len(sc.wp) {
		p := sc.wp[sc.wn:]
		n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		switch e {
		case 0:
			sc.wn += int(n)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false // socket buffer full: wait for writability
		default:
			sc.werr = sc.opError("write", e)
			return true
		}
	}
	return true
}

// opError wraps a failed system call as the connection's own Read or
// Write would (a *net.OpError naming both ends), so errors read the same
// on either path.
func (sc *Conn) opError(op string, e syscall.Errno) error {
	return &net.OpError{Op: op, Net: "tcp", Source: sc.c.LocalAddr(), Addr: sc.c.RemoteAddr(), Err: os.NewSyscallError(op, e)}
}

// Read reads into p: at most one read system call that returns data (EOF
// at the end of the stream), waiting for readability as the connection's
// own Read does.
func (sc *Conn) Read(p []byte) (int, error) {
	if sc.rc == nil {
		return sc.c.Read(p)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if len(p) > maxRawIO {
		p = p[:maxRawIO]
	}
	sc.rp, sc.rn, sc.rerr = p, 0, nil
	err := sc.rc.Read(sc.rf)
	sc.rp = nil
	if err == nil {
		err = sc.rerr
	}
	if err != nil {
		return 0, err
	}
	if sc.rn == 0 {
		return 0, io.EOF
	}
	return sc.rn, nil
}

// Write writes all of p (or fails), waiting for writability as the
// connection's own Write does.
func (sc *Conn) Write(p []byte) (int, error) {
	if sc.rc == nil {
		return sc.c.Write(p)
	}
	if len(p) == 0 {
		return 0, nil
	}
	var done int
	for done < len(p) {
		chunk := p[done:]
		if len(chunk) > maxRawIO {
			chunk = chunk[:maxRawIO]
		}
		sc.wp, sc.wn, sc.werr = chunk, 0, nil
		err := sc.rc.Write(sc.wf)
		done += sc.wn
		sc.wp = nil
		if err == nil {
			err = sc.werr
		}
		if err != nil {
			return done, err
		}
	}
	return done, nil
}
