package grayscope

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

func TestProcessorCopiesTheStageAndNearMissesOnly(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(NewBaggageSpanProcessor()), sdktrace.WithSpanProcessor(rec))
	b, err := baggage.Parse("x-release-stage=canary,x-release-stag=canary,tenant=acme")
	if err != nil {
		t.Fatal(err)
	}
	ctx := baggage.ContextWithBaggage(context.Background(), b)
	_, span := tp.Tracer("t").Start(ctx, "db query")
	span.End()
	got := map[attribute.Key]string{}
	for _, a := range rec.Ended()[0].Attributes() {
		got[a.Key] = a.Value.AsString()
	}
	want := map[attribute.Key]string{"x-release-stage": "canary", "x-release-stag": "canary"}
	if len(got) != len(want) || got["x-release-stage"] != "canary" || got["x-release-stag"] != "canary" {
		t.Fatalf("attributes %v, want %v", got, want)
	}
}
