package oip

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"google.golang.org/grpc/codes"
)

// Code classifies a protocol error; it maps onto an HTTP status and a gRPC code.
type Code int

// Error codes.
const (
	Internal           Code = iota // 500 / INTERNAL
	InvalidArgument                // 400 / INVALID_ARGUMENT
	NotFound                       // 404 / NOT_FOUND
	TooLarge                       // 413 / RESOURCE_EXHAUSTED
	Unavailable                    // 503 / UNAVAILABLE
	DeadlineExceeded               // 504 / DEADLINE_EXCEEDED
	FailedPrecondition             // 409 / FAILED_PRECONDITION
	ResourceExhausted              // 429 / RESOURCE_EXHAUSTED
	Canceled                       // 499 / CANCELLED (the caller went away)
)

// StatusClientClosedRequest is the (non-standard, nginx) HTTP status for a
// request its caller canceled.
const StatusClientClosedRequest = 499

// Error is a protocol error with a message meant for the caller.
type Error struct {
	Code Code
	Msg  string
	// RetryAfter, when set, marks an overload answer (a full queue): REST
	// answers carry Retry-After (whole seconds, at least 1) with the 503.
	RetryAfter time.Duration
}

// RetryAfterSeconds is the Retry-After value of the error ("" if none).
func (e *Error) RetryAfterSeconds() string {
	if e.RetryAfter <= 0 {
		return ""
	}
	return strconv.FormatInt(int64(max(1, (e.RetryAfter+time.Second-1)/time.Second)), 10)
}

func (e *Error) Error() string { return e.Msg }

// HTTPStatus is the REST status for the error.
func (e *Error) HTTPStatus() int { return e.Code.HTTPStatus() }

// GRPCCode is the gRPC status code for the error.
func (e *Error) GRPCCode() codes.Code { return e.Code.GRPCCode() }

// HTTPStatus maps the code onto an HTTP status.
func (c Code) HTTPStatus() int {
	switch c {
	case InvalidArgument:
		return http.StatusBadRequest
	case NotFound:
		return http.StatusNotFound
	case TooLarge:
		return http.StatusRequestEntityTooLarge
	case Unavailable:
		return http.StatusServiceUnavailable
	case DeadlineExceeded:
		return http.StatusGatewayTimeout
	case FailedPrecondition:
		return http.StatusConflict
	case ResourceExhausted:
		return http.StatusTooManyRequests
	case Canceled:
		return StatusClientClosedRequest
	}
	return http.StatusInternalServerError
}

// GRPCCode maps the code onto a gRPC status code.
func (c Code) GRPCCode() codes.Code {
	switch c {
	case InvalidArgument:
		return codes.InvalidArgument
	case NotFound:
		return codes.NotFound
	case TooLarge, ResourceExhausted:
		return codes.ResourceExhausted
	case Unavailable:
		return codes.Unavailable
	case DeadlineExceeded:
		return codes.DeadlineExceeded
	case FailedPrecondition:
		return codes.FailedPrecondition
	case Canceled:
		return codes.Canceled
	}
	return codes.Internal
}

// Errorf builds an *Error with a formatted message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// CodeOf returns the code of err if it is (or wraps) an *Error; context
// deadline and cancellation errors map to DeadlineExceeded and Canceled;
// anything else is Internal.
func CodeOf(err error) Code {
	var e *Error
	switch {
	case errors.As(err, &e):
		return e.Code
	case errors.Is(err, context.DeadlineExceeded):
		return DeadlineExceeded
	case errors.Is(err, context.Canceled):
		return Canceled
	}
	return Internal
}

// AsError returns err as an *Error: itself if it is (or wraps) one,
// otherwise an *Error with CodeOf(err) and err's message. nil stays nil.
func AsError(err error) *Error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Code: CodeOf(err), Msg: err.Error()}
}

// CodeFromGRPC maps a gRPC status code back onto a Code (RESOURCE_EXHAUSTED
// becomes ResourceExhausted).
func CodeFromGRPC(c codes.Code) Code {
	switch c {
	case codes.InvalidArgument, codes.OutOfRange:
		return InvalidArgument
	case codes.NotFound:
		return NotFound
	case codes.ResourceExhausted:
		return ResourceExhausted
	case codes.Unavailable:
		return Unavailable
	case codes.DeadlineExceeded:
		return DeadlineExceeded
	case codes.FailedPrecondition, codes.AlreadyExists, codes.Aborted:
		return FailedPrecondition
	case codes.Canceled:
		return Canceled
	}
	return Internal
}

// CodeFromHTTPStatus maps an HTTP status back onto a Code.
func CodeFromHTTPStatus(status int) Code {
	switch status {
	case http.StatusBadRequest, http.StatusMethodNotAllowed, http.StatusUnsupportedMediaType:
		return InvalidArgument
	case http.StatusNotFound:
		return NotFound
	case http.StatusRequestEntityTooLarge:
		return TooLarge
	case http.StatusServiceUnavailable, http.StatusBadGateway:
		return Unavailable
	case http.StatusGatewayTimeout, http.StatusRequestTimeout:
		return DeadlineExceeded
	case http.StatusConflict:
		return FailedPrecondition
	case http.StatusTooManyRequests:
		return ResourceExhausted
	case StatusClientClosedRequest:
		return Canceled
	}
	return Internal
}
