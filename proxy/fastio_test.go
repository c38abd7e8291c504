package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/inference-backend/backendtest"
)

// smallSendBuffer accepts TCP connections with a 16 KiB send buffer, so an
// answer stream the client is slow to read fills it quickly.
type smallSendBuffer struct{ net.Listener }

func (l smallSendBuffer) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetWriteBuffer(16 << 10)
	}
	return c, err
}

// A client that sends many pipelined requests and reads the answers as it
// can, over a connection with a small send buffer on the proxy's side: the
// proxy's answers fill the socket (writes that would block, then resume
// when the client reads) and its reads stop while it waits;
// every answer arrives whole and in order. The requests go out in pieces
// (a head split from its body, a body split in two), so reads from the
// socket also happen in the middle of a request.
func TestFastFrontBackpressureAndSplitRequests(t *testing.T) {
	be := backendtest.Start(t, backendtest.Options{})
	m := recommenderWith(be, func(m *api.Model) { m.Spec.Cache = &api.Cache{} })
	p, _ := featuresProxy(t, Config{Models: []api.Model{m}}, FeaturesConfig{})
	addr := startFastServerOn(t, p, smallSendBuffer{listen(t)}, 0, 0, 0)
	body, _ := featuresBody(5)
	head := fmt.Sprintf("POST /v2/models/recommender/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", len(body))
	want := postFull(t, newHTTPClient(), inferURL(p, "recommender"), body, nil)
	if want.status != 200 {
		t.Fatalf("first request: %+v", want)
	}

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	n := 3000
	if testing.Short() {
		n = 500
	}
	werr := make(chan error, 1)
	go func() {
		var all []byte
		for range n {
			all = append(append(all, head...), body...)
		}
		// One large write, then the last request in three pieces.
		_, err := c.Write(all)
		for _, part := range [][]byte{[]byte(head), body[:len(body)/2], body[len(body)/2:]} {
			if err == nil {
				_, err = c.Write(part)
			}
		}
		werr <- err
	}()
	br := bufio.NewReaderSize(c, 1<<10)
	for i := range n + 1 {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("answer %d body: %v", i, err)
		}
		if resp.StatusCode != 200 || resp.Header.Get("X-Switchyard-Cache") != "hit" || !bytes.Equal(b, want.body) {
			t.Fatalf("answer %d: %d %v\n%s\nwant\n%s", i, resp.StatusCode, resp.Header, b, want.body)
		}
	}
	if err := <-werr; err != nil {
		t.Fatalf("client write: %v", err)
	}
}
