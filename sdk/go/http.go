package grayscope

import (
	"net/http"

	"go.opentelemetry.io/otel/propagation"
)

// Option configures Middleware and the server interceptors.
type Option func(*config)

type config struct {
	defaultStage string
}

// Entry makes this service an entry point of the mesh: requests that arrive with no stage get
// defaultStage. Give it only to services that take requests from outside (gateways, edge
// services); elsewhere a missing stage is a bug upstream that grayscope should see.
func Entry(defaultStage string) Option {
	return func(c *config) { c.defaultStage = defaultStage }
}

// DefaultStage is the stage that opts give untagged requests ("" unless Entry is among them), for
// adapters to other frameworks that call Extract themselves.
func DefaultStage(opts ...Option) string {
	return newConfig(opts).defaultStage
}

func newConfig(opts []Option) config {
	var c config
	for _, o := range opts {
		o(&c)
	}
	return c
}

// Middleware puts the request's trace context and stage (from X-Release-Stage or baggage) into
// its context, for handlers ([Stage]), outgoing calls ([Transport], the gRPC client interceptors)
// and spans ([BaggageSpanProcessor]). Put it inside otelhttp's handler, so that the server span
// exists and gets the stage too:
//
//	otelhttp.NewHandler(grayscope.Middleware(mux, grayscope.Entry("stable")), "gateway")
func Middleware(next http.Handler, opts ...Option) http.Handler {
	c := newConfig(opts)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := Extract(r.Context(), propagation.HeaderCarrier(r.Header), c.defaultStage)
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// Transport is an http.RoundTripper that sends traceparent, baggage and X-Release-Stage from each
// request's context. Wrap it with otelhttp's transport so that traceparent names the client span:
//
//	client := &http.Client{Transport: otelhttp.NewTransport(grayscope.NewTransport(nil))}
type Transport struct {
	// Base makes the request; http.DefaultTransport if nil.
	Base http.RoundTripper
}

// NewTransport returns a Transport over base (http.DefaultTransport if nil).
func NewTransport(base http.RoundTripper) *Transport {
	return &Transport{Base: base}
}

// RoundTrip sends req with the stage headers; req itself is not modified.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	out := req.Clone(req.Context())
	Inject(req.Context(), propagation.HeaderCarrier(out.Header))
	return base.RoundTrip(out)
}
