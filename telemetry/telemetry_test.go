package telemetry

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/trace"
)

func TestTraceparentRoundTrip(t *testing.T) {
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled})
	tp := FormatTraceparent(sc)
	if tp != "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" {
		t.Fatalf("FormatTraceparent = %q", tp)
	}
	if got := TraceIDFromTraceparent(tp); got != tid.String() {
		t.Fatalf("TraceIDFromTraceparent = %q", got)
	}
	for _, bad := range []string{"", "00-abc", "garbage-garbage-garbage-garbage-garbage-garbage-garbage-x"} {
		if got := TraceIDFromTraceparent(bad); got != "" {
			t.Fatalf("TraceIDFromTraceparent(%q) = %q, want empty", bad, got)
		}
	}
}

func TestSamplerKeepsOneInN(t *testing.T) {
	s := NewSampler(10)
	kept := 0
	for range 1000 {
		if s.Keep() {
			kept++
		}
	}
	if kept != 100 {
		t.Fatalf("kept %d of 1000, want 100", kept)
	}
	if !NewSampler(1).Keep() || !(*Sampler)(nil).Keep() {
		t.Fatal("N=1 and nil samplers keep everything")
	}
}

func TestTracerProviderOffByDefault(t *testing.T) {
	tp, shutdown, err := NewTracerProvider(context.Background(), TracingConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(context.Background())
	if Enabled(tp) || Enabled(nil) {
		t.Fatal("no OTLP endpoint must mean a no-op provider")
	}
}
