package fallback

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"

	"google.golang.org/grpc/codes"

	"github.com/switchyard-dev/switchyard/oip"
)

// Trigger is why a request fell back (or None when the answer is good). Its
// String is the metrics label and the x-switchyard-fallback-reason value.
type Trigger uint8

// Triggers.
const (
	None         Trigger = iota // the answer is good
	Timeout                     // the route's latency budget ran out
	ConnectError                // the upstream could not be reached
	Upstream5xx                 // HTTP 5xx other than 503
	Unavailable                 // HTTP 503 / gRPC UNAVAILABLE
	Internal                    // gRPC INTERNAL (and other server-side gRPC failures)
	NaNOutput                   // NaN or ±Inf in a floating-point output
	BreakerOpen                 // the version's circuit breaker refused the call
	Overload                    // the version's concurrency limit was reached
	numTriggers
)

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
}

// String is the trigger's label ("timeout", "nan_output", ...).
func (t Trigger) String() string {
	if t < numTriggers {
		return triggerNames[t]
	}
	return "unknown"
}

// Triggers lists every trigger except None, for pre-creating metric series.
func Triggers() []Trigger {
	out := make([]Trigger, 0, numTriggers-1)
	for t := Timeout; t < numTriggers; t++ {
		out = append(out, t)
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

// CountsForBreaker reports whether the trigger is a failure of the upstream
// version that its circuit breaker should count. BreakerOpen and Overload
// never reached the upstream, so they do not.
func (t Trigger) CountsForBreaker() bool {
	switch t {
	case None, BreakerOpen, Overload:
		return false
	}
	return true
}

// ClassifyHTTP classifies a REST upstream answer by status code. 4xx is the
// client's problem, not the model's: None (the proxy passes it through).
func ClassifyHTTP(status int) Trigger {
	switch {
	case status == http.StatusServiceUnavailable:
		return Unavailable
	case status == http.StatusGatewayTimeout:
		return Timeout
	case status >= 500:
		return Upstream5xx
	}
	return None
}

// ClassifyGRPC classifies a gRPC upstream status code. Codes that blame the
// caller (InvalidArgument, NotFound, ...) are None: they pass through.
func ClassifyGRPC(c codes.Code) Trigger {
	switch c {
	case codes.OK:
		return None
	case codes.Unavailable:
		return Unavailable
	case codes.DeadlineExceeded:
		return Timeout
	case codes.Internal, codes.Unknown, codes.DataLoss, codes.Unimplemented:
		return Internal
	case codes.ResourceExhausted:
		return Overload
	}
	return None
}

// ClassifyError classifies a transport error from the upstream call (nil:
// None). Deadlines are Timeout; an *oip.Error maps by its code; the caller
// going away (context.Canceled) is None: there is nobody to answer, and the
// upstream is not to blame. Anything else (dial failures, refused and reset
// connections, a broken body) is ConnectError: the call produced no answer.
func ClassifyError(err error) Trigger {
	if err == nil || errors.Is(err, context.Canceled) {
		return None
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return Timeout
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return Timeout
	}
	var oe *oip.Error
	if errors.As(err, &oe) {
		switch oe.Code {
		case oip.Unavailable:
			return Unavailable
		case oip.DeadlineExceeded:
			return Timeout
		case oip.ResourceExhausted:
			return Overload
		case oip.Internal:
			return Internal
		}
		return None
	}
	return ConnectError
}

// ClassifyOutputs reports NaNOutput when any floating-point output tensor
// holds NaN or ±Inf, else None.
func ClassifyOutputs(outputs []oip.Tensor) Trigger {
	for i := range outputs {
		if outputs[i].HasNaNOrInf() {
			return NaNOutput
		}
	}
	return None
}

// Outcome is everything the proxy knows about one upstream attempt.
type Outcome struct {
	// Err is the transport error, if any (for gRPC, the call's error).
	Err error
	// GRPC says the call was gRPC: GRPCCode is meaningful (status.Code(Err)).
	GRPC     bool
	GRPCCode codes.Code
	// HTTPStatus is the REST status, 0 when no response arrived.
	HTTPStatus int
	// Response is the decoded answer, when there is one.
	Response *oip.InferResponse
}

// Classify turns one upstream attempt into a trigger, or None when the
// answer may be returned as it is (a good answer, or a 4xx / caller-side
// gRPC code that passes through unchanged). Order: the gRPC code or HTTP
// status when present, else the transport error, then NaN/Inf outputs.
func Classify(o Outcome) Trigger {
	switch {
	case o.GRPC && o.GRPCCode != codes.OK:
		return ClassifyGRPC(o.GRPCCode)
	case !o.GRPC && o.HTTPStatus >= 400:
		return ClassifyHTTP(o.HTTPStatus)
	case o.Err != nil:
		return ClassifyError(o.Err)
	case o.Response != nil:
		return ClassifyOutputs(o.Response.Outputs)
	}
	return None
}
