package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/inference-backend/backendtest"
	"github.com/switchyard-dev/switchyard/internal/rawhttp"
	"github.com/switchyard-dev/switchyard/proxy/front"
)

func body(r *http.Response) string { b, _ := io.ReadAll(r.Body); return string(b) }

func TestFastFrontEndProtocol(t *testing.T) {
	be := backendtest.Start(t, backendtest.Options{})
	p := startProxy(t, Config{Models: []api.Model{demoModel(be, map[string]int{"v1": 100})}})
	addr := p.HTTPAddr()
	b := string(inferBody(4))
	req := func(extra string) string {
		return fmt.Sprintf("POST /v2/models/recommender/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n%s", extra, len(b), b)
	}
	t.Run("pipelined", func(t *testing.T) {
		rs := rawhttp.Exchange(t, addr, req("")+req("X-Switchyard-Variant: v2\r\n"), 2)
		if rs[0].StatusCode != 200 || rs[0].Header.Get("X-Switchyard-Variant") != "v1" || rs[1].Header.Get("X-Switchyard-Variant") != "v2" {
			t.Fatalf("pipelined: %v %v / %v %v", rs[0].StatusCode, rs[0].Header, rs[1].StatusCode, rs[1].Header)
		}
	})
	t.Run("absolute-form target", func(t *testing.T) {
		// As sent to a forward proxy: the same pipeline as origin form.
		abs := strings.Replace(req("X-Switchyard-Variant: v2\r\n"), "POST /v2/", "POST http://"+addr+"/v2/", 1)
		rs := rawhttp.Exchange(t, addr, abs, 1)
		if rs[0].StatusCode != 200 || rs[0].Header.Get("X-Switchyard-Variant") != "v2" || !strings.Contains(body(rs[0]), `"scores"`) {
			t.Fatalf("absolute form: %d %v", rs[0].StatusCode, rs[0].Header)
		}
		abs = strings.Replace(req(""), "POST /v2/models/recommender/", "POST http://"+addr+"/v2/models/nosuch/", 1)
		if rs := rawhttp.Exchange(t, addr, abs, 1); rs[0].StatusCode != 404 || !strings.Contains(body(rs[0]), `unknown model`) {
			t.Fatalf("absolute form, unknown model: %d", rs[0].StatusCode)
		}
	})
	t.Run("chunked body", func(t *testing.T) {
		raw := "POST /v2/models/recommender/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" +
			fmt.Sprintf("%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n", 10, b[:10], len(b)-10, b[10:])
		rs := rawhttp.Exchange(t, addr, raw, 1)
		if rs[0].StatusCode != 200 || !strings.Contains(body(rs[0]), `"scores"`) {
			t.Fatalf("chunked: %d %s", rs[0].StatusCode, body(rs[0]))
		}
	})
	t.Run("expect 100-continue", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "POST /v2/models/recommender/infer HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n", len(b))
		br := bufio.NewReader(c)
		line, _ := br.ReadString('\n')
		if !strings.HasPrefix(line, "HTTP/1.1 100") {
			t.Fatalf("want 100 Continue, got %q", line)
		}
		br.ReadString('\n')
		io.WriteString(c, b)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("after 100-continue: %v %v", resp, err)
		}
	})
	t.Run("HTTP/1.0 closes", func(t *testing.T) {
		raw := strings.Replace(req(""), "HTTP/1.1", "HTTP/1.0", 1)
		rs := rawhttp.Exchange(t, addr, raw, 1)
		if rs[0].StatusCode != 200 || !rs[0].Close {
			t.Fatalf("HTTP/1.0: %d close=%v", rs[0].StatusCode, rs[0].Close)
		}
	})
	t.Run("malformed", func(t *testing.T) {
		rs := rawhttp.Exchange(t, addr, "NONSENSE\r\n\r\n", 1)
		if rs[0].StatusCode != 400 {
			t.Fatalf("malformed: %d", rs[0].StatusCode)
		}
		rs = rawhttp.Exchange(t, addr, "POST /v2/models/recommender/infer HTTP/1.1\r\nContent-Length: zz\r\n\r\n", 1)
		if rs[0].StatusCode != 400 || !strings.Contains(body(rs[0]), "Content-Length") {
			t.Fatalf("bad content-length: %d", rs[0].StatusCode)
		}
	})
	t.Run("too large", func(t *testing.T) {
		p2 := startProxy(t, Config{Models: []api.Model{demoModel(be, map[string]int{"v1": 100})}, MaxBodyBytes: 100})
		rs := rawhttp.Exchange(t, p2.HTTPAddr(), req(""), 1)
		if rs[0].StatusCode != 413 {
			t.Fatalf("too large: %d %s", rs[0].StatusCode, body(rs[0]))
		}
	})
	t.Run("fallback paths", func(t *testing.T) {
		rs := rawhttp.Exchange(t, addr, "GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\nGET /v2 HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\nGET /v2/models/recommender/infer HTTP/1.1\r\nHost: x\r\n\r\n", 4)
		if rs[0].StatusCode != 200 || rs[1].StatusCode != 200 || !strings.Contains(body(rs[1]), front.ServerName) || rs[2].StatusCode != 404 || rs[3].StatusCode != 405 {
			t.Fatalf("fallback: %d %d %d %d", rs[0].StatusCode, rs[1].StatusCode, rs[2].StatusCode, rs[3].StatusCode)
		}
	})
}
