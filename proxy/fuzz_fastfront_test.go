package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/switchyard-dev/switchyard/oip"
)

// FuzzReadRequest feeds arbitrary bytes to the fast front-end's request
// parser (readHead, then readBody) and checks it never panics, never reads
// past its limits, and that whatever it accepts is unambiguous: one framing,
// a token method, a target without spaces or control bytes, header values
// without control bytes. `go test` runs the seeds; `go test -fuzz
// FuzzReadRequest ./proxy/` explores.
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
	s := &fastServer{p: &Proxy{cfg: Config{MaxBodyBytes: maxBody}}}
	f.Fuzz(func(t *testing.T, in []byte) {
		b := &connBufs{br: bufio.NewReaderSize(bytes.NewReader(in), 1<<10), bw: bufio.NewWriter(io.Discard)}
		r, err := readHead(b)
		if err != nil {
			var pe *protoError
			if errors.As(err, &pe) && (pe.status < 400 || pe.status > 599 || pe.msg == "") {
				t.Fatalf("protoError with status %d and message %q", pe.status, pe.msg)
			}
			return
		}
		if r.chunked && r.contentLength >= 0 {
			t.Fatalf("accepted both framings: %q", in)
		}
		if r.contentLength < -1 {
			t.Fatalf("content length %d", r.contentLength)
		}
		if !isToken(r.method) || !validTarget(r.target) {
			t.Fatalf("accepted method %q target %q", r.method, r.target)
		}
		if p := string(r.proto); p != "HTTP/1.1" && p != "HTTP/1.0" {
			t.Fatalf("accepted protocol %q", p)
		}
		for _, h := range r.hdrs {
			if !isToken(h.name) || !validHeaderValue(h.value) {
				t.Fatalf("accepted header %q: %q", h.name, h.value)
			}
		}
		if len(b.head) > maxHeaderBytes+b.br.Size() {
			t.Fatalf("head of %d bytes kept", len(b.head))
		}
		// The path router takes whatever the target is.
		path, _, _ := strings.Cut(string(r.target), "?")
		rt := oip.ParseHTTPPath(path)
		if rt.Kind == oip.RouteInfer && rt.Model == "" {
			t.Fatalf("infer route without a model: %q", path)
		}
		body, err := s.readBody(b, r, nil)
		if err != nil {
			var oe *oip.Error
			if errors.As(err, &oe) && oe.HTTPStatus() != 400 && oe.HTTPStatus() != 413 {
				t.Fatalf("body error with status %d: %v", oe.HTTPStatus(), err)
			}
			return
		}
		if len(body) > maxBody {
			t.Fatalf("body of %d bytes over the %d limit", len(body), maxBody)
		}
		if r.contentLength >= 0 && int64(len(body)) != r.contentLength {
			t.Fatalf("body of %d bytes for Content-Length %d", len(body), r.contentLength)
		}
	})
}

// FuzzParseHTTPPath checks the OIP path router the proxy uses on every
// request: no panic, and a model or version it returns is never empty
// when the route needs one.
func FuzzParseHTTPPath(f *testing.F) {
	for _, s := range []string{"/v2", "/v2/models/m/infer", "/v2/models/m/versions/1/infer", "/v2/models/a%2Fb/ready",
		"/v2/models/%zz/infer", "/v2/models//infer", "/v2/models/m/versions//infer", "/v2/repository/models/m/load",
		"/v2/models/m/", "/v2/models/\xff\xfe/infer", "/v2/models/../infer", "/v2/health/live", "/v2/models/m/versions"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, path string) {
		rt := oip.ParseHTTPPath(path)
		switch rt.Kind {
		case oip.RouteUnknown, oip.RouteServerMetadata, oip.RouteHealthLive, oip.RouteHealthReady, oip.RouteRepositoryIndex:
			if rt.Model != "" || rt.Version != "" {
				t.Fatalf("%q: kind %v with model %q version %q", path, rt.Kind, rt.Model, rt.Version)
			}
		default:
			if rt.Model == "" {
				t.Fatalf("%q: kind %v without a model", path, rt.Kind)
			}
		}
		if strings.Contains(path, "/versions/") && rt.Kind == oip.RouteInfer && rt.Version == "" && utf8.ValidString(path) && !strings.Contains(path, "%") {
			// A literal /versions/{v}/infer always yields v (unless the
			// model segment itself was "versions").
			if !strings.HasPrefix(path, "/v2/models/versions/") {
				t.Fatalf("%q: infer without its version", path)
			}
		}
	})
}
