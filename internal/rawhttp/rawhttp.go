// Package rawhttp is test support for HTTP/1.1 servers on real sockets:
// it writes raw bytes (pipelined requests, malformed ones) on a fresh
// connection and reads the answers as net/http parses them.
package rawhttp

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// Result is what one connection saw: the responses (bodies read in full
// and re-readable), their bodies as strings, whether the server closed the
// connection after them, and the read error that ended the exchange.
type Result struct {
	Resps  []*http.Response
	Bodies []string
	Closed bool
	Err    error
}

// Exchange writes raw on a new connection to addr and reads exactly n
// responses; fewer fails the test.
func Exchange(t testing.TB, addr, raw string, n int) []*http.Response {
	t.Helper()
	r := send(t, addr, raw, n, false, false)
	if len(r.Resps) < n {
		t.Fatalf("read %d of %d responses: %v", len(r.Resps), n, r.Err)
	}
	return r.Resps
}

// Send writes raw to a fresh connection (then half-closes it when
// halfClose), reads up to max responses and reports whether the server
// closed the connection. Reads are bounded by a 10 s deadline: a server
// that neither answers nor closes fails the test instead of hanging it.
func Send(t testing.TB, addr, raw string, max int, halfClose bool) Result {
	t.Helper()
	return send(t, addr, raw, max, halfClose, true)
}

func send(t testing.TB, addr, raw string, max int, halfClose, checkClose bool) Result {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatalf("write: %v", err)
	}
	if halfClose {
		c.(*net.TCPConn).CloseWrite()
	}
	br := bufio.NewReader(c)
	var out Result
	for len(out.Resps) < max {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			out.Err = err
			break
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("reading body of response %d: %v", len(out.Resps), err)
		}
		resp.Body = io.NopCloser(bytes.NewReader(b))
		out.Resps = append(out.Resps, resp)
		out.Bodies = append(out.Bodies, string(b))
	}
	if checkClose && out.Err == nil {
		_, out.Err = br.ReadByte()
	}
	var ne net.Error
	if errors.As(out.Err, &ne) && ne.Timeout() {
		t.Fatalf("server neither answered nor closed within 10 s (after %d responses)", len(out.Resps))
	}
	out.Closed = out.Err != nil
	return out
}
