package canary

import (
	"maps"
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

func TestStatsSince(t *testing.T) {
	prev := Stats{Requests: 10, Fallbacks: 2, Errors: map[string]uint64{"timeout": 3, "status_5xx": 1},
		UpstreamFailures: map[string]uint64{"connect_error": 4}, BackupAnswers: 1}
	prev.Latency.Counts[3], prev.Latency.Total, prev.Latency.SumNS, prev.Latency.MaxNS = 10, 10, 1000, 900
	cur := Stats{Requests: 15, Fallbacks: 2, Errors: map[string]uint64{"timeout": 5, "status_5xx": 1, "nan_output": 1},
		UpstreamFailures: map[string]uint64{"connect_error": 4}, BackupAnswers: 3, ShadowCompared: 2, ShadowDisagreed: 1}
	cur.Latency.Counts[3], cur.Latency.Counts[5], cur.Latency.Total, cur.Latency.SumNS, cur.Latency.MaxNS = 12, 3, 15, 1800, 50

	d := cur.Since(&prev)
	if d.Requests != 5 || d.Fallbacks != 0 || d.BackupAnswers != 2 || d.ShadowCompared != 2 || d.ShadowDisagreed != 1 {
		t.Fatalf("counters: %+v", d)
	}
	if want := map[string]uint64{"timeout": 2, "nan_output": 1}; !maps.Equal(d.Errors, want) {
		t.Fatalf("errors %v, want %v (kinds that did not grow left out)", d.Errors, want)
	}
	if d.UpstreamFailures != nil {
		t.Fatalf("upstream failures %v, want nil: nothing grew", d.UpstreamFailures)
	}
	if d.Latency.Counts[3] != 2 || d.Latency.Counts[5] != 3 || d.Latency.Total != 5 || d.Latency.SumNS != 800 || d.Latency.MaxNS != 50 {
		t.Fatalf("latency %+v, want the interval's buckets and cur's max", d.Latency)
	}
	if z := cur.Since(&cur); z.Requests != 0 || z.Errors != nil || z.Latency.Total != 0 {
		t.Fatalf("since itself: %+v", z)
	}
}

func TestCopyCounts(t *testing.T) {
	cases := map[string]struct {
		dst, src, want map[string]uint64
	}{
		"nil from empty stays nil": {nil, map[string]uint64{}, nil},
		"nil from counts":          {nil, map[string]uint64{"a": 1}, map[string]uint64{"a": 1}},
		"reused, old keys gone":    {map[string]uint64{"a": 9, "b": 2}, map[string]uint64{"a": 1}, map[string]uint64{"a": 1}},
		"reused, emptied":          {map[string]uint64{"a": 9}, nil, map[string]uint64{}},
	}
	for name, c := range cases {
		got := CopyCounts(c.dst, c.src)
		if (got == nil) != (c.want == nil) || !maps.Equal(got, c.want) {
			t.Errorf("%s: %v, want %v", name, got, c.want)
		}
		if len(c.src) > 0 {
			c.src["a"]++
			if got["a"] == c.src["a"] {
				t.Errorf("%s: the copy shares the source's storage", name)
			}
		}
	}
}
