package upstream

import (
	"errors"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/switchyard-dev/switchyard/internal/rawio"
)

// connIO is the reader and writer of one upstream connection (the
// bufio.Reader and Writer of conn sit on it). Reads and writes are raw
// system calls on Linux for TCP connections (internal/rawio: no
// entersyscall/exitsyscall per call; EAGAIN still parks the goroutine in
// the netpoller, and deadlines still apply), the connection's own Read and
// Write otherwise.
//
// Each request has its own deadline, but a kept-alive connection does not
// re-arm its timer for every request: a deadline armed for an earlier
// request stays while it is not later than the request's and earlier by at
// most lazySlack (as nginx's lazy timers). A kept deadline that fires
// before the request's own is not reported: the exact one is armed and the
// read or write carries on. So a timeout is never early and never late,
// and a busy connection re-arms a few times a second instead of once per
// request.
type connIO struct {
	nc  net.Conn
	raw rawio.Conn
	// want is the current request's deadline, armed the deadline (read and
	// write) armed on the connection; zero: none.
	want, armed time.Time
	// rearms counts kept deadlines that fired early and were moved to the
	// request's own.
	rearms uint64
	// cut: the call was cancelled (Request.Ctx ended) and the deadline
	// moved to the past on purpose: never re-armed.
	cut atomic.Bool
}

func (ci *connIO) reset(nc net.Conn) {
	ci.nc, ci.want, ci.armed = nc, time.Time{}, time.Time{}
	ci.cut.Store(false)
	ci.raw.Reset(nc)
}

// lazySlack is how much earlier than a request's deadline (remaining time
// d) an armed deadline may be and still be kept: 1/16 of d, at most
// 500 ms.
func lazySlack(d time.Duration) time.Duration { return min(d/16, 500*time.Millisecond) }

// keepArmed reports whether the armed deadline can stand for want
// (remaining time d): not later than want, and earlier by at most
// lazySlack(d). Zero means no deadline.
func keepArmed(armed, want time.Time, d time.Duration) bool {
	if want.IsZero() || armed.IsZero() {
		return want.IsZero() && armed.IsZero()
	}
	return armed.Equal(want) || !armed.After(want) && want.Sub(armed) <= lazySlack(d)
}

// setDeadline starts a request with deadline want (zero: none).
func (ci *connIO) setDeadline(want time.Time) error {
	ci.want = want
	var d time.Duration
	if !want.IsZero() {
		d = time.Until(want)
	}
	if keepArmed(ci.armed, want, d) {
		return nil
	}
	if err := ci.nc.SetDeadline(want); err != nil {
		return err
	}
	ci.armed = want
	return nil
}

// rearm handles err from a read or write: when it is a kept deadline
// firing before the request's own, it arms the request's deadline and
// reports true (try again).
func (ci *connIO) rearm(err error) bool {
	if ci.armed.Equal(ci.want) || !errors.Is(err, os.ErrDeadlineExceeded) || !time.Now().Before(ci.want) || ci.cut.Load() {
		return false
	}
	if ci.nc.SetDeadline(ci.want) != nil {
		return false
	}
	ci.armed = ci.want
	ci.rearms++
	return true
}

func (ci *connIO) Read(p []byte) (int, error) {
	for {
		n, err := ci.raw.Read(p)
		if err != nil && n == 0 && ci.rearm(err) {
			continue
		}
		return n, err
	}
}

func (ci *connIO) Write(p []byte) (int, error) {
	done := 0
	for {
		n, err := ci.raw.Write(p[done:])
		done += n
		if err != nil && ci.rearm(err) {
			if done < len(p) {
				continue
			}
			err = nil
		}
		return done, err
	}
}
