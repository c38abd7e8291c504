package xds

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/switchyard-dev/switchyard/api"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
)

// NodeMetadataAdmin is the node metadata key holding a proxy's admin
// address (proxy/xdsclient.MetadataAdminAddr), kept in
// ProxyStatus.Admin: the shadow report (controlplane/stats) asks there.
const NodeMetadataAdmin = "switchyard.admin"

type typeState struct {
	api.TypeStatus
	sentNonce string
}

type streamState struct {
	node        string
	cluster     string
	admin       string
	connectedAt time.Time
	types       map[string]*typeState
	ackedSeen   int64 // newest summarized ACK already observed in metrics
}

// Tracker records ACK/NACK per proxy (node id) and version from
// go-control-plane's server callbacks. It is safe for concurrent use.
//
// It also stops a NACK from looping: go-control-plane's snapshot cache
// answers a request whose version_info differs from the snapshot at once,
// and a NACK carries the last good version, so a proxy that rejects a
// version would get it again immediately, forever. OnStreamRequest rewrites
// a NACK's version_info to the rejected version, so the cache waits for the
// next snapshot instead.
type Tracker struct {
	now     func() time.Time
	metrics *Metrics

	mu      sync.Mutex
	streams map[int64]*streamState
	pushed  map[int64]time.Time // version -> when its snapshot was set
	changed chan struct{}       // closed and replaced on every change
}

// NewTracker returns an empty tracker. metrics may be nil.
func NewTracker(metrics *Metrics, now func() time.Time) *Tracker {
	if now == nil {
		now = time.Now
	}
	return &Tracker{now: now, metrics: metrics, streams: map[int64]*streamState{},
		pushed: map[int64]time.Time{}, changed: make(chan struct{})}
}

// Callbacks returns the go-control-plane server callbacks feeding the
// tracker.
func (t *Tracker) Callbacks() serverv3.Callbacks {
	return serverv3.CallbackFuncs{
		StreamOpenFunc: func(_ context.Context, id int64, _ string) error {
			t.mu.Lock()
			t.streams[id] = &streamState{connectedAt: t.now(), types: map[string]*typeState{}}
			t.mu.Unlock()
			return nil
		},
		StreamClosedFunc: func(id int64, _ *corev3.Node) {
			t.mu.Lock()
			delete(t.streams, id)
			t.broadcastLocked()
			t.mu.Unlock()
		},
		StreamRequestFunc:  t.onRequest,
		StreamResponseFunc: t.onResponse,
	}
}

func (t *Tracker) onRequest(id int64, req *discoveryv3.DiscoveryRequest) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.streams[id]
	if s == nil {
		s = &streamState{connectedAt: t.now(), types: map[string]*typeState{}}
		t.streams[id] = s
	}
	if n := req.GetNode(); n != nil {
		s.node, s.cluster = n.GetId(), n.GetCluster()
		if a := n.GetMetadata().GetFields()[NodeMetadataAdmin].GetStringValue(); a != "" {
			s.admin = a
		}
	}
	ts := s.types[req.GetTypeUrl()]
	if ts == nil {
		ts = &typeState{}
		s.types[req.GetTypeUrl()] = ts
	}
	if req.GetResponseNonce() == "" || req.GetResponseNonce() != ts.sentNonce {
		t.broadcastLocked() // a new subscription or a stale nonce: no verdict
		return nil
	}
	if d := req.GetErrorDetail(); d != nil {
		ts.NackedVersion, ts.NackReason = ts.SentVersion, d.GetMessage()
		req.VersionInfo = ts.SentVersion // see the type comment
		if t.metrics != nil {
			t.metrics.nacks.Inc()
		}
	} else {
		ts.AckedVersion = req.GetVersionInfo()
		if ts.NackedVersion != "" && atLeast(ts.AckedVersion, ts.NackedVersion) {
			ts.NackedVersion, ts.NackReason = "", ""
		}
	}
	if t.metrics != nil {
		acked, _, _ := ackState(s)
		if v, err := strconv.ParseInt(acked, 10, 64); err == nil && v > s.ackedSeen {
			s.ackedSeen = v
			if at, ok := t.pushed[v]; ok {
				t.metrics.ackLatency.Observe(t.now().Sub(at).Seconds())
			}
		}
	}
	t.broadcastLocked()
	return nil
}

func (t *Tracker) onResponse(_ context.Context, id int64, req *discoveryv3.DiscoveryRequest, resp *discoveryv3.DiscoveryResponse) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.streams[id]
	if s == nil {
		return
	}
	ts := s.types[resp.GetTypeUrl()]
	if ts == nil {
		ts = &typeState{}
		s.types[resp.GetTypeUrl()] = ts
	}
	ts.SentVersion, ts.sentNonce = resp.GetVersionInfo(), resp.GetNonce()
}

// Pushed records that the snapshot with this (numeric) version was set.
func (t *Tracker) Pushed(version int64, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.pushed[version] = at
	for v := range t.pushed { // keep the newest few
		if v < version-64 {
			delete(t.pushed, v)
		}
	}
}

func (t *Tracker) broadcastLocked() {
	close(t.changed)
	t.changed = make(chan struct{})
}

// olderThan compares versions numerically when both are integers (store
// revisions), else by equality (older = different).
func olderThan(a, b string) bool {
	x, err1 := strconv.ParseInt(a, 10, 64)
	y, err2 := strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil {
		return a != b
	}
	return x < y
}

// atLeast reports whether version v is the same as or newer than want.
func atLeast(v, want string) bool { return v != "" && (v == want || !olderThan(v, want)) }

func summarize(s *streamState) api.ProxyStatus {
	p := api.ProxyStatus{Node: s.node, Cluster: s.cluster, Admin: s.admin, ConnectedAt: s.connectedAt, Types: map[string]api.TypeStatus{}}
	for url, ts := range s.types {
		p.Types[url] = ts.TypeStatus
	}
	p.AckedVersion, p.NackedVersion, p.NackReason = ackState(s)
	return p
}

// ackState is the stream's oldest ACKed version over its subscribed types
// ("" if one has none yet) and its newest NACK, without allocating.
func ackState(s *streamState) (acked, nacked, reason string) {
	first := true
	for _, ts := range s.types {
		switch {
		case ts.AckedVersion == "":
			acked, first = "", false
		case first:
			acked, first = ts.AckedVersion, false
		case acked != "" && olderThan(ts.AckedVersion, acked):
			acked = ts.AckedVersion
		}
		if ts.NackedVersion != "" && (nacked == "" || olderThan(nacked, ts.NackedVersion)) {
			nacked, reason = ts.NackedVersion, ts.NackReason
		}
	}
	return acked, nacked, reason
}

// Proxies lists the connected proxies that have identified themselves,
// sorted by node id and stream.
func (t *Tracker) Proxies() []api.ProxyStatus {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]api.ProxyStatus, 0, len(t.streams))
	for id, s := range t.streams {
		if s.node == "" {
			continue
		}
		p := summarize(s)
		p.Stream = id
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Node != out[j].Node {
			return out[i].Node < out[j].Node
		}
		return out[i].Stream < out[j].Stream
	})
	return out
}

// Connected is the number of identified proxy streams.
func (t *Tracker) Connected() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, s := range t.streams {
		if s.node != "" {
			n++
		}
	}
	return n
}

// Status reports, for every connected proxy, whether it has ACKed version
// (or a newer one), NACKed it, or not answered yet.
func (t *Tracker) Status(version string) api.AckResult {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.statusLocked(version)
}

func (t *Tracker) statusLocked(version string) api.AckResult {
	r := api.AckResult{Version: version, Acked: []string{}}
	for _, s := range t.streams {
		if s.node == "" {
			continue
		}
		acked, nacked, _ := ackState(s)
		r.Total++
		switch {
		case atLeast(acked, version):
			r.Acked = append(r.Acked, s.node)
		case nacked != "" && atLeast(nacked, version):
			r.Nacked = append(r.Nacked, s.node)
		default:
			r.Pending = append(r.Pending, s.node)
		}
	}
	sort.Strings(r.Acked)
	sort.Strings(r.Nacked)
	sort.Strings(r.Pending)
	return r
}

// WaitForAck waits until every connected proxy has ACKed version (or a
// newer one) or NACKed it, or until ctx is done, and returns the node ids
// that ACKed and all connected node ids. Proxies that disconnect stop
// counting; with no proxies connected it returns at once.
func (t *Tracker) WaitForAck(ctx context.Context, version string) (acked, total []string) {
	r := t.Wait(ctx, version)
	total = append(append(append([]string{}, r.Acked...), r.Nacked...), r.Pending...)
	sort.Strings(total)
	return r.Acked, total
}

// Wait is WaitForAck returning the full AckResult.
func (t *Tracker) Wait(ctx context.Context, version string) api.AckResult {
	for {
		t.mu.Lock()
		r := t.statusLocked(version)
		ch := t.changed
		t.mu.Unlock()
		if len(r.Pending) == 0 {
			return r
		}
		select {
		case <-ctx.Done():
			return r
		case <-ch:
		}
	}
}

// WaitConnected waits until at least n identified proxy streams are
// connected, or ctx is done.
func (t *Tracker) WaitConnected(ctx context.Context, n int) error {
	for {
		t.mu.Lock()
		c := 0
		for _, s := range t.streams {
			if s.node != "" {
				c++
			}
		}
		ch := t.changed
		t.mu.Unlock()
		if c >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d of %d proxies connected: %w", c, n, ctx.Err())
		case <-ch:
		}
	}
}
