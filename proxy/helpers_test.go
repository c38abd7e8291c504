package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/inference-backend/backendtest"
	"github.com/switchyard-dev/switchyard/oip"
)

// features is a valid request body for the demo recommenders.
func inferBody(seed int) []byte {
	data := make([]float32, 32)
	for i := range data {
		data[i] = float32((seed+i)%7) / 7
	}
	req := &oip.InferRequest{Inputs: []oip.Tensor{oip.NewTensor("features", []int64{1, 32}, data)}}
	b, _, err := oip.AppendInferRequest(nil, req, false)
	if err != nil {
		panic(err)
	}
	return b
}

// demoModel is the virtual model "recommender" over the demo backend.
func demoModel(be *backendtest.Running, weights map[string]int) api.Model {
	m := api.Model{
		Metadata: api.Metadata{Name: "recommender"},
		Spec: api.Spec{
			Versions: []api.Version{
				{Name: "v1", Endpoints: []string{be.HTTPAddr}, BackendModel: "recommender-v1"},
				{Name: "v2", Endpoints: []string{be.HTTPAddr}, BackendModel: "recommender-v2"},
				{Name: "v3", Endpoints: []string{be.GRPCAddr}, Protocol: api.ProtocolGRPC, BackendModel: "recommender-v3"},
			},
			Traffic: api.Traffic{Weights: weights, StickyHeader: "x-user-id"},
			Timeout: api.Duration(5 * time.Second),
			Retries: &api.Retries{Attempts: 2, BudgetPercent: 20},
		},
	}
	return m
}

func startProxy(t testing.TB, cfg Config) *Proxy {
	t.Helper()
	if cfg.HTTPAddr == "" {
		cfg.HTTPAddr = "127.0.0.1:0"
	}
	if cfg.GRPCAddr == "" {
		cfg.GRPCAddr = "127.0.0.1:0"
	}
	if cfg.AdminAddr == "" {
		cfg.AdminAddr = "127.0.0.1:0"
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func newHTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 20 * time.Second}
}

type answer struct {
	status  int
	variant string
	body    []byte
}

func post(t testing.TB, c *http.Client, url string, body []byte, hdr map[string]string) answer {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		return answer{status: -1, body: []byte(err.Error())}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{status: resp.StatusCode, variant: resp.Header.Get("X-Switchyard-Variant"), body: b}
}

func getJSON(t testing.TB, url string, v any) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("GET %s: %v in %s", url, err, b)
		}
	}
	return resp.StatusCode
}

// load sends n requests with `workers` concurrent clients, calling hdr(i)
// for each request's headers, and returns the answers in order.
func load(t testing.TB, url string, n, workers int, hdr func(i int) map[string]string) []answer {
	t.Helper()
	c := newHTTPClient()
	out := make([]answer, n)
	body := inferBody(1)
	var wg sync.WaitGroup
	next := make(chan int)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				var h map[string]string
				if hdr != nil {
					h = hdr(i)
				}
				out[i] = post(t, c, url, body, h)
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	c.CloseIdleConnections()
	return out
}

func inferURL(p *Proxy, model string) string {
	return "http://" + p.HTTPAddr() + "/v2/models/" + model + "/infer"
}

// blackhole accepts connections and never answers (a backend that hangs).
func blackhole(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return l.Addr().String()
}

// closedAddr is an address where nothing listens.
func closedAddr(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := l.Addr().String()
	l.Close()
	return a
}

func userHeader(i int) map[string]string {
	return map[string]string{"x-user-id": "user-" + strconv.Itoa(i)}
}

func first(vs []string) string {
	if len(vs) == 0 {
		return ""
	}
	return vs[0]
}

// models is p's active configuration.
func models(p *Proxy) []api.Model {
	ms, _, _ := p.Models()
	return ms
}
