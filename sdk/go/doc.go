// Package grayscope carries the release stage through a Go service so that grayscope can check
// every hop: read it at the edge, keep it in the request's OpenTelemetry baggage, forward it on
// every outgoing HTTP and gRPC call, and copy it onto every span.
//
// The stage travels three ways at once, because different hops read different ones: the
// X-Release-Stage header (gRPC metadata x-release-stage), which routers and proxies match on; the
// W3C baggage entry x-release-stage, which instrumented services in every language pass on; and,
// inside a process, the baggage of the request's context.Context. A stage kept in a private
// context.WithValue key is invisible to OpenTelemetry, so spans carry no stage and grayscope can
// verify nothing; keep it in baggage and read it with [Stage].
//
//	piece                               where it goes           what it does
//	Middleware                          net/http server         extracts traceparent, baggage and X-Release-Stage into the request's context; applies a default only at entry services
//	Transport                           net/http client         injects traceparent, baggage and X-Release-Stage from the request's context
//	UnaryServerInterceptor, Stream...   gRPC server             the same extraction from incoming metadata
//	UnaryClientInterceptor, Stream...   gRPC client             the same injection into outgoing metadata
//	ForwardGrayMetadata                 any other gRPC call     the injection as one call, for code without interceptors
//	BaggageSpanProcessor                the tracer provider     copies the stage (and near misses of its key) from baggage onto every span
//
// Go's context does not carry a server's incoming gRPC metadata to its outgoing calls: without the
// client interceptor (or ForwardGrayMetadata), the stage stops at the first gRPC hop. Work handed
// to a goroutine must be given the request's context, or it runs with no stage and no trace.
package grayscope
