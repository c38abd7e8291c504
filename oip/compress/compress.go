// Package compress holds the body codecs of OIP v2 transports, for every
// Switchyard server (backend and proxy): REST request bodies sent with
// Content-Encoding gzip or deflate (zlib-wrapped or raw, as clients send
// both), gzip answers for clients that send Accept-Encoding: gzip, and the
// gRPC "deflate" compressor that grpc-go does not ship (importing this
// package registers it, and grpc-go's gzip, for servers and clients).
//
// Limits apply to the decompressed size, so a small compressed body that
// inflates past the limit (a zip bomb) is refused with TooLargeError after
// reading at most limit+1 decompressed bytes.
package compress

import (
	"bufio"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"

	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/gzip" // grpc-encoding gzip
)

// TooLargeError is Decode's error for a body that inflates past the limit
// (a REST server answers it 413).
type TooLargeError struct{ Limit int64 }

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("decompressed request body exceeds the limit of %d bytes", e.Limit)
}

// FormatError is Decode's error for an unknown coding or a corrupt body (a
// REST server answers it 400).
type FormatError struct{ Msg string }

func (e *FormatError) Error() string { return e.Msg }

func formatErr(format string, a ...any) error { return &FormatError{Msg: fmt.Sprintf(format, a...)} }

// Decode decompresses body as the Content-Encoding value says ("",
// "identity", "gzip", "x-gzip", "deflate"; one coding, case-insensitive)
// and appends the result to dst[:0]. More than limit decompressed bytes is
// a *TooLargeError naming the limit; a corrupt body or an unknown coding is
// a *FormatError naming it. With no coding body itself is returned.
func Decode(dst []byte, contentEncoding string, body []byte, limit int64) ([]byte, error) {
	enc := strings.ToLower(strings.TrimSpace(contentEncoding))
	var r io.Reader
	switch enc {
	case "", "identity":
		return body, nil
	case "gzip", "x-gzip":
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			return nil, formatErr("Content-Encoding gzip: body is not gzip: %v", err)
		}
		r = zr
	case "deflate":
		if isZlib(body) {
			zr, err := zlib.NewReader(bytes.NewReader(body))
			if err != nil {
				return nil, formatErr("Content-Encoding deflate: body is not zlib: %v", err)
			}
			r = zr
		} else {
			r = flate.NewReader(bytes.NewReader(body))
		}
	default:
		return nil, formatErr("Content-Encoding %q is not supported (use gzip, deflate or identity)", contentEncoding)
	}
	out := bytes.NewBuffer(dst[:0])
	n, err := out.ReadFrom(io.LimitReader(r, limit+1))
	if n > limit {
		return nil, &TooLargeError{Limit: limit}
	}
	if err != nil {
		return nil, formatErr("Content-Encoding %s: corrupt body: %v", enc, err)
	}
	return out.Bytes(), nil
}

// isZlib reports whether b starts with a zlib header (RFC 1950: method 8,
// window <= 32 KiB, header checksum), which raw deflate data cannot be
// told apart from otherwise.
func isZlib(b []byte) bool {
	return len(b) >= 2 && b[0]&0x0f == 8 && b[0]>>4 <= 7 && (uint16(b[0])<<8|uint16(b[1]))%31 == 0
}

// AcceptsGzip reports whether an Accept-Encoding value accepts gzip (a
// "gzip" or "x-gzip" coding without q=0).
func AcceptsGzip(acceptEncoding string) bool {
	for part := range strings.SplitSeq(acceptEncoding, ",") {
		name, params, _ := strings.Cut(part, ";")
		name = strings.ToLower(strings.TrimSpace(name))
		if name != "gzip" && name != "x-gzip" {
			continue
		}
		q, ok := strings.CutPrefix(strings.ReplaceAll(strings.ToLower(params), " ", ""), "q=")
		if !ok {
			return true
		}
		f, err := strconv.ParseFloat(q, 64)
		return err == nil && f > 0
	}
	return false
}

var gzipWriters = sync.Pool{New: func() any { w, _ := gzip.NewWriterLevel(nil, gzip.BestSpeed); return w }}

// AppendGzip appends src compressed with gzip (fastest level) to dst.
func AppendGzip(dst, src []byte) []byte {
	buf := bytes.NewBuffer(dst)
	w := gzipWriters.Get().(*gzip.Writer)
	w.Reset(buf)
	_, _ = w.Write(src)
	_ = w.Close()
	gzipWriters.Put(w)
	return buf.Bytes()
}

// MinGzipBytes is the smallest answer worth compressing.
const MinGzipBytes = 1024

// Deflate is the name of the gRPC compressor registered by this package:
// zlib-wrapped deflate, as the gRPC spec's "deflate" is.
const Deflate = "deflate"

func init() { encoding.RegisterCompressor(deflateCompressor{}) }

type deflateCompressor struct{}

var zlibWriters = sync.Pool{New: func() any { w, _ := zlib.NewWriterLevel(nil, zlib.BestSpeed); return w }}

func (deflateCompressor) Name() string { return Deflate }

func (deflateCompressor) Compress(w io.Writer) (io.WriteCloser, error) {
	z := zlibWriters.Get().(*zlib.Writer)
	z.Reset(w)
	return &pooledZlib{Writer: z}, nil
}

type pooledZlib struct{ *zlib.Writer }

func (p *pooledZlib) Close() error {
	err := p.Writer.Close()
	zlibWriters.Put(p.Writer)
	return err
}

// Decompress accepts zlib-wrapped deflate and, for senders that write raw
// deflate under the same name, raw deflate.
func (deflateCompressor) Decompress(r io.Reader) (io.Reader, error) {
	br := bufio.NewReader(r)
	head, err := br.Peek(2)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	if isZlib(head) {
		return zlib.NewReader(br)
	}
	return flate.NewReader(br), nil
}
