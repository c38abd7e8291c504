// Package telemetry sets up tracing and logging the same way in every
// Switchyard process: an OpenTelemetry tracer provider whose OTLP exporter is
// off unless an endpoint is configured, W3C trace-context propagation, and a
// JSON slog logger with sampling of routine (success) lines.
package telemetry

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// TracingConfig configures NewTracerProvider.
type TracingConfig struct {
	// ServiceName names the process in traces (e.g. "switchyard-proxy").
	ServiceName string
	// OTLPEndpoint is the host:port of an OTLP/gRPC collector. Empty turns
	// exporting off: NewTracerProvider returns a no-op provider, and
	// callers only pass incoming trace context through.
	OTLPEndpoint string
	// Insecure uses plaintext to the collector.
	Insecure bool
	// SampleRatio of root traces recorded (0 means 1: all). Child spans
	// follow their parent's decision.
	SampleRatio float64
}

// NewTracerProvider returns the tracer provider for cfg and a shutdown
// function that flushes pending spans. With no OTLP endpoint it is a no-op
// provider (Enabled reports false).
func NewTracerProvider(ctx context.Context, cfg TracingConfig) (trace.TracerProvider, func(context.Context) error, error) {
	if cfg.OTLPEndpoint == "" {
		return noop.NewTracerProvider(), func(context.Context) error { return nil }, nil
	}
	opts := []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(cfg.OTLPEndpoint)}
	if cfg.Insecure {
		opts = append(opts, otlptracegrpc.WithInsecure())
	}
	exp, err := otlptracegrpc.New(ctx, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("otlp exporter %s: %w", cfg.OTLPEndpoint, err)
	}
	ratio := cfg.SampleRatio
	if ratio <= 0 || ratio > 1 {
		ratio = 1
	}
	name := cfg.ServiceName
	if name == "" {
		name = "switchyard"
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio))),
		sdktrace.WithResource(resource.NewWithAttributes(semconv.SchemaURL, semconv.ServiceName(name))),
	)
	return tp, tp.Shutdown, nil
}

// Enabled reports whether tp records spans (false for nil and no-op
// providers).
func Enabled(tp trace.TracerProvider) bool {
	if tp == nil {
		return false
	}
	_, isNoop := tp.(noop.TracerProvider)
	return !isNoop
}

// Propagator is W3C trace context plus baggage.
func Propagator() propagation.TextMapPropagator {
	return propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
}

// TraceIDFromTraceparent returns the trace id of a W3C traceparent header
// value ("00-<32 hex>-<16 hex>-<2 hex>"), or "" when it is not one. It does
// not allocate.
func TraceIDFromTraceparent(tp string) string {
	if len(tp) < 55 || tp[2] != '-' || tp[35] != '-' {
		return ""
	}
	return tp[3:35]
}

// FormatTraceparent writes sc as a W3C traceparent value.
func FormatTraceparent(sc trace.SpanContext) string {
	tid, sid := sc.TraceID(), sc.SpanID()
	var b [55]byte
	copy(b[:], "00-")
	hexEncode(b[3:35], tid[:])
	b[35] = '-'
	hexEncode(b[36:52], sid[:])
	b[52] = '-'
	flags := byte(sc.TraceFlags())
	const digits = "0123456789abcdef"
	b[53], b[54] = digits[flags>>4], digits[flags&0xf]
	return string(b[:])
}

func hexEncode(dst, src []byte) {
	const digits = "0123456789abcdef"
	for i, c := range src {
		dst[2*i], dst[2*i+1] = digits[c>>4], digits[c&0xf]
	}
}

// LogConfig configures NewLogger.
type LogConfig struct {
	Level slog.Level
	// AddSource adds file:line to records.
	AddSource bool
}

// NewLogger returns a JSON slog logger writing to w.
func NewLogger(w io.Writer, cfg LogConfig) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: cfg.Level, AddSource: cfg.AddSource}))
}

// Sampler decides which routine log lines are written: one in every N.
// Errors should always be logged; ask the sampler only for successes. The
// zero value and N <= 1 keep every line. Safe for concurrent use.
type Sampler struct {
	every uint64
	n     atomic.Uint64
}

// NewSampler keeps one line in every n.
func NewSampler(n int) *Sampler {
	if n < 1 {
		n = 1
	}
	return &Sampler{every: uint64(n)}
}

// Keep reports whether this line is kept.
func (s *Sampler) Keep() bool {
	if s == nil || s.every <= 1 {
		return true
	}
	return s.n.Add(1)%s.every == 1
}
