package rawio

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"testing"
	"time"
)

func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	client, err = net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// Reads and writes over real TCP sockets: a stream larger than the socket
// buffers (writes wait for the reader), data arriving after the reader
// waited, EOF, a read deadline, and a write to a closed peer.
func TestConnTCP(t *testing.T) {
	a, b := tcpPair(t)
	b.(*net.TCPConn).SetReadBuffer(16 << 10)
	a.(*net.TCPConn).SetWriteBuffer(16 << 10)
	var ra, rb Conn
	ra.Reset(a)
	rb.Reset(b)
	if runtime.GOOS == "linux" && (!ra.Raw() || !rb.Raw()) {
		t.Fatal("TCP connection not raw on Linux")
	}
	a.SetDeadline(time.Now().Add(20 * time.Second))
	b.SetDeadline(time.Now().Add(20 * time.Second))

	want := bytes.Repeat([]byte("0123456789abcdef"), 256<<10) // 4 MiB
	werr := make(chan error, 1)
	go func() {
		n, err := ra.Write(want)
		if err == nil && n != len(want) {
			err = io.ErrShortWrite
		}
		werr <- err
	}()
	got := make([]byte, 0, len(want))
	buf := make([]byte, 3000)
	for len(got) < len(want) {
		n, err := rb.Read(buf)
		if err != nil {
			t.Fatalf("read after %d bytes: %v", len(got), err)
		}
		got = append(got, buf[:n]...)
	}
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("stream corrupted")
	}

	// A read that must wait for data.
	waits := rb.Waits
	go func() { time.Sleep(20 * time.Millisecond); ra.Write([]byte("late")) }()
	n, err := rb.Read(buf)
	if err != nil || string(buf[:n]) != "late" {
		t.Fatalf("late read: %q %v", buf[:n], err)
	}
	if runtime.GOOS == "linux" && rb.Waits == waits {
		t.Fatal("the late read did not wait in the netpoller")
	}

	// Read deadline.
	b.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
	if _, err := rb.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past deadline: %v", err)
	}
	var ne net.Error
	if _, err := rb.Read(buf); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read past deadline: %v is not a timeout net.Error", err)
	}
	b.SetReadDeadline(time.Now().Add(20 * time.Second))

	// EOF, then a write to the closed peer fails with a *net.OpError.
	a.Close()
	if n, err := rb.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("after close: %d %v, want EOF", n, err)
	}
	var oe *net.OpError
	for range 100 { // the first writes may land before the reset
		if _, err = rb.Write(bytes.Repeat([]byte("x"), 64<<10)); err != nil {
			break
		}
	}
	if !errors.As(err, &oe) {
		t.Fatalf("write to closed peer: %v (%T), want *net.OpError", err, err)
	}
	if n, err := rb.Read(nil); n != 0 || err != nil {
		t.Fatalf("empty read: %d %v", n, err)
	}
}

// A connection that is not TCP uses its own Read and Write.
func TestConnFallback(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	var ra, rb Conn
	ra.Reset(a)
	rb.Reset(b)
	if ra.Raw() || rb.Raw() {
		t.Fatal("net.Pipe reported raw")
	}
	go ra.Write([]byte("hello"))
	buf := make([]byte, 16)
	n, err := io.ReadFull(&rb, buf[:5])
	if err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("%q %v", buf[:n], err)
	}
	b.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	if _, err := rb.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("deadline: %v", err)
	}
}

// NetConn keeps a TCP connection's deadlines, Close and addresses and
// reads and writes it raw.
func TestNetConn(t *testing.T) {
	a, b := tcpPair(t)
	wa, wb := NetConn(a), NetConn(b)
	if runtime.GOOS == "linux" {
		if _, ok := wa.(*netConn); !ok {
			t.Fatalf("NetConn(%T) = %T, want the raw wrapper", a, wa)
		}
	}
	if wa.RemoteAddr().String() != a.RemoteAddr().String() {
		t.Fatal("addresses differ")
	}
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, 5)
		if _, err := io.ReadFull(wb, buf); err != nil {
			done <- err
			return
		}
		_, err := wb.Write(buf)
		done <- err
	}()
	if _, err := wa.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(wa, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("echo %q %v", buf, err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// A read deadline still applies.
	wa.SetReadDeadline(time.Now().Add(-time.Second))
	if _, err := wa.Read(buf); !os.IsTimeout(err) {
		t.Fatalf("read past the deadline: %v", err)
	}
	if err := wa.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if n, err := wb.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("after CloseWrite: %d %v", n, err)
	}
}
