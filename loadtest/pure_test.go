package loadtest

import (
	"strings"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/canary"
)

func TestReplicas(t *testing.T) {
	for name, tc := range map[string]struct {
		capacity, target, headroom float64
		want                       int
	}{
		"exact":                     {capacity: 100, target: 100, headroom: 0, want: 1},
		"headroom rounds":           {capacity: 100, target: 100, headroom: 0.3, want: 2},
		"many":                      {capacity: 250, target: 2000, headroom: 0.25, want: 10},
		"just over":                 {capacity: 100, target: 201, headroom: 0, want: 3},
		"unknown capacity":          {capacity: 0, target: 100, headroom: 0.3, want: 0},
		"no target":                 {capacity: 100, target: 0, headroom: 0.3, want: 0},
		"negative headroom ignored": {capacity: 100, target: 150, headroom: -1, want: 2},
	} {
		if got := Replicas(tc.capacity, tc.target, tc.headroom); got != tc.want {
			t.Errorf("%s: Replicas(%v, %v, %v) = %d, want %d", name, tc.capacity, tc.target, tc.headroom, got, tc.want)
		}
	}
}

func TestJudgeStepAndNextRate(t *testing.T) {
	ms := time.Millisecond
	for name, tc := range map[string]struct {
		target, achieved float64
		p99              time.Duration
		errs, unsent     int
		ok               bool
		reason           string
	}{
		"pass":         {100, 99, 5 * ms, 0, 0, true, ""},
		"errors":       {100, 99, 5 * ms, 3, 0, false, "3 errors"},
		"unsent":       {100, 99, 5 * ms, 0, 2, false, "still queued"},
		"over budget":  {100, 99, 50 * ms, 0, 0, false, "p99 50.00ms > budget 10.00ms"},
		"cannot reach": {100, 50, 5 * ms, 0, 0, false, "achieved 50 rps"},
	} {
		v := JudgeStep(tc.target, tc.achieved, tc.p99, 10*ms, tc.errs, tc.unsent)
		if v.OK != tc.ok || !strings.Contains(v.Reason, tc.reason) {
			t.Errorf("%s: got %+v, want ok=%v reason containing %q", name, v, tc.ok, tc.reason)
		}
	}
	for _, tc := range []struct{ in, want float64 }{{100, 150}, {1, 2}, {2, 3}, {10, 15}, {15, 23}} {
		if got := NextRate(tc.in, 1.5); got != tc.want {
			t.Errorf("NextRate(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestPlanned(t *testing.T) {
	for _, tc := range []struct {
		rate float64
		d    time.Duration
		max  int
		want int
	}{{100, time.Second, 1000, 100}, {100, 2 * time.Second, 150, 150}, {0.5, time.Second, 10, 1}, {200, 500 * time.Millisecond, 1000, 100}} {
		if got := Planned(tc.rate, tc.d, tc.max); got != tc.want {
			t.Errorf("Planned(%v, %v, %d) = %d, want %d", tc.rate, tc.d, tc.max, got, tc.want)
		}
	}
}

func TestSummarizePercentiles(t *testing.T) {
	var h canary.Histogram
	for i := 1; i <= 100; i++ {
		h.Record(time.Duration(i) * time.Millisecond)
	}
	s := Summarize(&h)
	within := func(name string, got, want time.Duration) {
		// Buckets are at most 12.5 % wide.
		if d := float64(got-want) / float64(want); d < -0.125 || d > 0.125 {
			t.Errorf("%s = %v, want %v ±12.5%%", name, got, want)
		}
	}
	within("p50", s.P50, 50*time.Millisecond)
	within("p90", s.P90, 90*time.Millisecond)
	within("p95", s.P95, 95*time.Millisecond)
	within("p99", s.P99, 99*time.Millisecond)
	if s.Max != 100*time.Millisecond || s.Count != 100 {
		t.Errorf("max %v count %d, want 100ms 100", s.Max, s.Count)
	}
	if !(s.P50 <= s.P90 && s.P90 <= s.P95 && s.P95 <= s.P99 && s.P99 <= s.Max) {
		t.Errorf("percentiles not monotone: %+v", s)
	}
	if (Summarize(&canary.Histogram{}) != Summary{}) {
		t.Error("empty histogram: want zero summary")
	}
}

func TestParseProc(t *testing.T) {
	stat := "1234 (my (weird) proc) S 1 1234 1234 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 8 0 100 1000000 2000 18446744073709551615"
	cpu, err := ParseStat([]byte(stat))
	if err != nil || cpu != 3*time.Second {
		t.Errorf("ParseStat = %v, %v; want 3s (300 ticks)", cpu, err)
	}
	if _, err := ParseStat([]byte("1234 (x) S 1 2")); err == nil {
		t.Error("short stat: want error")
	}
	status := "Name:\tx\nVmPeak:\t  9999 kB\nVmRSS:\t    2048 kB\nThreads: 3\n"
	rss, err := ParseStatusRSS([]byte(status))
	if err != nil || rss != 2048*1024 {
		t.Errorf("ParseStatusRSS = %d, %v; want 2 MiB", rss, err)
	}
	if _, err := ParseStatusRSS([]byte("Name:\tkthreadd\n")); err == nil || !strings.Contains(err.Error(), "VmRSS") {
		t.Errorf("no VmRSS: err = %v", err)
	}
	got := Summarise(7, ProcSample{CPU: time.Second, RSSBytes: 100}, ProcSample{CPU: 3 * time.Second, RSSBytes: 150},
		[]ProcSample{{RSSBytes: 120}, {RSSBytes: 400}, {RSSBytes: 130}})
	want := ProcStats{PID: 7, CPUSeconds: 2, RSSStart: 100, RSSPeak: 400, RSSEnd: 150, RSSGrowth: 50}
	if got != want {
		t.Errorf("Summarise = %+v, want %+v", got, want)
	}
}

func TestReadRequests(t *testing.T) {
	good := `{"inputs":[{"name":"features","datatype":"FP32","shape":[1,2],"data":[1,2]}]}

# a comment
{"inputs":[{"name":"features","datatype":"FP32","shape":[1,2],"data":[3,4]}]}
`
	reqs, err := ReadRequests(strings.NewReader(good))
	if err != nil || len(reqs) != 2 {
		t.Fatalf("ReadRequests = %d, %v; want 2 requests", len(reqs), err)
	}
	for name, tc := range map[string]struct{ in, want string }{
		"bad json on line 3": {in: good[:strings.Index(good, "\n")+1] + "\n" + `{"inputs":[{"name":"f","datatype":"FP32","shape":[1,2],"data":[1]}` + "\n", want: "line 3:"},
		"bad datatype":       {in: `{"inputs":[{"name":"f","datatype":"FP99","shape":[1],"data":[1]}]}`, want: "line 1:"},
		"no inputs":          {in: "\n" + `{"inputs":[]}`, want: "line 2: request has no inputs"},
		"empty":              {in: "\n# nothing\n", want: "no requests"},
	} {
		_, err := ReadRequests(strings.NewReader(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want containing %q", name, err, tc.want)
		}
	}
}

func TestTargetValidate(t *testing.T) {
	for name, tc := range map[string]struct {
		t       Target
		want    string
		wantErr string
	}{
		"hostport":      {t: Target{Protocol: "rest", Addr: "127.0.0.1:8080", Model: "m"}, want: "127.0.0.1:8080"},
		"url":           {t: Target{Protocol: "rest", Addr: "http://localhost:8080", Model: "m"}, want: "localhost:8080"},
		"path refused":  {t: Target{Protocol: "rest", Addr: "http://127.0.0.1:8080/v2/models/x", Model: "m"}, wantErr: "not a path"},
		"remote":        {t: Target{Protocol: "grpc", Addr: "10.0.0.1:9000", Model: "m"}, wantErr: "--allow-remote"},
		"remote ok":     {t: Target{Protocol: "grpc", Addr: "10.0.0.1:9000", Model: "m", AllowRemote: true}, want: "10.0.0.1:9000"},
		"no model":      {t: Target{Protocol: "rest", Addr: "127.0.0.1:1"}, wantErr: "model"},
		"bad protocol":  {t: Target{Protocol: "udp", Addr: "127.0.0.1:1", Model: "m"}, wantErr: "rest or grpc"},
		"no port":       {t: Target{Protocol: "rest", Addr: "127.0.0.1", Model: "m"}, wantErr: "host:port"},
		"https refused": {t: Target{Protocol: "rest", Addr: "https://127.0.0.1:1", Model: "m"}, wantErr: "http://"},
	} {
		got, err := tc.t.Validate()
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s: err = %v, want containing %q", name, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: = %q, %v; want %q", name, got, err, tc.want)
		}
	}
}
