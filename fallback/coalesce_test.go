package fallback

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// No goroutine may outlive a test: fallback.Cache runs golang-lru's
	// expirable LRU without its (never stopped) cleaner goroutine.
	goleak.VerifyTestMain(m)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestCoalesceHundredIdentical(t *testing.T) {
	m := NewMetrics(prometheus.NewRegistry())
	c := NewCoalescer[[]byte]("rec", m)
	coalesced := m.coalesced.WithLabelValues("rec")
	k := keyN(t, "v1", 1)
	lead, leader := c.Join(k)
	if !leader {
		t.Fatal("the first caller is not the leader")
	}
	const n = 100
	var wg sync.WaitGroup
	results := make([][]byte, n)
	for i := 0; i < n; i++ {
		fl, leader := c.Join(k)
		if leader {
			t.Fatalf("caller %d led a second call for the same key", i)
		}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			v, err := fl.Wait(context.Background())
			if err != nil {
				t.Error(err)
			}
			results[i] = v
		}(i)
	}
	if got := testutil.ToFloat64(coalesced); got != n {
		t.Fatalf("coalesced = %v, want %d", got, n)
	}
	c.Finish(k, lead, []byte("answer"), nil)
	wg.Wait()
	for i := range results {
		if string(results[i]) != "answer" {
			t.Fatalf("result %d = %q", i, results[i])
		}
	}
	if c.InFlight() != 0 {
		t.Error("flight not removed")
	}
	// a later identical request makes a new call
	if _, leader := c.Join(k); !leader {
		t.Error("finished flight was reused")
	}
}

func TestCoalesceFollowerWaitsOnItsOwnContext(t *testing.T) {
	c := NewCoalescer[string]("rec", nil)
	k := keyN(t, "v1", 1)
	lead, _ := c.Join(k)
	impatient, _ := c.Join(k)
	patient, _ := c.Join(k)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := impatient.Wait(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled follower: %v", err)
	}
	done := make(chan string, 1)
	go func() { v, _ := patient.Wait(context.Background()); done <- v }()
	c.Finish(k, lead, "ok", nil)
	if v := <-done; v != "ok" {
		t.Fatalf("patient follower got %q", v)
	}
	boom := errors.New("boom")
	lead, _ = c.Join(k)
	f, _ := c.Join(k)
	c.Finish(k, lead, "", boom)
	if _, err := f.Wait(context.Background()); !errors.Is(err, boom) {
		t.Fatalf("the leader's error did not reach the follower: %v", err)
	}
}

func TestLimiter(t *testing.T) {
	l := NewLimiter(2)
	if !l.TryAcquire() || !l.TryAcquire() {
		t.Fatal("under the cap refused")
	}
	if l.TryAcquire() {
		t.Fatal("over the cap allowed")
	}
	if l.InFlight() != 2 {
		t.Fatalf("in flight %d", l.InFlight())
	}
	l.Release()
	if !l.TryAcquire() {
		t.Fatal("released slot refused")
	}
	unl := NewLimiter(0)
	var wg sync.WaitGroup
	var refused atomic.Int32
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if !unl.TryAcquire() {
				refused.Add(1)
			}
		}()
	}
	wg.Wait()
	if refused.Load() != 0 || unl.InFlight() != 50 {
		t.Errorf("unlimited: refused %d in flight %d", refused.Load(), unl.InFlight())
	}
	// concurrent: never more than max in flight
	cl := NewLimiter(3)
	var peak, cur atomic.Int32
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 50; j++ {
				if cl.TryAcquire() {
					n := cur.Add(1)
					for {
						p := peak.Load()
						if n <= p || peak.CompareAndSwap(p, n) {
							break
						}
					}
					cur.Add(-1)
					cl.Release()
				}
			}
		}()
	}
	wg.Wait()
	if peak.Load() > 3 || cl.InFlight() != 0 {
		t.Errorf("peak %d, in flight %d", peak.Load(), cl.InFlight())
	}
}

// TestCoalesceJoinFinish: the leader makes the call on its own goroutine;
// followers get its result; the next caller starts a new flight.
func TestCoalesceJoinFinish(t *testing.T) {
	m := NewMetrics(prometheus.NewRegistry())
	c := NewCoalescer[string]("rec", m)
	k := keyN(t, "v1", 2)
	fl, leader := c.Join(k)
	if !leader {
		t.Fatal("first caller is not the leader")
	}
	const n = 10
	got := make(chan string, n)
	for range n {
		f2, l2 := c.Join(k)
		if l2 {
			t.Fatal("second caller became a leader while a flight is open")
		}
		go func() {
			v, err := f2.Wait(context.Background())
			if err != nil {
				t.Error(err)
			}
			got <- v
		}()
	}
	c.Finish(k, fl, "answer", nil)
	for range n {
		if v := <-got; v != "answer" {
			t.Fatalf("follower got %q", v)
		}
	}
	if v := testutil.ToFloat64(m.coalesced.WithLabelValues("rec")); v != n {
		t.Fatalf("coalesced %v, want %d", v, n)
	}
	if _, leader := c.Join(k); !leader {
		t.Fatal("a caller after Finish joined the finished flight")
	}
	// A follower whose context ends stops waiting.
	f3, _ := c.Join(k)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := f3.Wait(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled follower: %v", err)
	}
}
