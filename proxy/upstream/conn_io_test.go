package upstream

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime"
	"sync"
	"testing"
	"time"
)

// scripted serves one connection at a time on 127.0.0.1: answer(i, c) writes
// the answer of the connection's i-th request (it may pause, write in
// pieces, or hang until done is closed).
func scripted(t *testing.T, answer func(i int, c net.Conn, done <-chan struct{})) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	t.Cleanup(func() { close(done); l.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				go func() { <-done; c.Close() }()
				br := bufio.NewReader(c)
				for i := 0; ; i++ {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					io.Copy(io.Discard, req.Body)
					answer(i, c, done)
				}
			}()
		}
	}()
	return l.Addr().String()
}

// pieces writes parts one by one with a pause before each, so the client's
// reads find the socket empty in between.
func pieces(c net.Conn, parts ...string) {
	for _, p := range parts {
		time.Sleep(5 * time.Millisecond)
		if _, err := io.WriteString(c, p); err != nil {
			return
		}
	}
}

func idleConn(t *testing.T, p *HTTPPool) *conn {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.idle) != 1 {
		t.Fatalf("%d idle connections, want 1", len(p.idle))
	}
	return p.idle[0]
}

// Responses arriving in pieces (a status line and a header line cut in
// two, a body split, a chunked body split inside a chunk) over a kept-alive
// TCP connection read whole; on Linux the reads are the raw ones (they found
// the socket empty and waited in the netpoller).
func TestHTTPPoolRawPathSplitResponses(t *testing.T) {
	addr := scripted(t, func(i int, c net.Conn, _ <-chan struct{}) {
		if i%2 == 0 {
			pieces(c, "HTTP/1.1 20", "0 OK\r\nContent-Ty", "pe: application/json\r\nContent-Length: 11\r\n\r\n{\"a\":", "[1,2]", "}")
			return
		}
		pieces(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "5\r\nhel", "lo\r\n6\r\n world\r", "\n0\r\n\r\n")
	})
	p := NewHTTPPool(addr, 4)
	defer p.Close()
	var c0 *conn
	for i := range 4 {
		var waits uint64
		if c0 != nil {
			waits = c0.io.raw.Waits
		}
		var resp Response
		if err := p.Do(time.Now().Add(10*time.Second), &Request{Path: "/x", Body: []byte("{}")}, &resp); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		want := `{"a":[1,2]}`
		if i%2 == 1 {
			want = "hello world"
		}
		if resp.Status != 200 || string(resp.Body) != want {
			t.Fatalf("request %d: %d %q, want 200 %q", i, resp.Status, resp.Body, want)
		}
		c := idleConn(t, p)
		if c0 == nil {
			c0 = c
		} else if c != c0 {
			t.Fatalf("request %d: connection not reused", i)
		}
		if runtime.GOOS == "linux" {
			if !c.io.raw.Raw() {
				t.Fatal("TCP connection does not use raw system calls")
			}
			if c.io.raw.Waits == waits {
				t.Fatalf("request %d: no raw read waited for the delayed answer", i)
			}
		}
	}
}

// An upstream that stops in the middle of its answer (or never answers)
// fails the request with ErrTimeout at its deadline, and the connection is
// not kept.
func TestHTTPPoolSlowUpstreamTimesOut(t *testing.T) {
	for name, parts := range map[string][]string{
		"silent":       nil,
		"partial head": {"HTTP/1.1 200 OK\r\nContent-Len"},
		"partial body": {"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345"},
		"chunked":      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"},
	} {
		t.Run(name, func(t *testing.T) {
			addr := scripted(t, func(_ int, c net.Conn, done <-chan struct{}) {
				pieces(c, parts...)
				<-done
			})
			p := NewHTTPPool(addr, 4)
			defer p.Close()
			start := time.Now()
			err := p.Do(start.Add(150*time.Millisecond), &Request{Path: "/x", Body: []byte("{}")}, &Response{})
			if !errors.Is(err, ErrTimeout) {
				t.Fatalf("err = %v, want ErrTimeout", err)
			}
			if time.Now().Before(start.Add(150 * time.Millisecond)) {
				t.Fatalf("timed out before the deadline")
			}
			if len(p.idle) != 0 {
				t.Fatal("timed-out connection kept")
			}
		})
	}
}

// A kept-alive connection keeps the deadline armed for the previous request
// when the next one's is a little later; that deadline firing early is not
// a timeout: the request's own deadline is armed and the answer that comes
// before it is read.
func TestHTTPPoolLazyDeadlineNeverEarly(t *testing.T) {
	const d = 2400 * time.Millisecond // lazySlack(d) = 150 ms
	d1 := time.Now().Add(d)           // set before the server's goroutines start
	addr := scripted(t, func(i int, c net.Conn, _ <-chan struct{}) {
		if i == 1 {
			time.Sleep(time.Until(d1.Add(40 * time.Millisecond))) // after the first deadline
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	})
	p := NewHTTPPool(addr, 4)
	defer p.Close()
	if err := p.Do(d1, &Request{Path: "/x"}, &Response{}); err != nil {
		t.Fatal(err)
	}
	var resp Response
	if err := p.Do(d1.Add(120*time.Millisecond), &Request{Path: "/x"}, &resp); err != nil {
		t.Fatalf("second request: %v", err)
	}
	if string(resp.Body) != "ok" {
		t.Fatalf("second request: %q", resp.Body)
	}
	c := idleConn(t, p)
	if c.io.rearms != 1 {
		t.Fatalf("rearms = %d, want 1 (the first deadline kept, fired, moved)", c.io.rearms)
	}
}

func TestKeepArmed(t *testing.T) {
	t0 := time.Unix(1000, 0)
	for name, tc := range map[string]struct {
		armed, want time.Time
		d           time.Duration
		keep        bool
	}{
		"none wanted, none armed":    {time.Time{}, time.Time{}, 0, true},
		"none wanted, one armed":     {t0, time.Time{}, 0, false},
		"none armed":                 {time.Time{}, t0, time.Second, false},
		"same":                       {t0, t0, time.Second, true},
		"same, already passed":       {t0, t0, -time.Second, true},
		"earlier within slack":       {t0, t0.Add(300 * time.Millisecond), 10 * time.Second, true},
		"earlier by exactly slack":   {t0, t0.Add(500 * time.Millisecond), time.Minute, true},
		"earlier by more than slack": {t0, t0.Add(501 * time.Millisecond), time.Minute, false},
		"slack of a short timeout":   {t0, t0.Add(7 * time.Millisecond), 100 * time.Millisecond, false},
		"later than wanted":          {t0.Add(time.Millisecond), t0, time.Second, false},
	} {
		if got := keepArmed(tc.armed, tc.want, tc.d); got != tc.keep {
			t.Errorf("%s: keepArmed = %v, want %v", name, got, tc.keep)
		}
	}
}
