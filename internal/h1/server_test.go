package h1

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// serve starts s on 127.0.0.1:0; the test's cleanup shuts it down and
// checks Serve's result.
func serve(t *testing.T, s *Server) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve returned %v, want http.ErrServerClosed", err)
		}
	})
	return l.Addr().String()
}

// waitConns polls until s holds n connections (10 s at most).
func waitConns(t *testing.T, s *Server, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.mu.Lock()
		got := len(s.conns)
		s.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("server holds %d connections, want %d", got, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func dial(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c, bufio.NewReader(c)
}

func read(t *testing.T, br *bufio.Reader, method string) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// echoFast answers POST /fast with the body's length and upper-cased body
// on the connection's buffers; everything else is left to the handler.
func echoFast(c *Conn, r *Request) (served, keep bool, err error) {
	if string(r.Method) != "POST" || string(r.Path()) != "/fast" {
		return false, false, nil
	}
	body, err := c.ReadBody(r, nil)
	if err != nil {
		c.AnswerError(err)
		return true, false, err
	}
	WriteResponse(c.W, 200, "text/plain", fmt.Appendf(nil, "%d %s %s", len(body), strings.ToUpper(string(body)), r.HeaderString("x-tag")), r.Close)
	return true, !r.Close, c.Flush()
}

// Fast takes what it recognises, the handler gets the rest with its body,
// headers and query; HEAD gets the head only; HTTP/1.0 and Connection:
// close end the connection after the answer.
func TestServerFastAndHandler(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Seen", r.Method+" "+r.URL.Path+" q="+r.URL.Query().Get("q")+" tag="+r.Header.Get("X-Tag"))
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, "handler got %q", b)
	})
	addr := serve(t, &Server{Fast: echoFast, Handler: h, MaxBodyBytes: 64})
	c, br := dial(t, addr)
	// Three pipelined requests: fast (chunked body), handler, fast again.
	io.WriteString(c, "POST /fast HTTP/1.1\r\nHost: x\r\nX-Tag: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"+
		"PUT /other?q=1 HTTP/1.1\r\nHost: x\r\nX-Tag: b\r\nContent-Length: 2\r\n\r\nhi"+
		"POST /fast HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nz")
	if resp, body := read(t, br, "POST"); resp.StatusCode != 200 || body != "5 ABCDE a" {
		t.Errorf("fast chunked: %d %q", resp.StatusCode, body)
	}
	if resp, body := read(t, br, "PUT"); resp.StatusCode != 201 || body != `handler got "hi"` || resp.Header.Get("X-Seen") != "PUT /other q=1 tag=b" {
		t.Errorf("handler: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	if resp, body := read(t, br, "POST"); resp.StatusCode != 200 || body != "1 Z " {
		t.Errorf("fast again: %d %q", resp.StatusCode, body)
	}
	// HEAD through the handler: the head with the length, no body.
	io.WriteString(c, "HEAD /x HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, body := read(t, br, "HEAD"); resp.StatusCode != 201 || body != "" || resp.ContentLength != int64(len(`handler got ""`)) {
		t.Errorf("HEAD: %d %q length %d", resp.StatusCode, body, resp.ContentLength)
	}
	// Over the body limit: 413 naming it, connection closed.
	io.WriteString(c, "POST /fast HTTP/1.1\r\nHost: x\r\nContent-Length: 65\r\n\r\n"+strings.Repeat("a", 65))
	if resp, body := read(t, br, "POST"); resp.StatusCode != 413 || !strings.Contains(body, "limit of 64 bytes") || !resp.Close {
		t.Errorf("oversized: %d %q close=%v", resp.StatusCode, body, resp.Close)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("after 413: %v, want EOF", err)
	}
	// HTTP/1.0: answered, then closed.
	c2, br2 := dial(t, addr)
	io.WriteString(c2, "GET /old HTTP/1.0\r\n\r\n")
	if resp, _ := read(t, br2, "GET"); resp.StatusCode != 201 || !resp.Close {
		t.Errorf("HTTP/1.0: %d close=%v", resp.StatusCode, resp.Close)
	}
	if _, err := br2.ReadByte(); err != io.EOF {
		t.Errorf("after HTTP/1.0: %v, want EOF", err)
	}
}

func TestServerWithoutHandler(t *testing.T) {
	addr := serve(t, &Server{Fast: echoFast})
	c, br := dial(t, addr)
	io.WriteString(c, "GET /nothing HTTP/1.1\r\nHost: x\r\n\r\nPOST /fast HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok")
	if resp, body := read(t, br, "GET"); resp.StatusCode != 404 || !strings.Contains(body, "GET /nothing") {
		t.Errorf("no handler: %d %q", resp.StatusCode, body)
	}
	if resp, body := read(t, br, "POST"); resp.StatusCode != 200 || body != "2 OK " {
		t.Errorf("after 404 the connection still serves: %d %q", resp.StatusCode, body)
	}
}

// Shutdown closes idle kept-alive connections at once, lets a request in
// progress finish and deliver its answer, then returns.
func TestServerShutdownDrains(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	s := &Server{Fast: func(c *Conn, r *Request) (bool, bool, error) {
		if _, err := c.ReadBody(r, nil); err != nil {
			return true, false, err
		}
		close(entered)
		<-release
		WriteResponse(c.W, 200, "text/plain", []byte("late but whole"), r.Close)
		return true, !r.Close, c.Flush()
	}}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(l) }()
	idle, idleBR := dial(t, l.Addr().String())
	busy, busyBR := dial(t, l.Addr().String())
	io.WriteString(busy, "POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
	<-entered
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shut <- s.Shutdown(ctx)
	}()
	// The idle connection is closed without an answer.
	if _, err := idleBR.ReadByte(); err != io.EOF {
		t.Errorf("idle connection at shutdown: %v, want EOF", err)
	}
	_ = idle
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned (%v) while a request was in progress", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if resp, body := read(t, busyBR, "POST"); resp.StatusCode != 200 || body != "late but whole" {
		t.Errorf("request in progress: %d %q", resp.StatusCode, body)
	}
	if _, err := busyBR.ReadByte(); err != io.EOF {
		t.Errorf("busy connection after its answer: %v, want EOF", err)
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		t.Errorf("Serve: %v", err)
	}
	_ = busy
	// New connections are refused.
	if c, err := net.DialTimeout("tcp", l.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Error("dial after Shutdown succeeded")
	}
}

// readWatch is a listener whose connections report each Read of the one
// watch names: a test sees the server's body read reach the socket (its
// read deadline armed) before it starts a Shutdown.
type readWatch struct {
	net.Listener
	watch atomic.Pointer[watchedConn]
	reads chan struct{}
}

func (l *readWatch) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &watchedConn{c.(*net.TCPConn), l}, nil
}

type watchedConn struct {
	*net.TCPConn
	l *readWatch
}

func (c *watchedConn) Read(p []byte) (int, error) {
	if c.l.watch.Load() == c {
		select {
		case c.l.reads <- struct{}{}:
		default:
		}
	}
	return c.TCPConn.Read(p)
}

// A request whose body is still arriving when Shutdown starts (a slow
// upload, its body read already waiting on the socket) is read to its end
// and answered: Shutdown cuts only connections waiting for a next request.
func TestServerShutdownFinishesSlowUpload(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &readWatch{Listener: ln, reads: make(chan struct{}, 1)}
	s := &Server{Fast: func(c *Conn, r *Request) (bool, bool, error) {
		l.watch.Store(c.NetConn().(*watchedConn)) // this connection's reads from here on
		body, err := c.ReadBody(r, nil)
		if err != nil {
			c.AnswerError(err)
			return true, false, err
		}
		WriteResponse(c.W, 200, "text/plain", fmt.Appendf(nil, "got %d bytes", len(body)), r.Close)
		return true, !r.Close, c.Flush()
	}}
	served := make(chan error, 1)
	go func() { served <- s.Serve(l) }()
	addr := ln.Addr().String()
	// A connection that never sends a request: idle, closed at Shutdown.
	idle, idleBR := dial(t, addr)
	_ = idle
	waitConns(t, s, 1)
	upload, uploadBR := dial(t, addr)
	io.WriteString(upload, "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n"+strings.Repeat("a", 1000))
	<-l.reads // the body read waits on the socket
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shut <- s.Shutdown(ctx)
	}()
	if _, err := idleBR.ReadByte(); err != io.EOF {
		t.Errorf("idle connection at shutdown: %v, want EOF", err)
	}
	// Shutdown has passed its idle sweep (the idle connection is closed);
	// new connections are refused while the upload goes on.
	for deadline := time.Now().Add(10 * time.Second); ; {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("new connections still accepted after Shutdown began")
		}
		time.Sleep(5 * time.Millisecond)
	}
	io.WriteString(upload, strings.Repeat("b", 1000))
	if resp, body := read(t, uploadBR, "POST"); resp.StatusCode != 200 || body != "got 2000 bytes" {
		t.Errorf("upload in flight at shutdown: %d %q", resp.StatusCode, body)
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		t.Errorf("Serve: %v", err)
	}
}

// A Shutdown that runs out of time cuts the requests in flight: their
// Conn.Context is cancelled, so their work (an upstream call, an
// inference) stops instead of holding the drain past its bound.
func TestShutdownPastItsBoundCancelsRequests(t *testing.T) {
	entered := make(chan struct{})
	s := &Server{Fast: func(c *Conn, r *Request) (bool, bool, error) {
		if _, err := c.ReadBody(r, nil); err != nil {
			return true, false, err
		}
		if c.Context().Err() != nil {
			t.Error("a request's context is done before any shutdown")
		}
		close(entered)
		<-c.Context().Done() // work that only ends when cancelled
		return true, false, c.Context().Err()
	}}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(l) }()
	busy, _ := dial(t, l.Addr().String())
	io.WriteString(busy, "POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
	<-entered
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown: %v, want its deadline", err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		t.Errorf("Serve: %v", err)
	}
}
