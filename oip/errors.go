package oip

import (
	"errors"
	"fmt"
	"net/http"

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
)

// Error is a protocol error with a message meant for the caller.
type Error struct {
	Code Code
	Msg  string
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
	}
	return codes.Internal
}

// Errorf builds an *Error with a formatted message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// CodeOf returns the code of err if it is (or wraps) an *Error, else Internal.
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return Internal
}
