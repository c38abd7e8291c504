package h1

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// A server that answers before it has read the whole request (a body over
// the limit, a bad head) still gets its answer to the client: it
// half-closes and reads what the client keeps sending (lingering close)
// instead of closing with unread input, which makes the kernel send a
// reset that destroys the answer in the client's buffers. The client here
// behaves like curl or Python requests: it writes its whole request first,
// then reads.
func TestServerLingersAfterEarlyAnswer(t *testing.T) {
	const sent = 2 << 20 // within the linger's byte bound
	chunk := strings.Repeat("a", 64<<10)
	chunked := fmt.Sprintf("%x\r\n%s\r\n", len(chunk), chunk)
	cases := map[string]struct {
		head   string
		piece  string // the body, repeated after the head until sent bytes
		status int
		want   string
	}{
		"content-length over the limit (fast)": {
			head:  fmt.Sprintf("POST /fast HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", sent),
			piece: chunk, status: 413, want: "limit of 1024 bytes",
		},
		"content-length over the limit (handler)": {
			head:  fmt.Sprintf("POST /other HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", sent),
			piece: chunk, status: 413, want: "limit of 1024 bytes",
		},
		"chunked over the limit (fast)": {
			head:  "POST /fast HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
			piece: chunked, status: 413, want: "limit of 1024 bytes",
		},
		"chunked over the limit (handler)": {
			head:  "PUT /other HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
			piece: chunked, status: 413, want: "limit of 1024 bytes",
		},
		"expect 100-continue over the limit, body sent anyway": {
			head:  fmt.Sprintf("POST /fast HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n", sent),
			piece: chunk, status: 413, want: "limit of 1024 bytes",
		},
		"both framings (smuggling shape)": {
			head:  fmt.Sprintf("POST /fast HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n", sent),
			piece: chunked, status: 400, want: "send one",
		},
		"malformed chunk size": {
			head:  "POST /fast HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
			piece: chunk, status: 400, want: "chunk size",
		},
		"header line too long (431)": {
			head:  "POST /fast HTTP/1.1\r\nHost: x\r\nX-Big: ",
			piece: chunk, status: 431, want: "request head too large",
		},
	}
	addr := serve(t, &Server{Fast: echoFast, Handler: http.NotFoundHandler(), MaxBodyBytes: 1024})
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			conn, br := dial(t, addr)
			// The head and the first piece in one write: the server finds
			// body bytes it will not read the moment it answers.
			req := []byte(c.head + c.piece)
			for len(req) < sent {
				req = append(req, c.piece...)
			}
			req = req[:sent]
			for n := 0; n < len(req); {
				m, err := conn.Write(req[n:min(n+len(c.head)+len(c.piece), len(req))])
				if err != nil {
					t.Fatalf("sending the request: %v after %d of %d bytes", err, n+m, sent)
				}
				n += m
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("reading the answer: %v", err)
			}
			b, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatalf("reading the answer's body: %v", err)
			}
			var e struct{ Error string }
			if resp.StatusCode != c.status || json.Unmarshal(b, &e) != nil || !strings.Contains(e.Error, c.want) || !resp.Close {
				t.Errorf("answer %d %q close=%v, want %d naming %q with Connection: close", resp.StatusCode, b, resp.Close, c.status, c.want)
			}
			// The server half-closed after its answer: an orderly end of
			// stream, not a reset.
			if _, err := br.ReadByte(); err != io.EOF {
				t.Errorf("after the answer: %v, want EOF", err)
			}
		})
	}
}

// The lingering is bounded: a client that keeps sending without end is
// cut off after LingerBytes, one that sends nothing more and never closes
// after LingerTimeout. Neither holds the connection.
func TestServerLingerIsBounded(t *testing.T) {
	t.Run("bytes", func(t *testing.T) {
		// A timeout far beyond the test's: only the byte bound can end it.
		s := &Server{Fast: echoFast, MaxBodyBytes: 1024, LingerBytes: 256 << 10, LingerTimeout: time.Hour}
		conn, br := dial(t, serve(t, s))
		io.WriteString(conn, "POST /fast HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n")
		if resp, _ := read(t, br, "POST"); resp.StatusCode != 413 {
			t.Fatalf("status %d, want 413", resp.StatusCode)
		}
		// The server reads (and drops) what follows, then closes: a write
		// is refused with a reset before the client's deadline.
		buf := make([]byte, 16<<10)
		for {
			_, err := conn.Write(buf)
			if err == nil {
				continue
			}
			if IsTimeout(err) {
				t.Fatalf("the server still reads the connection at the client's deadline: %v", err)
			}
			break
		}
		waitConns(t, s, 0)
	})
	t.Run("time", func(t *testing.T) {
		// A byte bound the client never reaches: only the timeout ends it.
		s := &Server{Fast: echoFast, MaxBodyBytes: 1024, LingerTimeout: 100 * time.Millisecond}
		conn, br := dial(t, serve(t, s))
		io.WriteString(conn, "POST /fast HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n")
		if resp, _ := read(t, br, "POST"); resp.StatusCode != 413 {
			t.Fatalf("status %d, want 413", resp.StatusCode)
		}
		// The client goes quiet and keeps its end open; the server lets
		// the connection go on its own.
		waitConns(t, s, 0)
		_ = conn
	})
}
