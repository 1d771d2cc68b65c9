package grayscope

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// BaggageSpanProcessor copies chosen baggage entries onto every span as attributes when the span
// starts, so that the stage is on every span a service records (database calls, internal work),
// not only on the ones a middleware touched.
//
// By default it copies StageKey and any entry whose key is a near miss of it: a misspelt key then
// reaches grayscope and is reported as key_mismatch at the hop that misspelt it, instead of as a
// lost stage.
type BaggageSpanProcessor struct {
	keys *StageKeys
}

var _ sdktrace.SpanProcessor = (*BaggageSpanProcessor)(nil)

// NewBaggageSpanProcessor copies these keys (StageKey if none) and near misses of them.
func NewBaggageSpanProcessor(keys ...string) *BaggageSpanProcessor {
	if len(keys) == 0 {
		keys = []string{StageKey}
	}
	return &BaggageSpanProcessor{keys: NewStageKeys(keys...)}
}

// OnStart copies the wanted baggage entries of the span's parent context.
func (p *BaggageSpanProcessor) OnStart(ctx context.Context, s sdktrace.ReadWriteSpan) {
	for _, m := range baggage.FromContext(ctx).Members() {
		if p.keys.Classify(m.Key()) != Unrelated {
			s.SetAttributes(attribute.String(m.Key(), m.Value()))
		}
	}
}

// OnEnd does nothing.
func (p *BaggageSpanProcessor) OnEnd(sdktrace.ReadOnlySpan) {}

// Shutdown does nothing.
func (p *BaggageSpanProcessor) Shutdown(context.Context) error { return nil }

// ForceFlush does nothing.
func (p *BaggageSpanProcessor) ForceFlush(context.Context) error { return nil }
