package proxy

import (
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/inference-backend/backendtest"
)

// TestTracing: a span per request and per upstream attempt, continuing the
// caller's W3C trace.
func TestTracing(t *testing.T) {
	be := backendtest.Start(t, backendtest.Options{})
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	p := startProxy(t, Config{Models: []api.Model{demoModel(be, map[string]int{"v1": 100})}, TracerProvider: tp})
	const parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	c := newHTTPClient()
	for _, v := range []string{"v1", "v3"} { // HTTP and gRPC upstreams
		exp.Reset()
		a := post(t, c, inferURL(p, "recommender"), inferBody(1), map[string]string{"traceparent": parent, "x-switchyard-variant": v})
		if a.status != 200 {
			t.Fatalf("%s: %d %s", v, a.status, a.body)
		}
		spans := exp.GetSpans()
		var server, client *tracetest.SpanStub
		for i := range spans {
			switch spans[i].SpanKind {
			case trace.SpanKindServer:
				server = &spans[i]
			case trace.SpanKindClient:
				if spans[i].Name == "upstream recommender/"+v {
					client = &spans[i]
				}
			}
		}
		if server == nil || client == nil {
			t.Fatalf("%s: want a server span and an upstream attempt span, got %d spans", v, len(spans))
		}
		if server.SpanContext.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" || server.Parent.SpanID().String() != "00f067aa0ba902b7" {
			t.Fatalf("%s: request span does not continue the caller's trace: %v parent %v", v, server.SpanContext.TraceID(), server.Parent.SpanID())
		}
		if client.Parent.SpanID() != server.SpanContext.SpanID() {
			t.Fatalf("%s: attempt span is not a child of the request span", v)
		}
	}
}
