package fallback

import (
	"context"
	"errors"
	"strings"
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
	var calls atomic.Int32
	release := make(chan struct{})
	fn := func(ctx context.Context) ([]byte, error) {
		calls.Add(1)
		<-release
		return []byte("answer"), nil
	}
	const n = 100
	var wg sync.WaitGroup
	results := make([][]byte, n)
	shared := make([]bool, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			v, sh, err := c.Do(context.Background(), k, fn)
			if err != nil {
				t.Error(err)
			}
			results[i], shared[i] = v, sh
		}(i)
	}
	waitFor(t, "99 joiners", func() bool { return testutil.ToFloat64(coalesced) == n-1 })
	close(release)
	wg.Wait()
	if calls.Load() != 1 {
		t.Fatalf("upstream calls = %d, want 1", calls.Load())
	}
	nShared := 0
	for i := range results {
		if string(results[i]) != "answer" {
			t.Fatalf("result %d = %q", i, results[i])
		}
		if shared[i] {
			nShared++
		}
	}
	if nShared != n-1 {
		t.Errorf("shared = %d, want %d", nShared, n-1)
	}
	if c.InFlight() != 0 {
		t.Error("flight not removed")
	}
	// a later identical request makes a new call
	if _, sh, _ := c.Do(context.Background(), k, func(context.Context) ([]byte, error) { calls.Add(1); return nil, nil }); sh || calls.Load() != 2 {
		t.Error("finished flight was reused")
	}
}

func TestCoalesceWaitersOwnContext(t *testing.T) {
	c := NewCoalescer[string]("rec", nil)
	k := keyN(t, "v1", 1)
	release := make(chan struct{})
	var callCtx context.Context
	started := make(chan struct{})
	fn := func(ctx context.Context) (string, error) {
		callCtx = ctx
		close(started)
		select {
		case <-release:
			return "ok", nil
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	leaderCtx, cancelLeader := context.WithCancel(context.Background())
	leaderDone := make(chan error, 1)
	go func() { _, _, err := c.Do(leaderCtx, k, fn); leaderDone <- err }()
	<-started
	followerDone := make(chan string, 1)
	go func() { v, _, _ := c.Do(context.Background(), k, fn); followerDone <- v }()
	waitFor(t, "follower joined", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.calls[k] != nil && c.calls[k].waiters == 2
	})
	cancelLeader()
	if err := <-leaderDone; !errors.Is(err, context.Canceled) {
		t.Fatalf("leader err %v", err)
	}
	if callCtx.Err() != nil {
		t.Fatal("leader leaving cancelled the shared call while a follower waits")
	}
	close(release)
	if v := <-followerDone; v != "ok" {
		t.Fatalf("follower got %q", v)
	}
}

func TestCoalesceAllLeaveCancelsCall(t *testing.T) {
	c := NewCoalescer[string]("rec", nil)
	k := keyN(t, "v1", 1)
	stopped := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-time.After(10 * time.Millisecond)
		cancel()
	}()
	_, _, err := c.Do(ctx, k, func(cctx context.Context) (string, error) {
		<-cctx.Done()
		stopped <- cctx.Err()
		return "", cctx.Err()
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v", err)
	}
	if err := <-stopped; !errors.Is(err, context.Canceled) {
		t.Fatalf("call ctx %v", err)
	}
	// a new caller does not join the cancelled flight
	v, sh, err := c.Do(context.Background(), k, func(context.Context) (string, error) { return "fresh", nil })
	if v != "fresh" || sh || err != nil {
		t.Fatalf("got %q %v %v", v, sh, err)
	}
}

func TestCoalescePanicBecomesError(t *testing.T) {
	c := NewCoalescer[int]("rec", nil)
	_, _, err := c.Do(context.Background(), keyN(t, "v1", 1), func(context.Context) (int, error) { panic("boom") })
	if err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("err %v", err)
	}
}

func TestCoalesceDeadlineCarried(t *testing.T) {
	c := NewCoalescer[bool]("rec", nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	want, _ := ctx.Deadline()
	got, _, _ := c.Do(ctx, keyN(t, "v1", 1), func(cctx context.Context) (bool, error) {
		dl, ok := cctx.Deadline()
		return ok && dl.Equal(want), nil
	})
	if !got {
		t.Error("shared call lost the caller's deadline")
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
