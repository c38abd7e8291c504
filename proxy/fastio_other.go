//go:build !linux

package proxy

import "net"

// sysConn reads and writes a client connection: on this platform with the
// connection's own Read and Write (the raw-syscall version is Linux only,
// fastio_linux.go).
type sysConn struct{ c net.Conn }

func (sc *sysConn) reset(c net.Conn)            { sc.c = c }
func (sc *sysConn) read(p []byte) (int, error)  { return sc.c.Read(p) }
func (sc *sysConn) write(p []byte) (int, error) { return sc.c.Write(p) }
