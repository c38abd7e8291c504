package upstream

import (
	"crypto/tls"
	"fmt"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/switchyard-dev/switchyard/internal/h2"
	pb "github.com/switchyard-dev/switchyard/oip/inferencepb"
)

// Endpoint is one backend address with its connections and live counters.
// An endpoint speaks either HTTP (HTTP is set) or gRPC (GRPC is set).
type Endpoint struct {
	Addr string
	HTTP *HTTPPool
	GRPC pb.GRPCInferenceServiceClient
	conn *grpc.ClientConn
	lean *h2.Client // ModelInferRaw's client (nil: conn's)

	inFlight     atomic.Int64
	consecFail   atomic.Int32
	ejectedUntil atomic.Int64 // unix nanoseconds
	ejections    atomic.Int32
	total        atomic.Int64
	failures     atomic.Int64
	cut          atomic.Bool // Cut was called
}

// NewHTTPEndpoint returns an HTTP/1.1 endpoint.
func NewHTTPEndpoint(addr string, maxIdle int) *Endpoint {
	return &Endpoint{Addr: addr, HTTP: NewHTTPPool(addr, maxIdle)}
}

// NewHTTPSEndpoint returns an HTTP/1.1 endpoint over TLS (cfg: the CA
// that the backend's certificate must chain to, a client certificate for
// mTLS).
func NewHTTPSEndpoint(addr string, maxIdle int, cfg *tls.Config) *Endpoint {
	return &Endpoint{Addr: addr, HTTP: NewHTTPSPool(addr, maxIdle, cfg)}
}

// NewGRPCEndpoint returns a gRPC endpoint on one HTTP/2 connection (grpc
// connects lazily and reconnects by itself).
func NewGRPCEndpoint(addr string, opts ...grpc.DialOption) (*Endpoint, error) {
	cc, err := grpc.NewClient(addr, append(DialOptions(), opts...)...)
	if err != nil {
		return nil, fmt.Errorf("grpc endpoint %s: %w", addr, err)
	}
	return &Endpoint{Addr: addr, GRPC: pb.NewGRPCInferenceServiceClient(cc), conn: cc}, nil
}

// Close releases the endpoint's connections.
func (e *Endpoint) Close() {
	if e.HTTP != nil {
		e.HTTP.Close()
	}
	if e.conn != nil {
		e.conn.Close()
	}
	if e.lean != nil {
		e.lean.Close()
	}
}

// Cut ends the endpoint's calls in flight at once and refuses new ones
// (a shutdown past its drain bound): HTTP connections in use are cut,
// gRPC connections closed (their calls fail).
func (e *Endpoint) Cut() {
	e.cut.Store(true)
	if e.HTTP != nil {
		e.HTTP.Cut()
	}
	if e.conn != nil {
		e.conn.Close()
	}
	if e.lean != nil {
		e.lean.Close()
	}
}

// IsCut reports whether Cut was called: a call that failed since was cut.
func (e *Endpoint) IsCut() bool { return e.cut.Load() }

// Begin and End bracket one attempt (the least-request count).
func (e *Endpoint) Begin() { e.inFlight.Add(1) }

// End closes an attempt begun with Begin.
func (e *Endpoint) End() { e.inFlight.Add(-1) }

// InFlight is the number of attempts in progress.
func (e *Endpoint) InFlight() int64 { return e.inFlight.Load() }

// Ejected reports whether outlier detection has ejected the endpoint at now.
func (e *Endpoint) Ejected(now int64) bool { return e.ejectedUntil.Load() > now }

// Ejections is how many times the endpoint was ejected.
func (e *Endpoint) Ejections() int { return int(e.ejections.Load()) }

// Counts returns attempts and failed attempts.
func (e *Endpoint) Counts() (total, failures int64) { return e.total.Load(), e.failures.Load() }

// Outlier is the outlier-ejection policy: ConsecutiveFailures failed attempts
// (connect errors, timeouts, 5xx) in a row eject an endpoint for
// BaseEjection × the number of times it was ejected, at most MaxEjection.
type Outlier struct {
	ConsecutiveFailures int32
	BaseEjection        time.Duration
	MaxEjection         time.Duration
}

// DefaultOutlier is the policy used when none is configured.
var DefaultOutlier = Outlier{ConsecutiveFailures: 5, BaseEjection: 5 * time.Second, MaxEjection: 5 * time.Minute}

// Report records an attempt's outcome at now (unix nanoseconds) and reports
// whether this failure ejected the endpoint.
func (e *Endpoint) Report(ok bool, now int64, o *Outlier) (ejected bool) {
	e.total.Add(1)
	if ok {
		if e.consecFail.Load() != 0 {
			e.consecFail.Store(0)
		}
		return false
	}
	e.failures.Add(1)
	if e.consecFail.Add(1) < o.ConsecutiveFailures || e.Ejected(now) {
		return false
	}
	e.consecFail.Store(0)
	n := e.ejections.Add(1)
	d := o.BaseEjection * time.Duration(n)
	if d > o.MaxEjection || d <= 0 {
		d = o.MaxEjection
	}
	e.ejectedUntil.Store(now + int64(d))
	return true
}

// PickP2C chooses an endpoint by power of two choices, least request: two
// distinct random candidates (from rnd), the one with fewer attempts in
// flight wins. Ejected endpoints and skip are avoided while another endpoint
// is available; when every endpoint is ejected, ejection is ignored (better a
// doubtful endpoint than none). Returns nil only for an empty list.
func PickP2C(eps []*Endpoint, rnd uint64, now int64, skip *Endpoint) *Endpoint {
	n := len(eps)
	switch n {
	case 0:
		return nil
	case 1:
		return eps[0]
	}
	a := eps[int((rnd&0xffffffff)*uint64(n)>>32)]
	j := int(((rnd >> 32) * uint64(n-1)) >> 32)
	b := eps[j]
	if b == a {
		b = eps[n-1]
	}
	aOK, bOK := a != skip && !a.Ejected(now), b != skip && !b.Ejected(now)
	switch {
	case aOK && bOK:
		if b.InFlight() < a.InFlight() {
			return b
		}
		return a
	case aOK:
		return a
	case bOK:
		return b
	}
	// Both candidates are bad: scan for any good one.
	var best *Endpoint
	for _, e := range eps {
		if e != skip && !e.Ejected(now) && (best == nil || e.InFlight() < best.InFlight()) {
			best = e
		}
	}
	if best != nil {
		return best
	}
	for _, e := range eps {
		if e != skip {
			return e
		}
	}
	return a
}

// RetryBudget caps retries at a share of requests: each request deposits
// percent/100 of a token (up to a cap), each retry spends one token. So over
// any stretch retries are at most percent % of requests plus the cap — a
// failing backend cannot multiply the load by the retry count.
type RetryBudget struct {
	milli   atomic.Int64
	deposit int64
	cap     int64
}

// NewRetryBudget returns a budget of percent % of requests with a burst
// allowance of burst retries (the bucket starts full).
func NewRetryBudget(percent float64, burst int) *RetryBudget {
	b := &RetryBudget{deposit: int64(percent * 10), cap: int64(burst) * 1000}
	b.milli.Store(b.cap)
	return b
}

// Deposit records one request.
func (b *RetryBudget) Deposit() {
	if v := b.milli.Add(b.deposit); v > b.cap {
		b.milli.CompareAndSwap(v, b.cap)
	}
}

// Withdraw takes a token for one retry and reports whether one was there.
func (b *RetryBudget) Withdraw() bool {
	for {
		v := b.milli.Load()
		if v < 1000 {
			return false
		}
		if b.milli.CompareAndSwap(v, v-1000) {
			return true
		}
	}
}
