package seclog

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestBucket(t *testing.T) {
	t0 := time.Unix(1000, 0)
	type step struct {
		at   time.Duration
		want bool
	}
	cases := map[string]struct {
		rate  float64
		burst int
		steps []step
	}{
		"burst then refused":          {1, 2, []step{{0, true}, {0, true}, {0, false}}},
		"refills at rate":             {2, 1, []step{{0, true}, {0, false}, {500 * time.Millisecond, true}, {600 * time.Millisecond, false}}},
		"never more than burst":       {10, 2, []step{{0, true}, {time.Hour, true}, {time.Hour, true}, {time.Hour, false}}},
		"clock going back is no gift": {1, 1, []step{{time.Second, true}, {0, false}}},
	}
	for name, c := range cases {
		var b Bucket
		for i, s := range c.steps {
			if got := b.Allow(t0.Add(s.at), c.rate, c.burst); got != s.want {
				t.Errorf("%s: step %d at %v: %v, want %v", name, i, s.at, got, s.want)
			}
		}
	}
}

// A flood is counted in full but kept and listed only within the rate
// limit and the capacity; the newest events are the ones kept.
func TestLogBoundedAndRateLimited(t *testing.T) {
	now := time.Unix(5000, 0)
	reg := prometheus.NewRegistry()
	l := New(Options{Component: "backend", Capacity: 3, Rate: 1, Burst: 5, Registerer: reg, Now: func() time.Time { return now }})
	for i := range 100 {
		l.Refuse(Event{Remote: "127.0.0.1:1", Method: "POST", Path: "/x", Reason: NoCredential, Detail: string(rune('a' + i%26))})
	}
	ev, dropped := l.List()
	if len(ev) != 3 || dropped != 95 {
		t.Fatalf("kept %d, dropped %d; want 3 kept (capacity), 95 dropped (burst 5)", len(ev), dropped)
	}
	if ev[0].Detail != "c" || ev[2].Detail != "e" || ev[0].Component != "backend" || !ev[0].Time.Equal(now) {
		t.Fatalf("kept %+v, want the 3rd..5th events", ev)
	}
	if n := testutil.ToFloat64(l.refused.WithLabelValues("backend", "no_credential")); n != 100 {
		t.Fatalf("refused counter %v, want 100", n)
	}
	if n := testutil.ToFloat64(l.suppressed); n != 95 {
		t.Fatalf("suppressed counter %v, want 95", n)
	}
	now = now.Add(2 * time.Second)
	l.Refuse(Event{Reason: BadCredential, Subject: "tok"})
	if ev, _ := l.List(); ev[2].Reason != BadCredential {
		t.Fatalf("after the refill the newest event is %+v", ev[2])
	}

	rec := httptest.NewRecorder()
	l.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/security/events", nil))
	var body struct {
		Events     []Event `json:"events"`
		Suppressed uint64  `json:"suppressed"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || len(body.Events) != 3 || body.Suppressed != 95 {
		t.Fatalf("handler: %v %s", err, rec.Body)
	}
}
