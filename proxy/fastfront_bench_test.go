package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"strconv"
	"testing"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/inference-backend/backendtest"
)

// BenchmarkFastFrontCacheHit: one kept-alive connection sending the same
// request again and again through the HTTP/1.1 fast front-end; every
// answer after the first is a prediction-cache hit. The client writes
// prebuilt bytes and reads answers by Content-Length, so allocs/op are the
// proxy's (plus the runtime's netpoller). Real sockets on 127.0.0.1; ns/op
// includes both sides' system calls.
func BenchmarkFastFrontCacheHit(b *testing.B) {
	be := backendtest.Start(b, backendtest.Options{})
	m := recommenderWith(be, func(m *api.Model) { m.Spec.Cache = &api.Cache{} })
	p, _ := featuresProxy(b, Config{Models: []api.Model{m}}, FeaturesConfig{})
	body, _ := featuresBody(3)
	req := fmt.Appendf(nil, "POST /v2/models/recommender/infer HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", p.HTTPAddr(), len(body), body)
	c, err := net.Dial("tcp", p.HTTPAddr())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReaderSize(c, 64<<10)
	var buf []byte
	roundTrip := func() (hit bool) {
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		n := -1
		for {
			line, err := br.ReadSlice('\n')
			if err != nil {
				b.Fatal(err)
			}
			line = bytes.TrimRight(line, "\r\n")
			if len(line) == 0 {
				break
			}
			if v, ok := bytes.CutPrefix(line, []byte("Content-Length: ")); ok {
				n, _ = strconv.Atoi(string(v))
			}
			if bytes.Equal(line, []byte("X-Switchyard-Cache: hit")) {
				hit = true
			}
		}
		if n < 0 {
			b.Fatal("answer without Content-Length")
		}
		if cap(buf) < n {
			buf = make([]byte, n)
		}
		if _, err := io.ReadFull(br, buf[:n]); err != nil {
			b.Fatal(err)
		}
		return hit
	}
	roundTrip() // miss: fills the cache
	if !roundTrip() {
		b.Fatal("second request was not a cache hit")
	}
	b.ReportAllocs()
	for b.Loop() {
		roundTrip()
	}
}
