package fallback

import (
	"testing"

	"google.golang.org/grpc/codes"
)

func TestTriggerStringRoundTrip(t *testing.T) {
	want := []string{"timeout", "connect_error", "upstream_5xx", "unavailable", "internal", "nan_output", "breaker_open", "overload", "not_serving", "bad_answer", "refused"}
	got := Triggers()
	if len(got) != len(want) {
		t.Fatalf("Triggers() = %v", got)
	}
	for i, tr := range got {
		if tr.String() != want[i] {
			t.Errorf("trigger %d String = %q, want %q", i, tr, want[i])
		}
		back, ok := ParseTrigger(want[i])
		if !ok || back != tr {
			t.Errorf("ParseTrigger(%q) = %v, %v", want[i], back, ok)
		}
	}
	for _, s := range []string{"none", "rejected", "cancelled"} {
		if tr, ok := ParseTrigger(s); !ok || tr.String() != s {
			t.Errorf("ParseTrigger(%q) = %v, %v", s, tr, ok)
		}
	}
	if _, ok := ParseTrigger("bogus"); ok {
		t.Error("ParseTrigger accepted bogus")
	}
}

// TestJudge is the table of the one rule for whose fault an upstream
// attempt's outcome is.
func TestJudge(t *testing.T) {
	cases := []struct {
		name string
		o    Outcome
		want Trigger
	}{
		{"http 200", Outcome{HTTPStatus: 200}, None},
		{"grpc ok", Outcome{GRPC: true}, None},
		// The request's fault.
		{"http 400", Outcome{HTTPStatus: 400}, Rejected},
		{"http 413", Outcome{HTTPStatus: 413}, Rejected},
		{"http 422", Outcome{HTTPStatus: 422}, Rejected},
		{"grpc invalid argument", Outcome{GRPC: true, GRPCCode: codes.InvalidArgument}, Rejected},
		{"grpc out of range", Outcome{GRPC: true, GRPCCode: codes.OutOfRange}, Rejected},
		// The version does not serve its model: its failure, not the client's.
		{"http 404 unloaded", Outcome{HTTPStatus: 404}, NotServing},
		{"http 410", Outcome{HTTPStatus: 410}, NotServing},
		{"grpc not found", Outcome{GRPC: true, GRPCCode: codes.NotFound}, NotServing},
		{"http 503 loading", Outcome{HTTPStatus: 503}, Unavailable},
		{"grpc unavailable", Outcome{GRPC: true, GRPCCode: codes.Unavailable}, Unavailable},
		{"grpc failed precondition", Outcome{GRPC: true, GRPCCode: codes.FailedPrecondition}, Unavailable},
		{"http 500", Outcome{HTTPStatus: 500}, Upstream5xx},
		{"http 502", Outcome{HTTPStatus: 502}, Upstream5xx},
		{"http 504", Outcome{HTTPStatus: 504}, Timeout},
		{"http 408", Outcome{HTTPStatus: 408}, Timeout},
		{"grpc deadline", Outcome{GRPC: true, GRPCCode: codes.DeadlineExceeded}, Timeout},
		{"grpc internal", Outcome{GRPC: true, GRPCCode: codes.Internal}, Internal},
		{"grpc unknown", Outcome{GRPC: true, GRPCCode: codes.Unknown}, Internal},
		{"grpc data loss", Outcome{GRPC: true, GRPCCode: codes.DataLoss}, Internal},
		{"http 401", Outcome{HTTPStatus: 401}, Refused},
		{"http 403", Outcome{HTTPStatus: 403}, Refused},
		{"http 405", Outcome{HTTPStatus: 405}, Refused},
		{"grpc unimplemented", Outcome{GRPC: true, GRPCCode: codes.Unimplemented}, Refused},
		{"grpc permission denied", Outcome{GRPC: true, GRPCCode: codes.PermissionDenied}, Refused},
		{"http 302", Outcome{HTTPStatus: 302}, Upstream5xx},
		{"grpc cancelled by the server side", Outcome{GRPC: true, GRPCCode: codes.Canceled}, ConnectError},
		// Transport.
		{"connect", Outcome{Transport: TransportConnect}, ConnectError},
		{"reset", Outcome{Transport: TransportReset}, ConnectError},
		{"timeout", Outcome{Transport: TransportTimeout}, Timeout},
		{"malformed answer", Outcome{Transport: TransportProtocol}, Upstream5xx},
		// The answer's content.
		{"nan in a 200", Outcome{HTTPStatus: 200, NaN: true}, NaNOutput},
		{"nan in a grpc answer", Outcome{GRPC: true, NaN: true}, NaNOutput},
		{"500 naming nan", Outcome{HTTPStatus: 500, NaN: true}, NaNOutput},
		{"nan does not hide a 503", Outcome{HTTPStatus: 503, NaN: true}, Unavailable},
		{"rows differ", Outcome{HTTPStatus: 200, RowsMismatch: true}, BadAnswer},
		{"nan before rows", Outcome{HTTPStatus: 200, NaN: true, RowsMismatch: true}, NaNOutput},
		// Overload.
		{"http 429", Outcome{HTTPStatus: 429}, Overload},
		{"grpc resource exhausted", Outcome{GRPC: true, GRPCCode: codes.ResourceExhausted}, Overload},
		{"http 503 queue full (retry-after)", Outcome{HTTPStatus: 503, RetryAfter: true}, Overload},
		{"grpc unavailable queue full (retry info)", Outcome{GRPC: true, GRPCCode: codes.Unavailable, RetryAfter: true}, Overload},
		{"queue full beats nan", Outcome{HTTPStatus: 503, RetryAfter: true, NaN: true}, Overload},
		{"retry-after on a 500 is still a 5xx", Outcome{HTTPStatus: 500, RetryAfter: true}, Upstream5xx},
		{"retry-after on a 429", Outcome{HTTPStatus: 429, RetryAfter: true}, Overload},
		{"failed precondition with retry info is unavailable", Outcome{GRPC: true, GRPCCode: codes.FailedPrecondition, RetryAfter: true}, Unavailable},
		{"client gone beats queue full", Outcome{ClientGone: true, HTTPStatus: 503, RetryAfter: true}, Cancelled},
		{"grpc ok ignores retry info", Outcome{GRPC: true, RetryAfter: true}, None},
		// The client went away: decides before everything else.
		{"client gone, grpc cancelled", Outcome{ClientGone: true, GRPC: true, GRPCCode: codes.Canceled}, Cancelled},
		{"client gone, transport cut", Outcome{ClientGone: true, Transport: TransportTimeout}, Cancelled},
		{"client gone after a 200", Outcome{ClientGone: true, HTTPStatus: 200}, Cancelled},
		{"cut by the drain: not the version's timeout", Outcome{Cut: true, Transport: TransportTimeout}, ShuttingDown},
		{"cut by the drain, gRPC connection closed", Outcome{Cut: true, GRPC: true, GRPCCode: codes.Unavailable}, ShuttingDown},
		{"client gone beats the cut", Outcome{ClientGone: true, Cut: true}, Cancelled},
	}
	for _, c := range cases {
		if got := Judge(c.o); got != c.want {
			t.Errorf("%s: Judge(%+v) = %v, want %v", c.name, c.o, got, c.want)
		}
	}
}

// TestTriggerConsequences: what each fault means for the breaker, the
// endpoint, retries and the chain.
func TestTriggerConsequences(t *testing.T) {
	type want struct {
		fault                     Fault
		breaker, eject, retry     bool
		fallsPrimary, fallsBackup bool
		result                    Result
	}
	cases := map[Trigger]want{
		None:         {FaultNone, false, false, false, false, false, Succeeded},
		Rejected:     {FaultRequest, false, false, false, false, true, Succeeded},
		Cancelled:    {FaultClient, false, false, false, false, false, Neutral},
		ShuttingDown: {FaultClient, false, false, false, false, false, Neutral},
		Overload:     {FaultOverload, false, false, false, true, true, Neutral},
		BreakerOpen:  {FaultVersion, false, false, false, true, true, Neutral},
		Timeout:      {FaultVersion, true, true, false, true, true, Failed},
		ConnectError: {FaultVersion, true, true, true, true, true, Failed},
		Unavailable:  {FaultVersion, true, true, true, true, true, Failed},
		NotServing:   {FaultVersion, true, true, true, true, true, Failed},
		Upstream5xx:  {FaultVersion, true, true, false, true, true, Failed},
		Internal:     {FaultVersion, true, true, false, true, true, Failed},
		Refused:      {FaultVersion, true, true, false, true, true, Failed},
		NaNOutput:    {FaultVersion, true, false, false, true, true, Failed},
		BadAnswer:    {FaultVersion, true, false, false, true, true, Failed},
	}
	if len(cases) != int(numTriggers) {
		t.Fatalf("table covers %d of %d triggers", len(cases), numTriggers)
	}
	for tr, w := range cases {
		got := want{tr.Fault(), tr.CountsForBreaker(), tr.EjectsEndpoint(), tr.Retryable(), tr.Falls(Primary), tr.Falls(Backup), ResultOf(tr)}
		if got != w {
			t.Errorf("%v: got %+v, want %+v", tr, got, w)
		}
	}
}
