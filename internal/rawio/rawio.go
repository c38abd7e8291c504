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

// maxRawIO bounds one read or write, as internal/poll does (1 GiB).
const maxRawIO = 1 << 30
