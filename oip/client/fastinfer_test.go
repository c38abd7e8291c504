package client_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/internal/h1"
	"github.com/switchyard-dev/switchyard/internal/rawhttp"
	"github.com/switchyard-dev/switchyard/oip"
)

// answer is what a client sees of one response.
type answer struct {
	status           int
	ctype, headerLen string
	body             string
}

func (a answer) String() string {
	return fmt.Sprintf("%d ct=%q ihcl=%q %s", a.status, a.ctype, a.headerLen, a.body)
}

// exchange sends raw (one or more pipelined requests) on a new connection
// and reads n answers.
func exchange(t *testing.T, addr, raw string, n int) []answer {
	t.Helper()
	var out []answer
	for _, resp := range rawhttp.Exchange(t, addr, raw, n) {
		b, _ := io.ReadAll(resp.Body)
		out = append(out, answer{resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get(oip.HeaderContentLength), string(b)})
	}
	return out
}

func post(path, ctype string, extra string, body []byte) string {
	return fmt.Sprintf("POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\n%sContent-Length: %d\r\n\r\n%s", path, ctype, extra, len(body), body)
}

// The lean server's infer path (oip.FastInfer on internal/h1) answers
// exactly as the net/http handler does: the same status, content type,
// binary header length and bytes for good requests, binary ones and every
// kind of bad one; requests it does not take reach the handler.
func TestFastInferMatchesHandler(t *testing.T) {
	s := newAddOne()
	opts := oip.HTTPOptions{MaxBodyBytes: 4 << 10}
	// net/http with the handler.
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: oip.NewHTTPHandler(s, opts), ReadHeaderTimeout: 10 * time.Second}
	go hs.Serve(hl)
	// internal/h1 with FastInfer and the handler for the rest.
	fl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fs := &h1.Server{Fast: oip.FastInfer(s, opts), Handler: oip.NewHTTPHandler(s, opts), MaxBodyBytes: opts.MaxBodyBytes}
	done := make(chan error, 1)
	go func() { done <- fs.Serve(fl) }()
	t.Cleanup(func() {
		hs.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := fs.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; err != http.ErrServerClosed {
			t.Errorf("Serve returned %v", err)
		}
	})

	jsonBody := []byte(`{"id":"r1","inputs":[{"name":"x","datatype":"FP32","shape":[2,4],"data":[1,2,3,4,5,6,7,8.5]}]}`)
	// Binary: JSON header, then 8 little-endian float32s.
	hdr := []byte(`{"inputs":[{"name":"x","datatype":"FP32","shape":[2,4],"parameters":{"binary_data_size":32}}],"outputs":[{"name":"x_out","parameters":{"binary_data":true}}]}`)
	bin := append([]byte(nil), hdr...)
	for i := range 8 {
		bin = binary.LittleEndian.AppendUint32(bin, math.Float32bits(float32(i)+0.25))
	}
	big := []byte(`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}],"pad":"` + strings.Repeat("a", 5<<10) + `"}`)
	cases := map[string]string{
		"json":                 post("/v2/models/addone/infer", "application/json", "", jsonBody),
		"json, version":        post("/v2/models/addone/versions/1/infer", "application/json", "", jsonBody),
		"binary":               post("/v2/models/addone/infer", "application/octet-stream", fmt.Sprintf("%s: %d\r\n", oip.HeaderContentLength, len(hdr)), bin),
		"escaped name":         post("/v2/models/add%6Fne/infer", "application/json", "", jsonBody),
		"unknown model":        post("/v2/models/nope/infer", "application/json", "", jsonBody),
		"not ready":            post("/v2/models/cold/infer", "application/json", "", jsonBody),
		"malformed JSON":       post("/v2/models/addone/infer", "application/json", "", []byte(`{"inputs":[`)),
		"no inputs":            post("/v2/models/addone/infer", "application/json", "", []byte(`{"inputs":[]}`)),
		"shape vs data":        post("/v2/models/addone/infer", "application/json", "", []byte(`{"inputs":[{"name":"x","datatype":"FP32","shape":[2,4],"data":[1]}]}`)),
		"bad header length":    post("/v2/models/addone/infer", "application/octet-stream", oip.HeaderContentLength+": -3\r\n", bin),
		"header length > body": post("/v2/models/addone/infer", "application/octet-stream", fmt.Sprintf("%s: %d\r\n", oip.HeaderContentLength, len(bin)+1), bin),
		"GET on infer":         "GET /v2/models/addone/infer HTTP/1.1\r\nHost: x\r\n\r\n",
		"health":               "GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n",
		"metadata":             "GET /v2/models/addone HTTP/1.1\r\nHost: x\r\n\r\n",
	}
	for name, raw := range cases {
		want := exchange(t, hl.Addr().String(), raw, 1)[0]
		got := exchange(t, fl.Addr().String(), raw, 1)[0]
		if got != want {
			t.Errorf("%s:\n lean     %v\n net/http %v", name, got, want)
		}
	}
	// Sanity: the good answers are answers, the bad ones errors.
	if a := exchange(t, fl.Addr().String(), cases["json"], 1)[0]; a.status != 200 || !strings.Contains(a.body, `"data":[2,3,4,5,6,7,8,9.5]`) {
		t.Errorf("json answer: %v", a)
	}
	if a := exchange(t, fl.Addr().String(), cases["binary"], 1)[0]; a.status != 200 || a.ctype != "application/octet-stream" || a.headerLen == "" {
		t.Errorf("binary answer: %v", a)
	}
	// Over the body limit: 413 naming the limit, then the connection closes.
	if a := exchange(t, fl.Addr().String(), post("/v2/models/addone/infer", "application/json", "", big), 1)[0]; a.status != 413 || !strings.Contains(a.body, "4096") {
		t.Errorf("oversized body: %v", a)
	}
	// Pipelined: answers in order, the same as one by one.
	var raw bytes.Buffer
	order := []string{"json", "unknown model", "binary", "health", "malformed JSON", "json, version"}
	for _, name := range order {
		raw.WriteString(cases[name])
	}
	got := exchange(t, fl.Addr().String(), raw.String(), len(order))
	for i, name := range order {
		if want := exchange(t, fl.Addr().String(), cases[name], 1)[0]; got[i] != want {
			t.Errorf("pipelined %d (%s):\n got  %v\n want %v", i, name, got[i], want)
		}
	}
}
