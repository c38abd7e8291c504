package h1

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
)

// MaxHeaderBytes bounds a request head (request line and headers).
const MaxHeaderBytes = 64 << 10

// Header is one request header; both slices point into the connection's
// head buffer and are valid until the next request is read.
type Header struct{ Name, Value []byte }

// Request is a parsed request head. Its byte slices point into the
// connection's buffers: valid until the connection reads its next request.
type Request struct {
	Method, Target, Proto []byte
	Headers               []Header
	// ContentLength is -1 when the request has no Content-Length.
	ContentLength  int64
	Chunked, Close bool
	ExpectContinue bool
}

// Header returns the value of the first header named lowerName (given in
// lower case; matched case-insensitively), or nil.
func (r *Request) Header(lowerName string) []byte {
	for _, h := range r.Headers {
		if EqualFoldLower(h.Name, lowerName) {
			return h.Value
		}
	}
	return nil
}

// HeaderString is Header as a string ("" when absent).
func (r *Request) HeaderString(lowerName string) string {
	v := r.Header(lowerName)
	if v == nil {
		return ""
	}
	return string(v)
}

// Path is the target without its query.
func (r *Request) Path() []byte {
	if i := bytes.IndexByte(r.Target, '?'); i >= 0 {
		return r.Target[:i]
	}
	return r.Target
}

// EqualFoldLower reports whether a equals lower (all lower case) ignoring
// ASCII case.
func EqualFoldLower(a []byte, lower string) bool {
	if len(a) != len(lower) {
		return false
	}
	for i := 0; i < len(a); i++ {
		c := a[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

func trimCRLF(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

// StatusError is a request that gets an answer with Status and a JSON
// {"error": Msg} body before the connection is closed (a malformed head,
// an oversized or late body).
type StatusError struct {
	Status int
	Msg    string
}

func (e *StatusError) Error() string { return e.Msg }

func badRequest(format string, args ...any) error {
	return &StatusError{http.StatusBadRequest, fmt.Sprintf(format, args...)}
}

var errHeadTooLarge = &StatusError{http.StatusRequestHeaderFieldsTooLarge, "request head too large"}

// readHead parses the request line and headers from br into c.head.
func (c *Conn) readHead() (*Request, error) {
	c.head = c.head[:0]
	c.hdrs = c.hdrs[:0]
	type span struct{ n0, n1, v0, v1 int }
	var spans [64]span
	sp := spans[:0]
	line, err := c.br.ReadSlice('\n')
	// RFC 9112 §2.2: ignore empty lines before the request line (some
	// clients send a CRLF after a POST body).
	for skip := 0; err == nil && skip < 4 && len(trimCRLF(line)) == 0; skip++ {
		line, err = c.br.ReadSlice('\n')
	}
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, &StatusError{http.StatusRequestURITooLong, fmt.Sprintf("request line longer than %d bytes", c.br.Size())}
		}
		return nil, err
	}
	c.head = append(c.head, trimCRLF(line)...)
	reqLineEnd := len(c.head)
	for {
		line, err = c.br.ReadSlice('\n')
		if err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				return nil, errHeadTooLarge
			}
			return nil, err
		}
		line = trimCRLF(line)
		if len(line) == 0 {
			break
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || !isToken(line[:colon]) {
			return nil, badRequest("malformed header line %q (want token: value)", line)
		}
		if !validHeaderValue(line[colon+1:]) {
			return nil, badRequest("header %q has a control character in its value", line[:colon])
		}
		if len(c.head)+len(line) > MaxHeaderBytes {
			return nil, errHeadTooLarge
		}
		start := len(c.head)
		c.head = append(c.head, line...)
		v0 := start + colon + 1
		for v0 < len(c.head) && (c.head[v0] == ' ' || c.head[v0] == '\t') {
			v0++
		}
		v1 := len(c.head)
		for v1 > v0 && (c.head[v1-1] == ' ' || c.head[v1-1] == '\t') {
			v1--
		}
		sp = append(sp, span{start, start + colon, v0, v1})
	}
	for _, s := range sp {
		c.hdrs = append(c.hdrs, Header{Name: c.head[s.n0:s.n1], Value: c.head[s.v0:s.v1]})
	}
	rl := c.head[:reqLineEnd]
	i := bytes.IndexByte(rl, ' ')
	j := bytes.LastIndexByte(rl, ' ')
	if i <= 0 || j <= i || !isToken(rl[:i]) || !validTarget(rl[i+1:j]) {
		return nil, badRequest("malformed request line %q (want METHOD /path HTTP/1.1)", rl)
	}
	r := &c.req
	*r = Request{Method: rl[:i], Target: rl[i+1 : j], Proto: rl[j+1:], Headers: c.hdrs, ContentLength: -1}
	switch {
	case bytes.Equal(r.Proto, []byte("HTTP/1.1")):
	case bytes.Equal(r.Proto, []byte("HTTP/1.0")):
		r.Close = true
	case len(r.Proto) == 8 && bytes.HasPrefix(r.Proto, []byte("HTTP/")) && isDigit(r.Proto[5]) && r.Proto[6] == '.' && isDigit(r.Proto[7]):
		return nil, &StatusError{http.StatusHTTPVersionNotSupported, fmt.Sprintf("unsupported protocol version %q (this server speaks HTTP/1.1)", r.Proto)}
	default:
		return nil, badRequest("malformed protocol %q in request line (want HTTP/1.1)", r.Proto)
	}
	for _, h := range r.Headers {
		switch {
		case EqualFoldLower(h.Name, "content-length"):
			n, ok := ParseDigits(h.Value)
			if !ok || (r.ContentLength >= 0 && r.ContentLength != n) {
				return nil, badRequest("bad Content-Length %q (want one non-negative decimal integer)", h.Value)
			}
			r.ContentLength = n
		case EqualFoldLower(h.Name, "transfer-encoding"):
			if !bytes.EqualFold(h.Value, []byte("chunked")) || r.Chunked {
				return nil, badRequest("unsupported Transfer-Encoding %q (only a single \"chunked\" is accepted)", h.Value)
			}
			r.Chunked = true
		case EqualFoldLower(h.Name, "connection"):
			if bytes.EqualFold(h.Value, []byte("close")) {
				r.Close = true
			} else if bytes.EqualFold(h.Value, []byte("keep-alive")) {
				r.Close = false
			}
		case EqualFoldLower(h.Name, "expect"):
			r.ExpectContinue = bytes.EqualFold(h.Value, []byte("100-continue"))
		}
	}
	if r.Chunked && r.ContentLength >= 0 {
		// Both framings at once is the request-smuggling shape (RFC 9112
		// §6.3): refuse rather than pick one.
		return nil, badRequest("both Content-Length and Transfer-Encoding: chunked are set; send one")
	}
	return r, nil
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// ParseDigits parses 1*DIGIT only (no sign, no spaces, no list), up to
// 18 digits (no int64 overflow): Content-Length and the like.
func ParseDigits(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if !isDigit(c) {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// tchar bits for bytes 0..63 and 64..127: ALPHA, DIGIT and
// "!#$%&'*+-.^_`|~" (RFC 9110 §5.6.2).
const tcharLo, tcharHi = 0x3ff6cfa00000000, 0x57ffffffc7fffffe

// isToken reports whether b is an RFC 9110 token (method, header name).
func isToken(b []byte) bool {
	for _, c := range b {
		var ok uint64
		switch {
		case c < 64:
			ok = tcharLo >> c & 1
		case c < 128:
			ok = tcharHi >> (c - 64) & 1
		}
		if ok == 0 {
			return false
		}
	}
	return len(b) > 0
}

// validHeaderValue refuses control characters other than tab: a bare CR
// or NUL passed on to an upstream could split its header.
func validHeaderValue(b []byte) bool {
	// Eight bytes at a time while no byte is < 0x20 or 0x7f (exact "any
	// byte below n" and "any byte equal" word tests); the byte loop decides
	// the rest, tabs included.
	const lo, hi = 0x0101010101010101, 0x8080808080808080
	for len(b) >= 8 {
		w := binary.LittleEndian.Uint64(b)
		d := w ^ (0x7f * lo)
		if (w-0x20*lo)&^w&hi != 0 || (d-lo)&^d&hi != 0 {
			break
		}
		b = b[8:]
	}
	for _, c := range b {
		if (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// validTarget refuses an empty target or one with control characters or
// spaces (bytes >= 0x80 are left to the router, which answers 404).
func validTarget(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if c <= ' ' || c == 0x7f {
			return false
		}
	}
	return true
}
