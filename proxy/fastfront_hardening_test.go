package proxy

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/inference-backend/backendtest"
	"github.com/switchyard-dev/switchyard/internal/rawhttp"
	"github.com/switchyard-dev/switchyard/proxy/front"
)

// Adversarial HTTP/1.1 input against the fast front-end (fastfront.go):
// every bad request gets a clear 4xx naming the problem (or a clean close),
// never a panic or a hang, and the server keeps answering good requests.

// checkError asserts a JSON {"error": ...} answer with the status, naming
// the problem (want is a substring of the message, case-insensitive).
func checkError(t *testing.T, r rawhttp.Result, i, status int, want string) {
	t.Helper()
	if len(r.Resps) <= i {
		t.Fatalf("got %d responses (read ended with %v), want a %d at %d", len(r.Resps), r.Err, status, i)
	}
	if r.Resps[i].StatusCode != status {
		t.Fatalf("response %d: status %d, want %d: %s", i, r.Resps[i].StatusCode, status, r.Bodies[i])
	}
	var e struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal([]byte(r.Bodies[i]), &e); err != nil || e.Error == "" {
		t.Fatalf("response %d: body is not a JSON error (%v): %q", i, err, r.Bodies[i])
	}
	if !strings.Contains(strings.ToLower(e.Error), strings.ToLower(want)) {
		t.Fatalf("response %d: error %q does not name %q", i, e.Error, want)
	}
}

func TestFastFrontHardening(t *testing.T) {
	be := backendtest.Start(t, backendtest.Options{})
	p := startProxy(t, Config{Models: []api.Model{demoModel(be, map[string]int{"v1": 100})}})
	addr := p.HTTPAddr()
	good := string(inferBody(3))
	goodReq := fmt.Sprintf("POST /v2/models/recommender/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(good), good)
	head := "POST /v2/models/recommender/infer HTTP/1.1\r\nHost: x\r\n"

	// Each case is one fresh connection: a single 4xx naming the problem,
	// then the server closes (it can no longer trust the framing).
	cases := []struct {
		name, raw string
		status    int
		want      string
	}{
		{"CL then TE (smuggling)", head + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "Transfer-Encoding"},
		{"TE then CL (smuggling)", head + "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400, "Transfer-Encoding"},
		{"TE twice", head + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "Transfer-Encoding"},
		{"TE list", head + "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 400, "Transfer-Encoding"},
		{"CL with plus sign", head + "Content-Length: +5\r\n\r\nhello", 400, "Content-Length"},
		{"CL negative", head + "Content-Length: -1\r\n\r\n", 400, "Content-Length"},
		{"CL minus zero", head + "Content-Length: -0\r\n\r\n", 400, "Content-Length"},
		{"CL list", head + "Content-Length: 5, 5\r\n\r\nhello", 400, "Content-Length"},
		{"CL duplicate different", head + "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400, "Content-Length"},
		{"CL overflows int64", head + "Content-Length: 99999999999999999999\r\n\r\n", 400, "Content-Length"},
		{"CL huge", head + "Content-Length: 1000000000000\r\n\r\n", 413, "limit"},
		{"space before colon", head + "Content-Length : 5\r\n\r\nhello", 400, "header"},
		{"bare CR in value", head + "Traceparent: 00-x\rX-Injected: 1\r\nContent-Length: 0\r\n\r\n", 400, "header"},
		{"NUL in value", head + "X-User-Id: a\x00b\r\nContent-Length: 0\r\n\r\n", 400, "header"},
		{"obs-fold", head + "X-A: 1\r\n  folded\r\nContent-Length: 0\r\n\r\n", 400, "header"},
		{"no colon", head + "NoColonHere\r\n\r\n", 400, "header"},
		{"empty header name", head + ": v\r\n\r\n", 400, "header"},
		{"request line without version", "POST /v2/models/recommender/infer\r\n\r\n", 400, "request line"},
		{"request line one word", "NONSENSE\r\n\r\n", 400, "request line"},
		{"HTTP/2.0", "POST /v2/models/recommender/infer HTTP/2.0\r\nHost: x\r\n\r\n", 505, "HTTP/2.0"},
		{"garbage version", "POST /v2/models/recommender/infer HTTP/1.1x\r\nHost: x\r\n\r\n", 400, "protocol"},
		{"URL over 16 KiB", "GET /v2/models/" + strings.Repeat("a", 20<<10) + "/ready HTTP/1.1\r\nHost: x\r\n\r\n", 414, "request line"},
		{"one header over 16 KiB", head + "X-Big: " + strings.Repeat("b", 20<<10) + "\r\n\r\n", 431, "head"},
		{"header flood", head + strings.Repeat("X-Flood: 0123456789012345678901234567890\r\n", 3000) + "\r\n", 431, "head"},
		{"bad chunk size", head + "Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", 400, "chunk"},
		{"chunk size overflow", head + "Transfer-Encoding: chunked\r\n\r\nfffffffffffffffffffff\r\nhello\r\n0\r\n\r\n", 400, "chunk"},
		{"negative chunk size", head + "Transfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n", 400, "chunk"},
		{"chunked over the limit", head + "Transfer-Encoding: chunked\r\n\r\n7fffffff\r\nhello", 413, "limit"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := rawhttp.Send(t, addr, tc.raw, 2, false)
			checkError(t, r, 0, tc.status, tc.want)
			if len(r.Resps) != 1 || !r.Closed {
				t.Fatalf("want one answer then close; got %d answers, closed=%v", len(r.Resps), r.Closed)
			}
		})
	}

	// Odd but well-framed targets: a clear 4xx and the connection stays
	// usable (the next request on it is answered).
	targets := []struct {
		name, target string
		status       int
		want         string
	}{
		{"non-UTF-8 model name", "/v2/models/\xff\xfe/infer", 404, "unknown model"},
		{"control byte in model name", "/v2/models/a%01b/infer", 404, "unknown model"},
		{"traversal", "/v2/models/..%2F..%2Fetc%2Fpasswd/infer", 404, "unknown model"},
		{"dot-dot segment", "/v2/models/../infer", 404, "unknown model"},
		{"bad percent escape", "/v2/models/%zz/infer", 400, "bad request target"},
		{"unknown version", "/v2/models/recommender/versions/v9/infer", 404, "no version"},
		{"empty model", "/v2/models//infer", 404, "unknown path"},
		{"query only", "/v2/models/nope/infer?x=%zz", 404, "unknown model"},
	}
	for _, tc := range targets {
		t.Run(tc.name, func(t *testing.T) {
			raw := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", tc.target, len(good), good) + goodReq
			r := rawhttp.Send(t, addr, raw, 2, true)
			checkError(t, r, 0, tc.status, tc.want)
			if len(r.Resps) != 2 || r.Resps[1].StatusCode != 200 {
				t.Fatalf("the next request on the connection was not answered: %d answers (%v)", len(r.Resps), r.Err)
			}
		})
	}

	t.Run("lowercase method", func(t *testing.T) {
		r := rawhttp.Send(t, addr, strings.Replace(goodReq, "POST", "post", 1), 1, true)
		checkError(t, r, 0, 405, "method")
	})

	t.Run("pipelined bad head in the middle", func(t *testing.T) {
		r := rawhttp.Send(t, addr, goodReq+"BROKEN\r\n\r\n"+goodReq, 3, false)
		if len(r.Resps) < 1 || r.Resps[0].StatusCode != 200 {
			t.Fatalf("first (good) request lost: %d answers, %v", len(r.Resps), r.Err)
		}
		checkError(t, r, 1, 400, "request line")
		if len(r.Resps) != 2 || !r.Closed {
			t.Fatalf("want close after the bad request; got %d answers", len(r.Resps))
		}
	})
	t.Run("pipelined bad chunk in the middle", func(t *testing.T) {
		r := rawhttp.Send(t, addr, goodReq+head+"Transfer-Encoding: chunked\r\n\r\nxyz\r\n"+goodReq, 3, false)
		if len(r.Resps) < 1 || r.Resps[0].StatusCode != 200 {
			t.Fatalf("first (good) request lost: %d answers, %v", len(r.Resps), r.Err)
		}
		checkError(t, r, 1, 400, "chunk")
		if len(r.Resps) != 2 || !r.Closed {
			t.Fatalf("want close after the bad request; got %d answers", len(r.Resps))
		}
	})
	t.Run("pipelined then closed mid-body", func(t *testing.T) {
		r := rawhttp.Send(t, addr, goodReq+head+"Content-Length: 100\r\n\r\n{\"inp", 3, true)
		if len(r.Resps) != 1 || r.Resps[0].StatusCode != 200 || !r.Closed {
			t.Fatalf("want the good answer then close; got %d answers (%v)", len(r.Resps), r.Err)
		}
	})
	t.Run("closed mid-head", func(t *testing.T) {
		r := rawhttp.Send(t, addr, "POST /v2/models/recommender/infer HTTP/1.1\r\nHost:", 1, true)
		if len(r.Resps) != 0 || !r.Closed {
			t.Fatalf("want a clean close, got %d answers", len(r.Resps))
		}
	})
	t.Run("HTTP/1.0 without keep-alive", func(t *testing.T) {
		r := rawhttp.Send(t, addr, strings.Replace(goodReq, "HTTP/1.1", "HTTP/1.0", 1)+goodReq, 2, false)
		if len(r.Resps) != 1 || r.Resps[0].StatusCode != 200 || !r.Closed {
			t.Fatalf("HTTP/1.0: want one answer then close, got %d (%v)", len(r.Resps), r.Err)
		}
	})
	t.Run("expect 100-continue over the limit", func(t *testing.T) {
		r := rawhttp.Send(t, addr, head+"Expect: 100-continue\r\nContent-Length: 999999999999\r\n\r\n", 2, false)
		checkError(t, r, 0, 413, "limit")
	})

	// After all of it, a good request on a fresh connection is answered.
	r := rawhttp.Send(t, addr, goodReq, 1, true)
	if len(r.Resps) != 1 || r.Resps[0].StatusCode != 200 {
		t.Fatalf("good request after the attacks: %d answers (%v)", len(r.Resps), r.Err)
	}
}

// startFastServer serves p's REST front-end on a fresh listener with short
// timeouts (the defaults are minutes).
func startFastServer(t *testing.T, p *Proxy, head, body, idle time.Duration) string {
	t.Helper()
	return startFastServerOn(t, p, listen(t), head, body, idle)
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// startFastServerOn serves p's REST front-end on l (zero timeouts: the
// defaults).
func startFastServerOn(t *testing.T, p *Proxy, l net.Listener, head, body, idle time.Duration) string {
	t.Helper()
	s := front.NewFastServer(p.pl, head, body, idle)
	done := make(chan struct{})
	go func() { defer close(done); s.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
		<-done
	})
	return l.Addr().String()
}

// Slow clients are cut off by the read deadlines: head, body and idle.
// (Nothing here asserts a duration: the 10 s read bound in rawhttp.Send only
// turns a server that never closes into a failure instead of a hang.)
func TestFastFrontDeadlines(t *testing.T) {
	be := backendtest.Start(t, backendtest.Options{})
	p := startProxy(t, Config{Models: []api.Model{demoModel(be, map[string]int{"v1": 100})}})
	addr := startFastServer(t, p, 200*time.Millisecond, 200*time.Millisecond, 200*time.Millisecond)
	head := "POST /v2/models/recommender/infer HTTP/1.1\r\nHost: x\r\n"

	t.Run("idle connection", func(t *testing.T) {
		r := rawhttp.Send(t, addr, "", 1, false)
		if len(r.Resps) != 0 || !r.Closed {
			t.Fatalf("idle: %d answers", len(r.Resps))
		}
	})
	t.Run("head never finished", func(t *testing.T) {
		r := rawhttp.Send(t, addr, head+"X-Slow: 1\r\n", 1, false)
		if len(r.Resps) != 0 || !r.Closed {
			t.Fatalf("slow head: %d answers", len(r.Resps))
		}
	})
	t.Run("body never finished", func(t *testing.T) {
		r := rawhttp.Send(t, addr, head+"Content-Length: 100\r\n\r\n{\"inputs\":", 1, false)
		checkError(t, r, 0, 408, "body")
		if !r.Closed {
			t.Fatal("connection left open after a body timeout")
		}
	})
	t.Run("chunked body never finished", func(t *testing.T) {
		r := rawhttp.Send(t, addr, head+"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", 1, false)
		checkError(t, r, 0, 408, "body")
	})
	t.Run("expect 100-continue then no body", func(t *testing.T) {
		r := rawhttp.Send(t, addr, head+"Expect: 100-continue\r\nContent-Length: 50\r\n\r\n", 2, false)
		// 100 Continue is an interim answer: http.ReadResponse returns it
		// as a response of its own.
		if len(r.Resps) < 2 || r.Resps[0].StatusCode != 100 {
			t.Fatalf("want 100 then an error, got %d answers (%v)", len(r.Resps), r.Err)
		}
		checkError(t, r, 1, 408, "body")
	})
	t.Run("slow body on another path", func(t *testing.T) {
		r := rawhttp.Send(t, addr, "POST /v2/repository/index HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{", 1, false)
		checkError(t, r, 0, 408, "body")
	})
	good := string(inferBody(2))
	r := rawhttp.Send(t, addr, fmt.Sprintf("%sContent-Length: %d\r\n\r\n%s", head, len(good), good), 1, true)
	if len(r.Resps) != 1 || r.Resps[0].StatusCode != 200 {
		t.Fatalf("good request after slow clients: %d answers (%v)", len(r.Resps), r.Err)
	}
}
