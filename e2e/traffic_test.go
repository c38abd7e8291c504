//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/inference-backend/demomodels"
)

// answer is one infer request as the product service sees it.
type answer struct {
	user     string
	row      []float32
	code     int
	err      error
	variant  string // x-switchyard-variant
	fallback string // x-switchyard-fallback
	reason   string // x-switchyard-fallback-reason
	model    string // model_name in the body
	scores   []float64
}

// client is a product service calling the virtual endpoint
// /v2/models/recommender/infer on the proxy (127.0.0.1 only).
type client struct {
	url string
	hc  *http.Client
	tr  *http.Transport
}

func newClient(t *testing.T, proxyHTTP string) *client {
	t.Helper()
	if !strings.HasPrefix(proxyHTTP, "http://127.0.0.1:") {
		t.Fatalf("proxy %q is not on 127.0.0.1", proxyHTTP)
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 16, DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	return &client{url: proxyHTTP + "/v2/models/recommender/infer", tr: tr, hc: &http.Client{Transport: tr, Timeout: 15 * time.Second}}
}

// body is the OIP v2 REST request for one [1,32] FP32 row.
func body(row []float32) string {
	var b strings.Builder
	b.WriteString(`{"inputs":[{"name":"features","datatype":"FP32","shape":[1,32],"data":[`)
	for i, x := range row {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatFloat(float64(x), 'g', -1, 32))
	}
	b.WriteString(`]}]}`)
	return b.String()
}

// post sends a raw request body for user and returns the status and the
// body of the answer.
func (c *client) post(t *testing.T, user, reqBody string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, strings.NewReader(reqBody))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("x-user-id", user)
	resp, err := c.hc.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", c.url, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(raw)
}

// infer sends one request for user with one feature row.
func (c *client) infer(ctx context.Context, user string, row []float32) answer {
	a := answer{user: user, row: row}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, strings.NewReader(body(row)))
	if err != nil {
		a.err = err
		return a
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("x-user-id", user)
	resp, err := c.hc.Do(req)
	if err != nil {
		a.err = err
		return a
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	a.code = resp.StatusCode
	a.variant = resp.Header.Get("x-switchyard-variant")
	a.fallback = resp.Header.Get("x-switchyard-fallback")
	a.reason = resp.Header.Get("x-switchyard-fallback-reason")
	if err != nil {
		a.err = err
		return a
	}
	if a.code == http.StatusOK {
		var res struct {
			ModelName string `json:"model_name"`
			Outputs   []struct {
				Name string    `json:"name"`
				Data []float64 `json:"data"`
			} `json:"outputs"`
		}
		if err := json.Unmarshal(raw, &res); err != nil {
			a.err = fmt.Errorf("decode the answer: %v: %.200s", err, raw)
			return a
		}
		a.model = res.ModelName
		for _, o := range res.Outputs {
			if o.Name == demomodels.OutputName {
				a.scores = o.Data
			}
		}
	} else {
		a.err = fmt.Errorf("HTTP %d: %.300s", a.code, raw)
	}
	return a
}

// fail says what is wrong with an answer a user would notice, or "".
func (a answer) fail() string {
	switch {
	case a.err != nil:
		return fmt.Sprintf("user %s: %v", a.user, a.err)
	case a.code != http.StatusOK:
		return fmt.Sprintf("user %s: HTTP %d", a.user, a.code)
	case a.variant == "":
		return fmt.Sprintf("user %s: no x-switchyard-variant", a.user)
	case len(a.scores) != demomodels.Items:
		return fmt.Sprintf("user %s: %d scores, want %d", a.user, len(a.scores), demomodels.Items)
	}
	for _, s := range a.scores {
		if math.IsNaN(s) || math.IsInf(s, 0) {
			return fmt.Sprintf("user %s: a NaN/Inf score reached the client (variant %s)", a.user, a.variant)
		}
	}
	return ""
}

// request is one planned request: a user and a feature row.
type request struct {
	user string
	row  []float32
}

// plan makes n requests for users prefix-0..prefix-(n-1), with rows from
// demomodels.RandomFeatures(seed, n) (uniform in [-1, 1): about one row in
// eight makes recommender-v3 answer NaN).
func plan(prefix string, seed uint64, n int) []request {
	rows := demomodels.RandomFeatures(seed, n)
	out := make([]request, n)
	for i := range out {
		out[i] = request{user: fmt.Sprintf("%s-%d", prefix, i), row: rows[i]}
	}
	return out
}

// send runs the requests with a few workers and returns the answers in
// order. Bounded: len(reqs) requests, each with the client's timeout, and
// the whole batch within limit.
func (c *client) send(t *testing.T, reqs []request, workers int, limit time.Duration) []answer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	out := make([]answer, len(reqs))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(reqs) {
					return
				}
				out[i] = c.infer(ctx, reqs[i].user, reqs[i].row)
			}
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		t.Fatalf("%d requests did not finish within %s", len(reqs), limit)
	}
	return out
}

// tally counts answers.
type tally struct {
	total      int
	byVariant  map[string]int
	byFallback map[string]int // x-switchyard-fallback value ("" = none)
	byReason   map[string]int // x-switchyard-fallback-reason of fallbacks
	failures   []string       // what a user would notice, first few
	nFailures  int
}

func newTally() *tally {
	return &tally{byVariant: map[string]int{}, byFallback: map[string]int{}, byReason: map[string]int{}}
}

func (t *tally) add(a answer) {
	t.total++
	t.byVariant[a.variant]++
	t.byFallback[a.fallback]++
	if a.fallback != "" {
		t.byReason[a.reason]++
	}
	if f := a.fail(); f != "" {
		t.nFailures++
		if len(t.failures) < 5 {
			t.failures = append(t.failures, f)
		}
	}
}

func tallyOf(as []answer) *tally {
	t := newTally()
	for _, a := range as {
		t.add(a)
	}
	return t
}

func (t *tally) String() string {
	return fmt.Sprintf("%d answers, by variant %v, by fallback %v (reasons %v), %d failures %v", t.total, t.byVariant, t.byFallback, t.byReason, t.nFailures, t.failures)
}

// flow is background traffic: workers sending requests from ever new
// users until stopped, max requests were sent or limit passed.
type flow struct {
	stop chan struct{}
	wg   sync.WaitGroup
	sent atomic.Int64
	mu   sync.Mutex
	t    *tally
	once sync.Once
}

func (c *client) startFlow(prefix string, seed uint64, workers int, max int64, limit time.Duration) *flow {
	f := &flow{stop: make(chan struct{}), t: newTally()}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	rows := demomodels.RandomFeatures(seed, 4096)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-f.stop:
					return
				case <-ctx.Done():
					return
				default:
				}
				n := f.sent.Add(1)
				if n > max {
					return
				}
				i := int(n - 1)
				a := c.infer(ctx, fmt.Sprintf("%s-%d-%d", prefix, w, i), rows[i%len(rows)])
				if ctx.Err() != nil {
					return // cut off by the time limit or Stop: not the system's doing
				}
				f.mu.Lock()
				f.t.add(a)
				f.mu.Unlock()
			}
		}()
	}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		wg.Wait()
		cancel()
	}()
	return f
}

// Stop ends the flow and returns its tally.
func (f *flow) Stop() *tally {
	f.once.Do(func() { close(f.stop) })
	f.wg.Wait()
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.t
}

// answered is how many answers the flow got so far.
func (f *flow) answered() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.t.total
}
