package h1

import (
	"net"
	"time"

	"github.com/switchyard-dev/switchyard/internal/rawio"
)

// connIO is a connection's reader and writer (the Conn's bufio.Reader and
// Writer sit on it). Besides the reads and writes themselves (raw system
// calls on Linux, internal/rawio; the connection's own Read and Write
// elsewhere) it arms the connection's deadlines only when a read or write
// actually reaches the socket, and lazily:
//
//   - the read deadline of the current phase (waiting for a next request,
//     reading a head, reading a body: readPhase) is armed at the phase's
//     first read from the socket, as that moment plus the phase's timeout.
//     A request whose head and body arrived with the read that woke the
//     connection arms nothing for them.
//   - the idle phase and writes keep an armed deadline that is at most
//     lazyDeadline(timeout) earlier than the exact one instead of moving it
//     forward on every request (nginx does the same with its 300 ms lazy
//     timers), so a busy kept-alive connection re-arms its timers a few
//     times a second, not once per request. The deadline can fire up to that
//     slack early; never late.
type connIO struct {
	c   net.Conn
	raw rawio.Conn
	// waits counts reads that found the socket empty and had to wait
	// (rawio.Conn.Waits, copied after each read).
	waits uint64

	// Read deadline: the current phase's timeout, whether it is armed for
	// this phase yet, whether it may be lazy, and the deadline armed on
	// the connection (zero: none).
	rTimeout time.Duration
	rArmed   bool
	rLazy    bool
	rd       time.Time
	// Write deadline: the timeout of one answer's write and the deadline
	// armed.
	wTimeout time.Duration
	wd       time.Time
	// now, when set, is the time the last request was answered (written to
	// the buffer): the idle wait's and the write's deadlines count from it
	// instead of a fresh clock reading (one clock reading per request
	// instead of three). Cleared by the idle wait's first read.
	now time.Time
}

func (ci *connIO) clock() time.Time {
	if !ci.now.IsZero() {
		return ci.now
	}
	return time.Now()
}

// reset attaches the connection (nil: detach) with the write timeout.
func (ci *connIO) reset(c net.Conn, writeTimeout time.Duration) {
	ci.c, ci.rd, ci.wd, ci.rArmed, ci.wTimeout, ci.now = c, time.Time{}, time.Time{}, true, writeTimeout, time.Time{}
	ci.raw.Reset(c)
}

// readPhase starts a read phase with timeout d: the next read from the
// socket (if any) arms now+d. lazy allows keeping an armed deadline up to
// lazyDeadline(d) early (the idle wait).
func (ci *connIO) readPhase(d time.Duration, lazy bool) {
	ci.rTimeout, ci.rArmed, ci.rLazy = d, false, lazy
}

// lazyDeadline is the slack an armed deadline may have: 1/16 of the
// timeout, at most 500 ms.
func lazyDeadline(d time.Duration) time.Duration { return min(d/16, 500*time.Millisecond) }

// keepArmed reports whether an armed deadline can stand for want: not
// later than want, and earlier by at most slack.
func keepArmed(armed, want time.Time, slack time.Duration) bool {
	return !armed.IsZero() && !armed.After(want) && want.Sub(armed) <= slack
}

func (ci *connIO) Read(p []byte) (int, error) {
	if !ci.rArmed {
		ci.rArmed = true
		var want time.Time
		if ci.rLazy {
			want = ci.clock().Add(ci.rTimeout)
			ci.now = time.Time{}
		} else {
			want = time.Now().Add(ci.rTimeout)
		}
		if !ci.rLazy || !keepArmed(ci.rd, want, lazyDeadline(ci.rTimeout)) {
			if err := ci.c.SetReadDeadline(want); err != nil {
				return 0, err
			}
			ci.rd = want
		}
	}
	n, err := ci.raw.Read(p)
	ci.waits = ci.raw.Waits
	return n, err
}

func (ci *connIO) Write(p []byte) (int, error) {
	if ci.wTimeout > 0 {
		want := ci.clock().Add(ci.wTimeout)
		if !keepArmed(ci.wd, want, lazyDeadline(ci.wTimeout)) {
			if err := ci.c.SetWriteDeadline(want); err != nil {
				return 0, err
			}
			ci.wd = want
		}
	}
	return ci.raw.Write(p)
}
