package grayscope

import (
	"context"
	"net/http"
	"testing"

	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

const parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

func headers(kv ...string) propagation.HeaderCarrier {
	h := http.Header{}
	for i := 0; i < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return propagation.HeaderCarrier(h)
}

func TestExtractChoosesTheStage(t *testing.T) {
	for _, c := range []struct {
		name    string
		carrier propagation.HeaderCarrier
		def     string
		want    string
	}{
		{"header", headers("X-Release-Stage", "canary"), "", "canary"},
		{"baggage", headers("baggage", "x-release-stage=canary"), "", "canary"},
		{"header wins over baggage", headers("X-Release-Stage", "canary", "baggage", "x-release-stage=stable"), "", "canary"},
		{"default at the entry", headers(), "stable", "stable"},
		{"no default elsewhere", headers(), "", ""},
		{"default never overrides", headers("baggage", "x-release-stage=canary"), "stable", "canary"},
		{"blank header ignored", headers("X-Release-Stage", "  ", "baggage", "x-release-stage=canary"), "", "canary"},
		{"oversized header ignored", headers("X-Release-Stage", string(make([]byte, 200))), "stable", "stable"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := Stage(Extract(context.Background(), c.carrier, c.def)); got != c.want {
				t.Fatalf("stage %q, want %q", got, c.want)
			}
		})
	}
}

func TestExtractKeepsOtherBaggageAndTheTrace(t *testing.T) {
	ctx := Extract(context.Background(), headers("traceparent", parent, "baggage", "tenant=acme", "X-Release-Stage", "canary"), "")
	if got := baggage.FromContext(ctx).Member("tenant").Value(); got != "acme" {
		t.Fatalf("tenant %q", got)
	}
	sc := trace.SpanContextFromContext(ctx)
	if sc.TraceID().String() != "0af7651916cd43dd8448eb211c80319c" || !sc.IsRemote() {
		t.Fatalf("trace context not extracted: %v", sc)
	}
}

// A server span started by an instrumentation before the middleware runs must stay the current
// span (its children hang under it) and must get the stage.
func TestExtractUnderARunningSpanKeepsItAndMarksIt(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	ctx, span := tp.Tracer("t").Start(context.Background(), "server", trace.WithSpanKind(trace.SpanKindServer))
	ctx = Extract(ctx, headers("traceparent", parent, "X-Release-Stage", "canary"), "")
	if trace.SpanContextFromContext(ctx).SpanID() != span.SpanContext().SpanID() {
		t.Fatal("the running span was replaced by the caller's")
	}
	span.End()
	got := rec.Ended()[0].Attributes()
	if len(got) != 1 || got[0].Key != StageKey || got[0].Value.AsString() != "canary" {
		t.Fatalf("server span attributes %v", got)
	}
}

func TestInjectWritesAllThree(t *testing.T) {
	ctx := Extract(context.Background(), headers("traceparent", parent), "canary")
	out := headers()
	Inject(ctx, out)
	for k, want := range map[string]string{"traceparent": parent, "baggage": "x-release-stage=canary", "X-Release-Stage": "canary"} {
		if got := out.Get(k); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
}
