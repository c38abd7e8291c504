//go:build !linux

package rawio

import "net"

// Conn reads and writes one connection: on this platform with the
// connection's own Read and Write (the raw-syscall version is Linux only,
// rawio_linux.go).
type Conn struct {
	c net.Conn
	// Waits is always 0 here (see the Linux version).
	Waits uint64
}

// Reset attaches the connection (nil: detach).
func (sc *Conn) Reset(c net.Conn) { sc.c = c }

// Raw reports whether reads and writes go through raw system calls: never
// on this platform.
func (sc *Conn) Raw() bool { return false }

func (sc *Conn) Read(p []byte) (int, error)  { return sc.c.Read(p) }
func (sc *Conn) Write(p []byte) (int, error) { return sc.c.Write(p) }
