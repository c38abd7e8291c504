package h1

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

// errorJSON must produce valid JSON whatever the message holds (upstream
// error text, raw bytes from a request).
func TestErrorJSONIsValidJSON(t *testing.T) {
	for _, msg := range []string{"plain", "quote \" backslash \\", "ctl \x00\x01\x07\x0b\x1f\x7f", "bad utf8 \xff\xfe", "line\u2028sep", "astral \U0001F600 \U000E0001", "tab\tnl\ncr\r"} {
		b := ErrorJSON(msg)
		var e struct {
			Error string `json:"error"`
		}
		if err := json.Unmarshal(b, &e); err != nil {
			t.Errorf("ErrorJSON(%q) = %s: %v", msg, b, err)
			continue
		}
		if want := strings.ToValidUTF8(msg, "\uFFFD"); e.Error != want {
			t.Errorf("ErrorJSON(%q) decodes to %q, want %q", msg, e.Error, want)
		}
	}
}

// validHeaderValue's word-at-a-time scan agrees with the plain rule on
// every byte value at every position.
func TestValidHeaderValueMatchesByteRule(t *testing.T) {
	slow := func(b []byte) bool {
		for _, c := range b {
			if (c < 0x20 && c != '\t') || c == 0x7f {
				return false
			}
		}
		return true
	}
	base := []byte("00-0af7651916cd43dd8448eb211c80319c-\xc3\xa9b7ad6b7169203331-01")
	for pos := range base {
		for c := 0; c < 256; c++ {
			b := append([]byte(nil), base...)
			b[pos] = byte(c)
			if got, want := validHeaderValue(b), slow(b); got != want {
				t.Fatalf("byte %#x at %d: got %v, want %v", c, pos, got, want)
			}
		}
	}
	for c := 0; c < 256; c++ {
		if got, want := isToken([]byte{byte(c)}), c < 128 && (c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", byte(c)) >= 0); got != want {
			t.Fatalf("isToken(%#x) = %v", c, got)
		}
	}
}

// BenchmarkReadHead: the cost of parsing (and validating) a typical
// request head on the fast front-end.
func BenchmarkReadHead(b *testing.B) {
	raw := []byte("POST /v2/models/recommender/infer HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: Go-http-client/1.1\r\nContent-Length: 300\r\nContent-Type: application/json\r\nX-User-Id: user-42\r\nTraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\nAccept-Encoding: gzip\r\n\r\n")
	rd := bytes.NewReader(raw)
	cb := &Conn{br: bufio.NewReaderSize(rd, 16<<10), W: bufio.NewWriter(io.Discard)}
	b.ReportAllocs()
	for b.Loop() {
		rd.Reset(raw)
		cb.br.Reset(rd)
		if _, err := cb.readHead(); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzReadRequest feeds arbitrary bytes to the fast front-end's request
// parser (readHead, then readBody) and checks it never panics, never reads
// past its limits, and that whatever it accepts is unambiguous: one framing,
// a token method, a target without spaces or control bytes, header values
// without control bytes. `go test` runs the seeds; `go test -fuzz
// FuzzReadRequest ./internal/h1/` explores.
func FuzzReadRequest(f *testing.F) {
	seeds := []string{
		"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
		"POST /v2/models/m/infer HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		"POST /v2/models/m/infer HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"POST /v2/models/m/infer HTTP/1.1\r\nContent-Length: +5\r\n\r\nhello",
		"POST /v2/models/m/infer HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
		"POST /v2/models/m/infer HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
		"GET /v2/health/ready HTTP/1.0\r\n\r\n",
		"\r\n\r\nGET / HTTP/1.1\r\n\r\n",
		"GET /v2/models/%zz/ready HTTP/1.1\r\nX: a\rb\r\n\r\n",
		"POST /v2/models/m/infer HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffff\r\n",
		"POST /v2/models/m/infer HTTP/2.0\r\n\r\n",
		"NONSENSE\r\n\r\n",
		"POST  /x  HTTP/1.1\r\n\r\n",
		"POST /v2/models/\xff/infer HTTP/1.1\r\nContent-Length : 1\r\n\r\nx",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	const maxBody = 1 << 12
	s := &Server{MaxBodyBytes: maxBody}
	f.Fuzz(func(t *testing.T, in []byte) {
		b := &Conn{srv: s, br: bufio.NewReaderSize(bytes.NewReader(in), 1<<10), W: bufio.NewWriter(io.Discard)}
		r, err := b.readHead()
		if err != nil {
			var se *StatusError
			if errors.As(err, &se) && (se.Status < 400 || se.Status > 599 || se.Msg == "") {
				t.Fatalf("StatusError with status %d and message %q", se.Status, se.Msg)
			}
			return
		}
		if r.Chunked && r.ContentLength >= 0 {
			t.Fatalf("accepted both framings: %q", in)
		}
		if r.ContentLength < -1 {
			t.Fatalf("content length %d", r.ContentLength)
		}
		if !isToken(r.Method) || !validTarget(r.Target) {
			t.Fatalf("accepted method %q target %q", r.Method, r.Target)
		}
		if p := string(r.Proto); p != "HTTP/1.1" && p != "HTTP/1.0" {
			t.Fatalf("accepted protocol %q", p)
		}
		for _, h := range r.Headers {
			if !isToken(h.Name) || !validHeaderValue(h.Value) {
				t.Fatalf("accepted header %q: %q", h.Name, h.Value)
			}
		}
		if len(b.head) > MaxHeaderBytes+b.br.Size() {
			t.Fatalf("head of %d bytes kept", len(b.head))
		}
		body, err := b.ReadBody(r, nil)
		if err != nil {
			var se *StatusError
			if errors.As(err, &se) && se.Status != 400 && se.Status != 413 {
				t.Fatalf("body error with status %d: %v", se.Status, err)
			}
			return
		}
		if len(body) > maxBody {
			t.Fatalf("body of %d bytes over the %d limit", len(body), maxBody)
		}
		if r.ContentLength >= 0 && int64(len(body)) != r.ContentLength {
			t.Fatalf("body of %d bytes for Content-Length %d", len(body), r.ContentLength)
		}
	})
}

func TestKeepArmed(t *testing.T) {
	t0 := time.Unix(1000, 0)
	for name, tc := range map[string]struct {
		armed, want time.Time
		slack       time.Duration
		keep        bool
	}{
		"none armed":                 {time.Time{}, t0, time.Second, false},
		"same":                       {t0, t0, 0, true},
		"earlier within slack":       {t0, t0.Add(300 * time.Millisecond), 500 * time.Millisecond, true},
		"earlier by exactly slack":   {t0, t0.Add(500 * time.Millisecond), 500 * time.Millisecond, true},
		"earlier by more than slack": {t0, t0.Add(501 * time.Millisecond), 500 * time.Millisecond, false},
		"later than wanted":          {t0.Add(time.Millisecond), t0, time.Second, false},
		"no slack, moved":            {t0, t0.Add(time.Nanosecond), 0, false},
	} {
		if got := keepArmed(tc.armed, tc.want, tc.slack); got != tc.keep {
			t.Errorf("%s: keepArmed = %v, want %v", name, got, tc.keep)
		}
	}
	if got := lazyDeadline(5 * time.Minute); got != 500*time.Millisecond {
		t.Errorf("lazyDeadline(5m) = %v", got)
	}
	if got := lazyDeadline(160 * time.Millisecond); got != 10*time.Millisecond {
		t.Errorf("lazyDeadline(160ms) = %v", got)
	}
}
