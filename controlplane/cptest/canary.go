package cptest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/api/statspb"
	"github.com/switchyard-dev/switchyard/canary"
)

// Clock is an injected clock (CanaryOptions.Now: c.Now).
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock is a clock at t.
func NewClock(t time.Time) *Clock { return &Clock{t: t} }

// Now is the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Add moves the clock on by d.
func (c *Clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// Source is a canaryctl.MetricSource that answers every window with the
// figures Set per version.
type Source struct {
	mu sync.Mutex
	by map[string]canary.Stats
}

// Stats answers version's figures.
func (f *Source) Stats(_ context.Context, _, version string, _, _ time.Time) (canary.Stats, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.by[version], nil
}

// Set sets version's figures.
func (f *Source) Set(version string, s canary.Stats) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.by == nil {
		f.by = map[string]canary.Stats{}
	}
	f.by[version] = s
}

// Figures is n requests of latency 10 ms with errs errors of kind.
func Figures(n, errs uint64, kind string) canary.Stats {
	s := canary.Stats{Requests: n}
	for range n {
		s.Latency.Record(10 * time.Millisecond)
	}
	if errs > 0 {
		s.Errors = map[string]uint64{kind: errs}
	}
	return s
}

// CanaryModel is model m with versions v1, v2 at w, with spec.canary c,
// normalized.
func CanaryModel(t testing.TB, w map[string]int, c *api.Canary) api.Model {
	t.Helper()
	m := api.Model{
		Metadata: api.Metadata{Name: "m"},
		Spec: api.Spec{
			Versions: []api.Version{
				{Name: "v1", Endpoints: []string{"127.0.0.1:8001"}},
				{Name: "v2", Endpoints: []string{"127.0.0.1:8002"}},
			},
			Traffic: api.Traffic{Weights: w},
			Canary:  c,
		},
	}
	if err := api.Normalize(&m); err != nil {
		t.Fatal(err)
	}
	return m
}

// Report is a stats report of proxy (boot id boot, sequence number seq):
// requests requests of model m, version v1, at latency, one of them a 5xx.
func Report(proxy, boot string, seq uint64, requests uint64, latency time.Duration) *statspb.Report {
	var st canary.Stats
	for range requests {
		st.Latency.Record(latency)
	}
	st.Requests = requests
	st.Errors = map[string]uint64{"status_5xx": 1}
	return &statspb.Report{Proxy: proxy, BootId: boot, Seq: seq, AtUnixNano: time.Now().UnixNano(),
		Entries: []*statspb.VariantStats{canary.EntryToProto(&canary.Entry{Model: "m", Version: "v1", Stats: st})}}
}
