package backend

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/switchyard-dev/switchyard/inference-backend/demomodels"
	"github.com/switchyard-dev/switchyard/oip"
)

func TestAdmit(t *testing.T) {
	cases := map[string]struct {
		busy, slots, waiting, maxQueue int
		want                           admission
	}{
		"free slot, nobody waiting":          {0, 1, 0, 0, admitRun},
		"free slot but others wait first":    {0, 1, 1, 0, admitWait},
		"all slots busy, unbounded queue":    {2, 2, 100, 0, admitWait},
		"all slots busy, room in the queue":  {1, 1, 1, 2, admitWait},
		"all slots busy, queue full":         {1, 1, 2, 2, admitReject},
		"free slot, queue full of waiters":   {0, 1, 2, 2, admitReject},
		"max_queue_size 0 is no bound":       {1, 1, 1 << 20, 0, admitWait},
		"several slots, some free, no queue": {3, 4, 0, 1, admitRun},
	}
	for name, c := range cases {
		if got := admit(c.busy, c.slots, c.waiting, c.maxQueue); got != c.want {
			t.Errorf("%s: %v, want %v", name, got, c.want)
		}
	}
}

func TestNextLevel(t *testing.T) {
	cases := map[string]struct {
		waiting []int
		want    int
	}{
		"nobody":             {[]int{0, 0, 0}, -1},
		"highest first":      {[]int{1, 5, 5}, 0},
		"skips empty levels": {[]int{0, 0, 3}, 2},
		"one level":          {[]int{4}, 0},
	}
	for name, c := range cases {
		if got := nextLevel(c.waiting); got != c.want {
			t.Errorf("%s: %d, want %d", name, got, c.want)
		}
	}
}

func TestRequestQueue(t *testing.T) {
	pol := &QueuePolicy{DefaultTimeout: 5 * time.Millisecond}
	over := &QueuePolicy{DefaultTimeout: 5 * time.Millisecond, AllowTimeoutOverride: true}
	cases := map[string]struct {
		levels, def int
		p           *QueuePolicy
		params      map[string]any
		level       int
		timeout     time.Duration
		err         string
	}{
		"no levels, no params":             {0, 0, pol, nil, 0, 5 * time.Millisecond, ""},
		"default is the lowest level":      {3, 0, pol, nil, 2, 5 * time.Millisecond, ""},
		"default_priority_level":           {3, 2, pol, nil, 1, 5 * time.Millisecond, ""},
		"priority 1 is the first level":    {3, 0, pol, map[string]any{"priority": int64(1)}, 0, 5 * time.Millisecond, ""},
		"priority 0 means the default":     {3, 2, pol, map[string]any{"priority": float64(0)}, 1, 5 * time.Millisecond, ""},
		"JSON number":                      {3, 0, pol, map[string]any{"priority": json.Number("2")}, 1, 5 * time.Millisecond, ""},
		"priority out of range":            {3, 0, pol, map[string]any{"priority": int64(4)}, 0, 0, "not a priority level in 0..3"},
		"priority not a number":            {3, 0, pol, map[string]any{"priority": "high"}, 0, 0, "not a priority level"},
		"timeout ignored without override": {0, 0, pol, map[string]any{"timeout": int64(100)}, 0, 5 * time.Millisecond, ""},
		"timeout override in µs":           {0, 0, over, map[string]any{"timeout": uint64(100)}, 0, 100 * time.Microsecond, ""},
		"negative timeout":                 {0, 0, over, map[string]any{"timeout": int64(-1)}, 0, 0, "not a timeout"},
		"priorities without a policy":      {2, 0, nil, map[string]any{"priority": int64(1), "timeout": int64(9)}, 0, 0, ""},
	}
	for name, c := range cases {
		level, timeout, err := requestQueue(c.levels, c.def, c.p, c.params)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) || oip.CodeOf(err) != oip.InvalidArgument {
				t.Errorf("%s: %v, want InvalidArgument %q", name, err, c.err)
			}
			continue
		}
		if err != nil || level != c.level || timeout != c.timeout {
			t.Errorf("%s: level %d timeout %v err %v; want %d %v", name, level, timeout, err, c.level, c.timeout)
		}
	}
}

// A freed slot goes to the highest priority level first, FIFO within a
// level; a waiter whose context ends leaves the queue.
func TestGateOrder(t *testing.T) {
	g := newGate("m", "1", 1, 3, 0, func(string) {}, func(float64) {})
	ctx := context.Background()
	if err := g.acquire(ctx, 0, 0); err != nil {
		t.Fatal(err)
	}
	order := make(chan string, 8)
	var wg sync.WaitGroup
	enqueue := func(name string, level int) {
		want := g.queued() + 1
		wg.Go(func() {
			if err := g.acquire(ctx, level, 0); err != nil {
				order <- name + ": " + err.Error()
				return
			}
			order <- name
			g.release()
		})
		waitQueued(t, g, want)
	}
	enqueue("low-1", 2)
	enqueue("low-2", 2)
	enqueue("high", 0)
	enqueue("mid", 1)
	g.release()
	wg.Wait()
	close(order)
	var got []string
	for s := range order {
		got = append(got, s)
	}
	if strings.Join(got, ",") != "high,mid,low-1,low-2" {
		t.Fatalf("served %v, want high, mid, low-1, low-2", got)
	}
	if g.busy != 0 || g.queued() != 0 {
		t.Fatalf("after all: busy %d queued %d", g.busy, g.queued())
	}
}

// Over real sockets with a real ONNX model: while the one execution slot
// is held, a request waits in the queue, the one past max_queue_size is
// rejected at once with 503, Retry-After and a message naming the policy
// (REST) / UNAVAILABLE (gRPC), a request that outwaits its timeout is
// rejected the same way, and a bad priority is a 400; once the slot is
// free the queued request is answered.
func TestQueuePolicyOverSockets(t *testing.T) {
	repo := t.TempDir()
	if err := demomodels.WriteRepository(repo); err != nil {
		t.Fatal(err)
	}
	s, err := NewServer(ServerConfig{
		Backend: Options{ModelRepository: repo, ConfigOverride: func(model string, c *ModelConfig) {
			c.DynamicBatching, c.InstanceCount = nil, 1 // one execution slot
			c.QueuePolicy = &QueuePolicy{MaxQueueSize: 1, AllowTimeoutOverride: true}
			c.PriorityLevels = 2
		}},
		HTTPAddr: "127.0.0.1:0",
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(context.Background()) })
	b := s.Backend
	b.mu.RLock()
	v := b.models[demomodels.V1].latest
	b.mu.RUnlock()
	if err := v.gate.acquire(context.Background(), 0, 0); err != nil { // hold the only slot
		t.Fatal(err)
	}
	url := "http://" + s.HTTPAddr() + "/v2/models/" + demomodels.V1 + "/infer"
	feats := make([]string, 32)
	for i := range feats {
		feats[i] = "0.5"
	}
	body := func(params string) string {
		return `{"parameters":{` + params + `},"inputs":[{"name":"features","datatype":"FP32","shape":[1,32],"data":[` + strings.Join(feats, ",") + `]}]}`
	}
	post := func(params string) (int, string, string) {
		resp, err := http.Post(url, "application/json", strings.NewReader(body(params)))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		bb, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Retry-After"), string(bb)
	}
	queued := make(chan string, 1)
	go func() {
		code, _, b := post(`"priority":1`)
		queued <- fmt.Sprintf("%d %s", code, b)
	}()
	waitQueued(t, v.gate, 1)
	if code, ra, msg := post(`"priority":2`); code != 503 || ra != "1" || !strings.Contains(msg, "queue full") || !strings.Contains(msg, "max_queue_size 1") {
		t.Fatalf("past max_queue_size: %d Retry-After %q %s", code, ra, msg)
	}
	if code, _, msg := post(`"priority":7`); code != 400 || !strings.Contains(msg, "priority") {
		t.Fatalf("bad priority: %d %s", code, msg)
	}
	v.gate.release()
	if got := <-queued; !strings.HasPrefix(got, "200 ") {
		t.Fatalf("the queued request: %s", got)
	}
	// A timeout override: the request waits 1 ms behind the held slot.
	if err := v.gate.acquire(context.Background(), 0, 0); err != nil {
		t.Fatal(err)
	}
	if code, ra, msg := post(`"timeout":1000`); code != 503 || ra != "1" || !strings.Contains(msg, "waited 1ms in the queue") {
		t.Fatalf("past its queue timeout: %d %q %s", code, ra, msg)
	}
	v.gate.release()
	if got := testutilCounter(t, b, "queue_full") + testutilCounter(t, b, "timeout"); got != 2 {
		t.Fatalf("rejections counted %v, want 2", got)
	}

	// Bounded load: 4 clients × 25 requests; each is answered 200 or
	// rejected with the queue's 503; nothing else.
	var wg sync.WaitGroup
	var mu sync.Mutex
	counts := map[int]int{}
	for range 4 {
		wg.Go(func() {
			for range 25 {
				code, _, msg := post(``)
				if code != 200 && !(code == 503 && strings.Contains(msg, "queue full")) {
					t.Errorf("under load: %d %s", code, msg)
				}
				mu.Lock()
				counts[code]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if counts[200]+counts[503] != 100 || counts[200] == 0 {
		t.Fatalf("under load: %v", counts)
	}
}

// waitQueued waits (bounded) until n requests wait at the gate.
func waitQueued(t *testing.T, g *gate, n int) {
	t.Helper()
	for range 10000 {
		if g.queued() == n {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("%d requests queued, want %d", g.queued(), n)
}

func testutilCounter(t *testing.T, b *Backend, reason string) float64 {
	t.Helper()
	return testutil.ToFloat64(b.metrics.QueueRejects.WithLabelValues(demomodels.V1, "1", reason))
}
