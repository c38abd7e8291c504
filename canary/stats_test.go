package canary

import (
	"reflect"
	"testing"
	"time"
)

func stats(req, errs uint64, lat time.Duration) Stats {
	s := Stats{Requests: req}
	for i := uint64(0); i < errs; i++ {
		s.AddError("upstream_5xx")
	}
	for i := uint64(0); i < req; i++ {
		s.Latency.Record(lat)
	}
	return s
}

func TestWindow(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	w := NewWindow(time.Minute)
	rep := func(proxy string, seq uint64, sec int, version string, req uint64) Report {
		return Report{Proxy: proxy, Seq: seq, At: t0.Add(time.Duration(sec) * time.Second),
			Entries: []Entry{{Model: "rec", Version: version, Stats: stats(req, 1, time.Millisecond)}, {Model: "other", Version: version, Stats: stats(1000, 0, 0)}}}
	}
	now := t0.Add(10 * time.Second)
	for _, c := range []struct {
		r    Report
		want bool
	}{
		{rep("p1#a", 1, 1, "v2", 10), true},
		{rep("p1#a", 2, 2, "v2", 10), true},
		{rep("p1#a", 2, 2, "v2", 10), false}, // resend
		{rep("p2#a", 1, 2, "v2", 5), true},
		{rep("p2#a", 2, 3, "v1", 7), true},
		{rep("p1#b", 1, 3, "v2", 4), true},      // p1 restarted: new instance, seq from 1 again
		{rep("p3#a", 1, -100, "v2", 99), false}, // older than the retention
	} {
		if got := w.Add(c.r, now); got != c.want {
			t.Errorf("Add(%s seq %d) = %v, want %v", c.r.Proxy, c.r.Seq, got, c.want)
		}
	}
	s := w.Stats("rec", "v2", t0, now)
	if s.Requests != 29 || s.ErrorCount() != 4 || s.Latency.Total != 29 {
		t.Fatalf("window stats %s", s.String())
	}
	if s := w.Stats("rec", "v2", t0.Add(2*time.Second), now); s.Requests != 4 {
		t.Errorf("from is exclusive: %d", s.Requests)
	}
	if s := w.Stats("rec", "v1", t0, now); s.Requests != 7 {
		t.Errorf("v1 %d", s.Requests)
	}
	if got := w.Proxies(now, 7*time.Second); !reflect.DeepEqual(got, []string{"p1#b", "p2#a"}) {
		t.Errorf("live proxies %v", got)
	}
	// a proxy that disappears stops counting once its reports leave the window
	later := t0.Add(62 * time.Second)
	w.Add(rep("p2#a", 3, 62, "v2", 3), later)
	if s := w.Stats("rec", "v2", later.Add(-time.Minute), later); s.Requests != 3+4 {
		t.Errorf("after 1 minute: %d requests (p1#a aged out)", s.Requests)
	}
	w.Forget("p2#a")
	if s := w.Stats("rec", "v2", later.Add(-time.Minute), later); s.Requests != 4 {
		t.Errorf("after Forget: %d", s.Requests)
	}
	// once pruned, a resend of an old report is still refused (too old)
	if w.Add(rep("p1#a", 1, 1, "v2", 10), later) {
		t.Error("old resend accepted after pruning")
	}
	// reports arriving out of order are placed by time
	w2 := NewWindow(time.Minute)
	w2.Add(rep("p", 2, 5, "v2", 1), now)
	w2.Add(rep("p", 1, 4, "v2", 2), now)
	if s := w2.Stats("rec", "v2", t0.Add(4*time.Second), now); s.Requests != 1 {
		t.Errorf("out of order: %d", s.Requests)
	}
}
