package h1

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
)

// ErrTooLarge is returned (wrapped) by ReadChunked for a body over its
// limit.
var ErrTooLarge = errors.New("body too large")

// ErrMalformed is returned (wrapped) by ReadChunked for a body that breaks
// the chunked framing.
var ErrMalformed = errors.New("malformed chunked body")

// ReadChunked appends a chunked transfer-encoded body from br to dst,
// refusing more than max bytes. A chunk whose data is not followed by CRLF
// is refused (another reader could frame it differently: request
// smuggling). Read errors are returned as they are.
func ReadChunked(br *bufio.Reader, dst []byte, max int) ([]byte, error) {
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return dst, err
		}
		line = trimCRLF(line)
		if i := bytes.IndexByte(line, ';'); i >= 0 {
			line = line[:i]
		}
		n, err := strconv.ParseUint(string(line), 16, 32)
		if err != nil {
			return dst, fmt.Errorf("%w: chunk size %q", ErrMalformed, line)
		}
		if n == 0 {
			// Trailers until an empty line.
			for {
				line, err = br.ReadSlice('\n')
				if err != nil {
					return dst, err
				}
				if len(trimCRLF(line)) == 0 {
					return dst, nil
				}
			}
		}
		if len(dst)+int(n) > max {
			return dst, fmt.Errorf("%w: body exceeds %d bytes", ErrTooLarge, max)
		}
		start := len(dst)
		dst = Grow(dst, int(n))
		if _, err := io.ReadFull(br, dst[start:start+int(n)]); err != nil {
			return dst, err
		}
		crlf, err := br.Peek(2)
		if err != nil {
			return dst, err
		}
		if crlf[0] != '\r' || crlf[1] != '\n' {
			return dst, fmt.Errorf("%w: chunk data not followed by CRLF", ErrMalformed)
		}
		br.Discard(2)
	}
}

// Grow extends b by n bytes of length (contents undefined), reallocating
// at least doubled when needed.
func Grow(b []byte, n int) []byte {
	if cap(b)-len(b) < n {
		nb := make([]byte, len(b), 2*cap(b)+n)
		copy(nb, b)
		b = nb
	}
	return b[:len(b)+n]
}

// ReadBody reads the request's body into dst (reused when large enough),
// at most the server's MaxBodyBytes. Errors: a *StatusError (413 over the
// limit, 400 for a malformed chunked body, 408 for a body that did not
// arrive in time) to answer with AnswerError, or the read error of a
// client that left.
func (c *Conn) ReadBody(r *Request, dst []byte) ([]byte, error) {
	max := c.srv.maxBody()
	if r.ExpectContinue && (r.ContentLength > 0 || r.Chunked) {
		if r.ContentLength > max {
			return dst, tooLarge(r.ContentLength, max)
		}
		c.W.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
		if err := c.W.Flush(); err != nil {
			return dst, err
		}
	}
	switch {
	case r.Chunked:
		out, err := ReadChunked(c.br, dst[:0], int(max))
		switch {
		case err == nil:
		case errors.Is(err, ErrTooLarge):
			return out, &StatusError{http.StatusRequestEntityTooLarge, fmt.Sprintf("request body exceeds the limit of %d bytes", max)}
		case IsTimeout(err):
			return out, c.srv.bodyTimeoutError()
		case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
			return out, err // the client left: nobody to answer
		default:
			return out, badRequest("bad chunked request body: %v", err)
		}
		return out, nil
	case r.ContentLength > max:
		return dst, tooLarge(r.ContentLength, max)
	case r.ContentLength > 0:
		n := int(r.ContentLength)
		if cap(dst) < n {
			dst = make([]byte, n)
		}
		dst = dst[:n]
		_, err := io.ReadFull(c.br, dst)
		if IsTimeout(err) {
			err = c.srv.bodyTimeoutError()
		}
		return dst, err
	}
	return dst[:0], nil
}

func tooLarge(n, max int64) error {
	return &StatusError{http.StatusRequestEntityTooLarge, fmt.Sprintf("request body of %d bytes exceeds the limit of %d bytes", n, max)}
}

func (s *Server) bodyTimeoutError() error {
	return &StatusError{http.StatusRequestTimeout, fmt.Sprintf("request body not received within %s", orDefault(s.BodyTimeout, DefaultBodyTimeout))}
}

// IsTimeout reports whether err is a net.Error timeout.
func IsTimeout(err error) bool {
	if err == nil {
		return false
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
