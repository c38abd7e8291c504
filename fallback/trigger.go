package fallback

import (
	"google.golang.org/grpc/codes"
)

// Trigger is the failure vocabulary of one upstream attempt: what went
// wrong (or None when the answer is good). Its String is the metrics label
// and the x-switchyard-fallback-reason value; its Fault says whose fault it
// is, which decides everything else (breaker, chain, endpoint ejection,
// canary counts).
type Trigger uint8

// Triggers.
const (
	None         Trigger = iota // the answer is good
	Timeout                     // the route's latency budget ran out (or the backend said 408/504/DEADLINE_EXCEEDED)
	ConnectError                // the upstream could not be reached, or the connection broke
	Upstream5xx                 // HTTP 5xx other than 503/504, or a malformed answer
	Unavailable                 // HTTP 503 / gRPC UNAVAILABLE or FAILED_PRECONDITION without a retry hint (loading, draining)
	Internal                    // gRPC INTERNAL, UNKNOWN, DATA_LOSS, ABORTED
	NaNOutput                   // NaN or ±Inf in a floating-point output
	BreakerOpen                 // the version's circuit breaker refused the call
	Overload                    // a concurrency limit was reached, or the backend said it is too busy (429 / RESOURCE_EXHAUSTED, or 503 / UNAVAILABLE with a retry hint: a queue rejection)
	NotServing                  // 404 / NOT_FOUND: the version does not serve its model (unloaded, unknown backend model)
	BadAnswer                   // the answer does not fit the request (its batch dimension differs)
	Refused                     // the version refused the call for reasons not about the request (401, 403, 405, UNIMPLEMENTED, ...)
	Rejected                    // 400 / 413 / 422 / INVALID_ARGUMENT: the version says the request is bad
	Cancelled                   // the client cancelled the request or went away
	ShuttingDown                // the proxy cut the call: its shutdown's drain ran out of time
	numTriggers
)

// NumTriggers is the number of triggers (None included): a Trigger is an
// index below it, for per-trigger counter arrays.
const NumTriggers = int(numTriggers)

var triggerNames = [numTriggers]string{
	None:         "none",
	Timeout:      "timeout",
	ConnectError: "connect_error",
	Upstream5xx:  "upstream_5xx",
	Unavailable:  "unavailable",
	Internal:     "internal",
	NaNOutput:    "nan_output",
	BreakerOpen:  "breaker_open",
	Overload:     "overload",
	NotServing:   "not_serving",
	BadAnswer:    "bad_answer",
	Refused:      "refused",
	Rejected:     "rejected",
	Cancelled:    "cancelled",
	ShuttingDown: "shutting_down",
}

// String is the trigger's label ("timeout", "nan_output", ...).
func (t Trigger) String() string {
	if t < numTriggers {
		return triggerNames[t]
	}
	return "unknown"
}

// Triggers lists every trigger that can make a fallback answer (all but
// None, Rejected and Cancelled), for pre-creating metric series.
func Triggers() []Trigger {
	out := make([]Trigger, 0, numTriggers-1)
	for t := Timeout; t < numTriggers; t++ {
		if t.Fault() == FaultVersion || t.Fault() == FaultOverload {
			out = append(out, t)
		}
	}
	return out
}

// ParseTrigger is the inverse of String.
func ParseTrigger(s string) (Trigger, bool) {
	for t, n := range triggerNames {
		if n == s {
			return Trigger(t), true
		}
	}
	return None, false
}

// Fault is whose fault an attempt's outcome is.
type Fault uint8

// Faults.
const (
	// FaultNone: a good answer.
	FaultNone Fault = iota
	// FaultRequest: the version says the request is bad. From the primary
	// the answer reaches the client (the request is at fault); from a
	// fallback link (a backup) the chain moves on: the backup disagrees
	// with the request's form, the request is not at fault.
	FaultRequest
	// FaultVersion: the version failed. It counts for the breaker, ejects
	// the endpoint when the endpoint is to blame, triggers the chain, and
	// counts as an error for the canary.
	FaultVersion
	// FaultOverload: too busy to answer. It triggers the chain but opens
	// no breaker, ejects no endpoint and fails no canary error gate.
	FaultOverload
	// FaultClient: the client cancelled or went away, or the proxy cut
	// the call itself (ShuttingDown: a drain past its bound). Nobody's
	// upstream failure: no breaker, no ejection, no chain, no canary
	// count. A cancelled request is logged as 499; a cut one is answered
	// 503 (retry elsewhere) if its connection is still there.
	FaultClient
)

// Fault is the one rule for whose fault a trigger is.
func (t Trigger) Fault() Fault {
	switch t {
	case None:
		return FaultNone
	case Rejected:
		return FaultRequest
	case Overload:
		return FaultOverload
	case Cancelled, ShuttingDown:
		return FaultClient
	}
	return FaultVersion
}

// CountsForBreaker reports whether the trigger is a failure of the upstream
// version that its circuit breaker counts. BreakerOpen never reached the
// version (the failures that opened the breaker were counted), Overload
// was turned away, Cancelled is the client's doing, Rejected is an
// answer: none of them count.
func (t Trigger) CountsForBreaker() bool { return t.Fault() == FaultVersion && t != BreakerOpen }

// EjectsEndpoint reports whether the trigger blames the endpoint that was
// called (its outlier detection counts it): it did not answer, or
// answered that it cannot serve. NaN and misshapen answers blame the
// model, not the endpoint; the rest blame nobody's endpoint.
func (t Trigger) EjectsEndpoint() bool {
	switch t {
	case Timeout, ConnectError, Upstream5xx, Unavailable, Internal, NotServing, Refused:
		return true
	}
	return false
}

// Retryable reports whether another endpoint of the same version may
// answer where this one did not: nothing was answered (connect, reset) or
// the endpoint said "not here, not now" (unavailable, not serving).
// Inference is a pure function of its input, so a resend is safe.
func (t Trigger) Retryable() bool {
	switch t {
	case ConnectError, Unavailable, NotServing:
		return true
	}
	return false
}

// Falls reports whether an attempt with this outcome, made by link, moves
// the request on to the next link of the fallback chain (true), or whether
// its answer (good, or an error) goes to the client (false).
func (t Trigger) Falls(link Link) bool {
	switch t.Fault() {
	case FaultNone, FaultClient:
		return false
	case FaultRequest:
		return link != Primary
	}
	return true
}

// Link is which link of the chain made an attempt.
type Link uint8

// Links.
const (
	Primary Link = iota // the version the request was routed to
	Backup              // spec.fallback.backup
)

// Transport is how an attempt's connection fared, before any answer.
type Transport uint8

// Transport outcomes.
const (
	TransportOK       Transport = iota // an answer (status or gRPC code) arrived
	TransportConnect                   // could not connect
	TransportReset                     // the connection broke before a whole answer
	TransportTimeout                   // the deadline passed
	TransportProtocol                  // the answer was malformed
)

// Outcome is what the proxy knows about one upstream attempt, as values.
type Outcome struct {
	// ClientGone: the client's context ended (cancelled, disconnected)
	// while the attempt ran. It decides before everything else.
	ClientGone bool
	// Cut: the proxy cut the call (its drain ran out of time: the
	// endpoint's calls were ended at once). It decides next.
	Cut       bool
	Transport Transport
	// GRPC says the attempt was a gRPC call: GRPCCode is its status code;
	// otherwise HTTPStatus is the REST status.
	GRPC       bool
	GRPCCode   codes.Code
	HTTPStatus int
	// NaN: the answer holds NaN/±Inf in a floating-point output, or a 5xx
	// says so (a JSON answer cannot carry them).
	NaN bool
	// RowsMismatch: the answer's batch dimension differs from the
	// request's.
	RowsMismatch bool
	// RetryAfter: the answer told the caller when to come back (REST
	// Retry-After, a gRPC RetryInfo detail, or Triton's "Exceeds maximum
	// queue size"): with a 503 / UNAVAILABLE it is a queue rejection, an
	// overload answer rather than a failure of the version.
	RetryAfter bool
}

// Judge turns one upstream attempt into a trigger: the one rule for whose
// fault an error is (see Trigger.Fault). Order: a client that went away,
// the transport, the status (gRPC code or HTTP status), then the answer's
// content.
func Judge(o Outcome) Trigger {
	if o.ClientGone {
		return Cancelled
	}
	if o.Cut {
		return ShuttingDown
	}
	switch o.Transport {
	case TransportConnect, TransportReset:
		return ConnectError
	case TransportTimeout:
		return Timeout
	case TransportProtocol:
		return Upstream5xx
	}
	var t Trigger
	if o.GRPC {
		t = judgeGRPC(o.GRPCCode)
	} else {
		t = judgeHTTP(o.HTTPStatus)
	}
	if o.RetryAfter && ((!o.GRPC && o.HTTPStatus == 503) || (o.GRPC && o.GRPCCode == codes.Unavailable)) {
		// A full queue (Triton's ModelQueuePolicy, the backend's
		// queue_policy): the version is healthy but busy.
		return Overload
	}
	switch {
	case o.NaN && (t == None || t == Upstream5xx || t == Internal):
		return NaNOutput
	case t == None && o.RowsMismatch:
		return BadAnswer
	}
	return t
}

func judgeHTTP(status int) Trigger {
	switch {
	case status >= 200 && status < 300:
		return None
	case status == 400 || status == 413 || status == 422:
		return Rejected
	case status == 404 || status == 410:
		return NotServing
	case status == 408 || status == 504:
		return Timeout
	case status == 429:
		return Overload
	case status == 503:
		return Unavailable
	case status >= 500:
		return Upstream5xx
	case status >= 400:
		return Refused
	}
	return Upstream5xx // 1xx, 3xx, or no status: not an OIP answer
}

func judgeGRPC(c codes.Code) Trigger {
	switch c {
	case codes.OK:
		return None
	case codes.InvalidArgument, codes.OutOfRange:
		return Rejected
	case codes.NotFound:
		return NotServing
	case codes.Unavailable, codes.FailedPrecondition:
		return Unavailable
	case codes.DeadlineExceeded:
		return Timeout
	case codes.ResourceExhausted:
		return Overload
	case codes.Canceled:
		// Not the client (ClientGone decides that): the call was cut.
		return ConnectError
	case codes.Unimplemented, codes.PermissionDenied, codes.Unauthenticated:
		return Refused
	}
	return Internal // Internal, Unknown, DataLoss, Aborted, AlreadyExists
}
