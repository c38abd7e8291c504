//go:build linux

package proxy

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// sysConn reads and writes a client connection. On Linux it reads and
// writes the (non-blocking) socket with raw system calls inside
// syscall.RawConn's Read and Write, so the Go netpoller still parks the
// goroutine on EAGAIN and read and write deadlines still apply, but a call
// that cannot block does not go through the runtime's
// entersyscall/exitsyscall. Measured on the cache-hit path
// (docs/benchmarks-proxy.md): with one read and one write per request, the
// runtime's syscall bookkeeping (sysmon waking every 20 µs to retake the P
// of a goroutine "in a syscall" and hand it to another thread, threads
// woken and parked again) cost about a fifth of the proxy's CPU.
//
// A connection that is not a *net.TCPConn (tests, wrappers) falls back to
// its own Read and Write.
type sysConn struct {
	c  net.Conn
	rc syscall.RawConn

	// Per-call arguments and results of rf / wf (one call at a time per
	// direction: the connection's goroutine is its only reader and
	// writer).
	rp, wp []byte
	rn, wn int
	rerr   error
	werr   error
	rf, wf func(uintptr) bool
	// waits counts reads that found the socket empty and had to wait.
	waits uint64
}

// reset attaches the connection (nil: detach).
func (sc *sysConn) reset(c net.Conn) {
	sc.c, sc.rc = c, nil
	sc.rp, sc.wp, sc.rerr, sc.werr = nil, nil, nil, nil
	if c == nil {
		return
	}
	if tc, ok := c.(*net.TCPConn); ok {
		if rc, err := tc.SyscallConn(); err == nil {
			sc.rc = rc
		}
	}
	if sc.rf == nil {
		sc.rf, sc.wf = sc.readFD, sc.writeFD
	}
}

func (sc *sysConn) readFD(fd uintptr) bool {
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&sc.rp[0])), uintptr(len(sc.rp)))
		switch e {
		case 0:
			sc.rn = int(n)
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			sc.waits++
			return false // wait for readability (or the deadline)
		}
		sc.rerr = os.NewSyscallError("read", e)
		return true
	}
}

func (sc *sysConn) writeFD(fd uintptr) bool {
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
			sc.werr = os.NewSyscallError("write", e)
			return true
		}
	}
	return true
}

// maxRawIO bounds one read or write, as internal/poll does (1 GiB).
const maxRawIO = 1 << 30

func (sc *sysConn) read(p []byte) (int, error) {
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

func (sc *sysConn) write(p []byte) (int, error) {
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
