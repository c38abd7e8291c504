// Package seclog makes refused calls visible: each refusal (no credential,
// a bad one, an identity not allowed, an API that is off) is counted, and —
// within a rate limit — logged as a structured event and kept in a
// bounded in-memory log that an API can list. It is not the revision
// audit: an unauthenticated flood can grow neither the log (a ring of
// Capacity events) nor the log output (Rate per second, Burst at once);
// what the limit drops is counted (Suppressed), never silently lost.
//
// Used by the backend's repository API; the control plane's API and the
// proxy's admin port adopt it by calling Refuse where they answer 401/403
// and serving Handler on an authenticated path.
package seclog

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Reason is why a call was refused: a small fixed set (a metric label).
type Reason string

// Reasons.
const (
	NoCredential  Reason = "no_credential"  // 401: nothing presented
	BadCredential Reason = "bad_credential" // 401: a token that is not accepted
	NotAllowed    Reason = "not_allowed"    // 403: a known subject without the right
	Disabled      Reason = "disabled"       // 403: the API is off on this server
)

// Event is one refused call.
type Event struct {
	Time      time.Time `json:"time"`
	Component string    `json:"component"`         // "backend", "controlplane", "proxy-admin"
	Subject   string    `json:"subject,omitempty"` // the identity or token name, if one was presented
	Remote    string    `json:"remote"`            // the peer address
	Method    string    `json:"method"`            // HTTP method or gRPC full method
	Path      string    `json:"path"`              // HTTP path ("" for gRPC)
	Reason    Reason    `json:"reason"`
	Detail    string    `json:"detail,omitempty"` // the message the caller got
}

// Options configure New.
type Options struct {
	Component string
	// Capacity is the number of events kept (default 256).
	Capacity int
	// Rate and Burst bound the events logged and kept: Rate per second on
	// average, Burst at once (defaults 5 and 20).
	Rate  float64
	Burst int
	// Logger receives one Warn line per kept event; nil discards them.
	Logger *slog.Logger
	// Registerer receives the counters; nil: not registered.
	Registerer prometheus.Registerer
	// Now is the clock (nil: time.Now).
	Now func() time.Time
}

// Log is a bounded, rate-limited log of refused calls. Safe for
// concurrent use.
type Log struct {
	opts       Options
	refused    *prometheus.CounterVec
	suppressed prometheus.Counter

	mu      sync.Mutex
	bucket  Bucket
	ring    []Event
	next    int
	full    bool
	dropped uint64
}

// New creates a Log.
func New(opts Options) *Log {
	if opts.Capacity <= 0 {
		opts.Capacity = 256
	}
	if opts.Rate <= 0 {
		opts.Rate = 5
	}
	if opts.Burst <= 0 {
		opts.Burst = 20
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	l := &Log{
		opts: opts,
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_security_refused_total",
			Help: "Calls refused for want of a credential or a right, by component and reason (every refusal, also those the security log's rate limit left out).",
		}, []string{"component", "reason"}),
		suppressed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchyard_security_events_suppressed_total", Help: "Refused calls counted but not logged or kept: over the security log's rate limit.",
			ConstLabels: prometheus.Labels{"component": opts.Component},
		}),
		ring: make([]Event, opts.Capacity),
	}
	for _, r := range []Reason{NoCredential, BadCredential, NotAllowed, Disabled} {
		l.refused.WithLabelValues(opts.Component, string(r))
	}
	if opts.Registerer != nil {
		opts.Registerer.MustRegister(l.refused, l.suppressed)
	}
	return l
}

// Refuse records a refused call: always counted; logged and kept unless
// over the rate limit. Time and Component are filled in when empty.
func (l *Log) Refuse(ev Event) {
	l.refused.WithLabelValues(l.opts.Component, string(ev.Reason)).Inc()
	now := l.opts.Now()
	if ev.Time.IsZero() {
		ev.Time = now
	}
	if ev.Component == "" {
		ev.Component = l.opts.Component
	}
	l.mu.Lock()
	ok := l.bucket.Allow(now, l.opts.Rate, l.opts.Burst)
	if ok {
		l.ring[l.next] = ev
		l.next = (l.next + 1) % len(l.ring)
		l.full = l.full || l.next == 0
	} else {
		l.dropped++
	}
	l.mu.Unlock()
	if !ok {
		l.suppressed.Inc()
		return
	}
	l.opts.Logger.Warn("security: call refused", "component", ev.Component, "subject", ev.Subject, "remote", ev.Remote,
		"method", ev.Method, "path", ev.Path, "reason", string(ev.Reason), "detail", ev.Detail)
}

// List returns the kept events, oldest first, and how many refusals the
// rate limit left out since the start.
func (l *Log) List() (events []Event, suppressed uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.full {
		events = append(events, l.ring[l.next:]...)
	}
	events = append(events, l.ring[:l.next]...)
	return events, l.dropped
}

// Handler serves List as JSON: {"events": [...], "suppressed": N}. Put it
// behind the API's own authentication.
func (l *Log) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", http.MethodGet)
			http.Error(w, `{"error":"method `+r.Method+` not allowed; use GET"}`, http.StatusMethodNotAllowed)
			return
		}
		ev, n := l.List()
		if ev == nil {
			ev = []Event{}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(struct {
			Events     []Event `json:"events"`
			Suppressed uint64  `json:"suppressed"`
		}{ev, n})
	})
}

// Bucket is a token bucket: Burst tokens at most, refilled at Rate per
// second. The zero Bucket is full. Pure: time comes in.
type Bucket struct {
	tokens float64
	last   time.Time
	used   bool
}

// Allow takes a token at now if one is left.
func (b *Bucket) Allow(now time.Time, rate float64, burst int) bool {
	if !b.used {
		b.tokens, b.last, b.used = float64(burst), now, true
	}
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(float64(burst), b.tokens+d.Seconds()*rate)
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
