package oip

import (
	"bytes"
	"time"

	"github.com/switchyard-dev/switchyard/internal/h1"
	"github.com/switchyard-dev/switchyard/oip/compress"
)

// FastInfer answers POST /v2/models/{name}[/versions/{v}]/infer of s on the
// lean HTTP/1.1 server (internal/h1: no per-request goroutine, header map
// or background read; pooled body and answer buffers), with the same
// decoding, errors and encoding as NewHTTPHandler's infer endpoint. Every
// other request is left to the server's handler (NewHTTPHandler for the
// rest of the protocol). Measured: the backend's REST path spent more CPU
// in net/http than in decoding and encoding tensors
// (docs/benchmarks-backend.md).
func FastInfer(s Server, opts HTTPOptions) h1.FastFunc {
	h := NewHTTPHandler(s, opts).(*httpHandler)
	return h.fastInfer
}

var (
	methodPOST  = []byte("POST")
	inferSuffix = []byte("/infer")
)

func (h *httpHandler) fastInfer(c *h1.Conn, r *h1.Request) (served, keep bool, err error) {
	path := r.Path()
	if !bytes.Equal(r.Method, methodPOST) || !bytes.HasSuffix(path, inferSuffix) {
		return false, false, nil
	}
	route := ParseHTTPPath(string(path))
	if route.Kind != RouteInfer {
		return false, false, nil
	}
	buf := getBuf()
	defer putBuf(buf)
	body, err := c.ReadBody(r, *buf)
	*buf = body
	if err != nil {
		c.AnswerError(err)
		return true, false, err
	}
	dbuf := getBuf()
	defer putBuf(dbuf)
	out := getBuf()
	defer putBuf(out)
	var answer []byte
	var hl int
	body, ierr := DecodeBody(r.HeaderString("content-encoding"), body, h.opts.MaxBodyBytes, dbuf)
	if ierr == nil {
		answer, hl, ierr = h.inferBody(c.Context(), route, r.Header("inference-header-content-length"), body, (*out)[:0])
		*out = answer
	}
	var gzipped bool
	if ierr == nil && len(answer) >= compress.MinGzipBytes && compress.AcceptsGzip(r.HeaderString("accept-encoding")) {
		// The decompressed request is done with: its buffer takes the
		// compressed answer.
		*dbuf = compress.AppendGzip((*dbuf)[:0], answer)
		answer, gzipped = *dbuf, true
	}
	closing := r.Close || c.Closing() // draining: the last answer on this connection
	switch {
	case ierr != nil:
		e := AsError(ierr)
		if e.Code == Internal {
			h.opts.Logger.Error("oip: internal error", "err", e.Msg)
		}
		eb := appendJSONString(append((*out)[:0], `{"error":`...), e.Msg)
		*out = append(eb, '}')
		h1.StartHead(c.W, e.HTTPStatus(), "application/json")
		if ra := e.RetryAfterSeconds(); ra != "" {
			c.W.WriteString("Retry-After: " + ra + "\r\n")
		}
		h1.EndHead(c.W, len(*out), closing)
		c.W.Write(*out)
	case hl < len(*out) || gzipped: // binary tensor data after a JSON header, or a compressed answer
		ct := "application/json"
		if hl < len(*out) {
			ct = "application/octet-stream"
		}
		h1.StartHead(c.W, 200, ct)
		if hl < len(*out) {
			c.W.WriteString(HeaderContentLength + ": ")
			h1.WriteInt(c.W, hl)
			c.W.WriteString("\r\n")
		}
		if gzipped {
			c.W.WriteString("Content-Encoding: gzip\r\nVary: Accept-Encoding\r\n")
		}
		h1.EndHead(c.W, len(answer), closing)
		c.W.Write(answer)
	default:
		h1.WriteResponse(c.W, 200, "application/json", answer, closing)
	}
	c.RequestDone(time.Now())
	return true, !closing, c.Flush()
}
