package pipeline

import (
	"sync/atomic"
	"time"

	"github.com/switchyard-dev/switchyard/oip"
)

// Overload protection, proxy-wide (the per-version concurrency limit is
// the pipeline's, fallback.Limiter):
//
//   - a budget for the bytes of request bodies held at once, REST and gRPC
//     alike, inflated bytes counted (Config.MaxBufferedBytes, default 256
//     MiB). A REST request whose Content-Length does not fit is answered
//     503 with Retry-After before its body is read, and the connection
//     closes (lingering, so the client reads the answer); a body that
//     grows past it (chunked, or inflating) is refused once read. A gRPC
//     message is counted once grpc-go has read it (its size is bounded by
//     MaxBodyBytes and the connection cap).
//   - a cap on connections per listener (Config.MaxConnections, default
//     4096): past it, new connections wait in the kernel's accept queue.

// DefaultMaxBufferedBytes is Config.MaxBufferedBytes's default.
const DefaultMaxBufferedBytes = 256 << 20

// ByteBudget counts the request bytes held by requests in flight.
type ByteBudget struct {
	limit int64
	used  atomic.Int64
}

// take reserves n bytes; false (nothing reserved) when they do not fit.
func (b *ByteBudget) Take(n int64) bool {
	if n <= 0 {
		return true
	}
	if b.used.Add(n) > b.limit {
		b.used.Add(-n)
		return false
	}
	return true
}

// give returns n reserved bytes.
func (b *ByteBudget) Give(n int64) {
	if n > 0 {
		b.used.Add(-n)
	}
}

// overBudget is the answer to a request that does not fit the budget.
func (b *ByteBudget) OverBudget(n int64) *oip.Error {
	e := oip.Errorf(oip.Unavailable, "the proxy is holding %d bytes of request bodies (limit %d) and cannot take %d more now; retry shortly",
		b.used.Load(), b.limit, n)
	e.RetryAfter = overloadRetryAfter
	return e
}

// overloadRetryAfter is what an overload answer (shed, or a backend's
// queue rejection passed on) tells the client to wait: REST Retry-After,
// gRPC UNAVAILABLE with a RetryInfo detail.
const overloadRetryAfter = time.Second

// RetryAfterHeader is the REST header line of an overload answer.
const RetryAfterHeader = "Retry-After: 1\r\n"

// Shed counts a request refused for overload (reason: the metric's label).
func (p *Pipeline) Shed(reason string) {
	p.metrics.Shed.WithLabelValues(reason).Inc()
}
