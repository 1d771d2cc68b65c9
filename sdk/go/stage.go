package grayscope

import (
	"context"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// StageKey is the baggage key, gRPC metadata key and (lower-cased) HTTP header that carry the
// stage.
const StageKey = "x-release-stage"

// StageHeader is StageKey as HTTP writes it.
const StageHeader = "X-Release-Stage"

// maxStageLen bounds a stage taken from a header; longer values are ignored as garbage.
const maxStageLen = 128

// propagator writes and reads traceparent and baggage, whatever the global propagator is: a
// service whose global propagator is TraceContext only would otherwise drop the stage.
var propagator = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})

// Stage is the request's stage, from the baggage of ctx; "" when it has none.
func Stage(ctx context.Context) string {
	return baggage.FromContext(ctx).Member(StageKey).Value()
}

// WithStage returns ctx with the stage set in its baggage, other baggage entries kept. A stage
// that baggage cannot carry leaves ctx as it was.
func WithStage(ctx context.Context, stage string) context.Context {
	m, err := baggage.NewMemberRaw(StageKey, stage)
	if err != nil {
		return ctx
	}
	b, err := baggage.FromContext(ctx).SetMember(m)
	if err != nil {
		return ctx
	}
	return baggage.ContextWithBaggage(ctx, b)
}

// Extract reads traceparent, baggage and the stage header or metadata from carrier into ctx.
//
// The header wins over the baggage entry when both are set and differ: routers and proxies match
// on the header, so that is the stage the request was routed by. defaultStage ("" for none) is
// applied only when neither is present; give one only at entry services, where untagged requests
// come from outside. A default anywhere else would hide a hop that dropped the stage, which is
// the bug grayscope reports as "appeared".
//
// When ctx already holds a span (an instrumentation such as otelhttp or otelgrpc started the
// server span first), only the baggage is read: the trace context is that span's, and replacing it
// with the caller's would parent the handler's spans to the wrong span.
func Extract(ctx context.Context, carrier propagation.TextMapCarrier, defaultStage string) context.Context {
	if trace.SpanContextFromContext(ctx).IsValid() {
		ctx = propagation.Baggage{}.Extract(ctx, carrier)
	} else {
		ctx = propagator.Extract(ctx, carrier)
	}
	header := strings.TrimSpace(carrier.Get(StageKey))
	if len(header) > maxStageLen {
		header = ""
	}
	inBaggage := Stage(ctx)
	switch {
	case header != "" && header != inBaggage:
		ctx = WithStage(ctx, header)
	case header == "" && inBaggage == "" && defaultStage != "":
		ctx = WithStage(ctx, defaultStage)
	}
	markSpan(ctx)
	return ctx
}

// Inject writes traceparent, baggage and the stage from ctx into carrier.
func Inject(ctx context.Context, carrier propagation.TextMapCarrier) {
	propagator.Inject(ctx, carrier)
	if s := Stage(ctx); s != "" {
		carrier.Set(StageKey, s)
	}
}

// markSpan puts the stage on the span already running in ctx: an instrumentation that starts the
// server span before the stage is known (otelhttp, otelgrpc with a TraceContext-only propagator)
// would otherwise record it without one.
func markSpan(ctx context.Context) {
	span := trace.SpanFromContext(ctx)
	if s := Stage(ctx); s != "" && span.IsRecording() {
		span.SetAttributes(attribute.String(StageKey, s))
	}
}
