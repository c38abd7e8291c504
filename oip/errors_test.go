package oip

import (
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestRetryAfterCrossesGRPC: an overload error's retry hint becomes a
// google.rpc.RetryInfo detail and comes back from it; Triton's queue-full
// message counts as a hint; other errors carry none.
func TestRetryAfterCrossesGRPC(t *testing.T) {
	full := Errorf(Unavailable, "model %q: queue full", "m")
	full.RetryAfter = 1500 * time.Millisecond
	cases := []struct {
		name string
		err  error
		code codes.Code
		want time.Duration
	}{
		{"queue full", full, codes.Unavailable, 1500 * time.Millisecond},
		{"plain unavailable", Errorf(Unavailable, "loading"), codes.Unavailable, 0},
		{"triton queue full", status.Error(codes.Unavailable, "Exceeds maximum queue size"), codes.Unavailable, time.Second},
		{"triton words on another code", status.Error(codes.Internal, "Exceeds maximum queue size"), codes.Internal, 0},
		{"not an oip error", errors.New("boom"), codes.Internal, 0},
	}
	for _, c := range cases {
		st := status.Convert(GRPCError(c.err))
		if st.Code() != c.code || RetryAfterOf(st) != c.want {
			t.Errorf("%s: code %v retry %v, want %v %v", c.name, st.Code(), RetryAfterOf(st), c.code, c.want)
		}
		var back *Error
		if !errors.As(ErrorFromGRPC(st.Err()), &back) || back.RetryAfter != c.want {
			t.Errorf("%s: back from gRPC %+v, want RetryAfter %v", c.name, back, c.want)
		}
	}
	if got := full.RetryAfterSeconds(); got != "2" {
		t.Errorf("Retry-After of 1.5s = %q, want 2 (whole seconds, rounded up)", got)
	}
}
