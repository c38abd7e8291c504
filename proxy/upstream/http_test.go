package upstream

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// oneShot answers each connection's first request and then closes it
// without saying so, as a backend closing idle keep-alive connections does.
func oneShot(t *testing.T, answer string) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
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
				br := bufio.NewReader(c)
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				io.Copy(io.Discard, req.Body)
				io.WriteString(c, answer)
				time.Sleep(20 * time.Millisecond)
			}()
		}
	}()
	return l.Addr().String()
}

func TestHTTPPoolRetriesStaleConnection(t *testing.T) {
	addr := oneShot(t, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
	p := NewHTTPPool(addr, 4)
	defer p.Close()
	for i := range 3 {
		var resp Response
		if err := p.Do(time.Now().Add(5*time.Second), &Request{Path: "/x", Body: []byte("{}")}, &resp); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if resp.Status != 200 || string(resp.Body) != "{}" || resp.ContentType != "application/json" {
			t.Fatalf("request %d: %+v", i, resp)
		}
		time.Sleep(40 * time.Millisecond) // the server has closed the idle connection
	}
}

func TestHTTPPoolChunkedAndErrors(t *testing.T) {
	chunked := oneShot(t, "HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\nInference-Header-Content-Length: 3\r\n\r\n3\r\nabc\r\n4;ext=1\r\ndefg\r\n0\r\nTrailer: x\r\n\r\n")
	p := NewHTTPPool(chunked, 4)
	defer p.Close()
	var resp Response
	if err := p.Do(time.Now().Add(5*time.Second), &Request{Path: "/x"}, &resp); err != nil {
		t.Fatal(err)
	}
	if resp.Status != 400 || string(resp.Body) != "abcdefg" || resp.HeaderLen != 3 {
		t.Fatalf("chunked: %+v %q", resp, resp.Body)
	}
	// A chunk longer than its declared size is refused, not truncated.
	long := oneShot(t, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX\r\n0\r\n\r\n")
	pl := NewHTTPPool(long, 4)
	defer pl.Close()
	if err := pl.Do(time.Now().Add(5*time.Second), &Request{Path: "/x"}, &Response{}); !errors.Is(err, ErrProtocol) {
		t.Fatalf("chunk longer than declared: %v, want ErrProtocol", err)
	}
	bad := oneShot(t, "SMTP ready\r\n\r\n")
	pb := NewHTTPPool(bad, 4)
	defer pb.Close()
	if err := pb.Do(time.Now().Add(5*time.Second), &Request{Path: "/x"}, &Response{}); !errors.Is(err, ErrProtocol) {
		t.Fatalf("garbage: %v", err)
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := l.Addr().String()
	l.Close()
	pd := NewHTTPPool(dead, 4)
	if err := pd.Do(time.Now().Add(5*time.Second), &Request{Path: "/x"}, &Response{}); !errors.Is(err, ErrConnect) {
		t.Fatalf("dead: %v", err)
	}
	silent := oneShot(t, "")
	ps := NewHTTPPool(silent, 4)
	start := time.Now()
	err := ps.Do(time.Now().Add(100*time.Millisecond), &Request{Path: "/x"}, &Response{})
	if err == nil || time.Since(start) > 5*time.Second {
		t.Fatalf("silent backend: %v", err)
	}
}

func TestRetryBudget(t *testing.T) {
	b := NewRetryBudget(20, 2)
	if !b.Withdraw() || !b.Withdraw() || b.Withdraw() {
		t.Fatal("burst of 2 not honoured")
	}
	for range 10 {
		b.Deposit()
	}
	if !b.Withdraw() || !b.Withdraw() || b.Withdraw() {
		t.Fatal("20 % of 10 requests should allow exactly 2 retries")
	}
}

func TestOutlierEjectionAndP2C(t *testing.T) {
	a, b := NewHTTPEndpoint("a:1", 1), NewHTTPEndpoint("b:1", 1)
	o := Outlier{ConsecutiveFailures: 3, BaseEjection: time.Second, MaxEjection: 10 * time.Second}
	now := time.Now().UnixNano()
	for i := range 3 {
		if ej := a.Report(false, now, &o); ej != (i == 2) {
			t.Fatalf("failure %d: ejected=%v", i+1, ej)
		}
	}
	if !a.Ejected(now) || a.Ejected(now+int64(2*time.Second)) {
		t.Fatal("ejection window wrong")
	}
	eps := []*Endpoint{a, b}
	for r := range uint64(1000) {
		if PickP2C(eps, r*0x9e3779b97f4a7c15, now, nil) != b {
			t.Fatal("picked the ejected endpoint while another was healthy")
		}
	}
	b.Report(false, now, &o)
	b.Report(false, now, &o)
	b.Report(false, now, &o)
	if PickP2C(eps, 1, now, nil) == nil {
		t.Fatal("all ejected: must still pick one")
	}
	// Least request: with a busy, b wins.
	c, d := NewHTTPEndpoint("c:1", 1), NewHTTPEndpoint("d:1", 1)
	c.Begin()
	for r := range uint64(100) {
		if PickP2C([]*Endpoint{c, d}, r*0x9e3779b97f4a7c15, now, nil) != d {
			t.Fatal("P2C did not prefer the idle endpoint")
		}
	}
	if PickP2C([]*Endpoint{c, d}, 7, now, d) != c {
		t.Fatal("skip not honoured")
	}
}

// TestHTTPPoolCut: Cut ends calls in flight on connections the backend
// never answers (their deadline is an hour away), the backend sees them
// closed, an idle connection is closed too, and new calls are refused
// with ErrConnect naming the shutdown.
func TestHTTPPoolCut(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	read := make(chan struct{}, 8)   // a request arrived
	closed := make(chan struct{}, 8) // the pool closed a connection
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						closed <- struct{}{}
						return
					}
					io.Copy(io.Discard, req.Body)
					read <- struct{}{}
					if req.URL.Path == "/answer" {
						io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
					} // else: never answers
				}
			}()
		}
	}()
	p := NewHTTPPool(l.Addr().String(), 4)
	far := time.Now().Add(time.Hour)
	// One idle connection in the pool, then two calls that hang.
	if err := p.Do(far, &Request{Path: "/answer", Body: []byte("{}")}, &Response{}); err != nil {
		t.Fatal(err)
	}
	<-read
	errs := make(chan error, 2)
	for range 2 {
		go func() { errs <- p.Do(far, &Request{Path: "/hang", Body: []byte("{}")}, &Response{}) }()
	}
	<-read
	<-read
	p.Cut()
	for range 2 {
		select {
		case err := <-errs:
			if !errors.Is(err, ErrTimeout) {
				t.Errorf("a cut call: %v, want ErrTimeout", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("a call in flight was not cut")
		}
	}
	for range 2 { // both connections (the idle one was taken by a hanging call)
		select {
		case <-closed:
		case <-time.After(30 * time.Second):
			t.Fatal("the backend did not see its connections closed")
		}
	}
	err = p.Do(far, &Request{Path: "/answer", Body: []byte("{}")}, &Response{})
	if !errors.Is(err, ErrConnect) || !strings.Contains(err.Error(), "shutting down") {
		t.Fatalf("a call after Cut: %v", err)
	}
	if n := len(p.open); n != 0 {
		t.Fatalf("%d connections still open after Cut", n)
	}
}
