package grayscope

import (
	"context"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// metadataCarrier adapts gRPC metadata to OpenTelemetry's TextMapCarrier (keys are lower case in
// gRPC metadata).
type metadataCarrier metadata.MD

func (m metadataCarrier) Get(key string) string {
	if v := metadata.MD(m).Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}

func (m metadataCarrier) Set(key, value string) {
	metadata.MD(m).Set(strings.ToLower(key), value)
}

func (m metadataCarrier) Keys() []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	return keys
}

// serverContext is the handler's context: the incoming metadata's trace context and stage.
func serverContext(ctx context.Context, c config) context.Context {
	md, _ := metadata.FromIncomingContext(ctx)
	return Extract(ctx, metadataCarrier(md), c.defaultStage)
}

// UnaryServerInterceptor puts the call's trace context and stage (from x-release-stage metadata or
// baggage) into the handler's context.
func UnaryServerInterceptor(opts ...Option) grpc.UnaryServerInterceptor {
	c := newConfig(opts)
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		return handler(serverContext(ctx, c), req)
	}
}

// StreamServerInterceptor is UnaryServerInterceptor for streams.
func StreamServerInterceptor(opts ...Option) grpc.StreamServerInterceptor {
	c := newConfig(opts)
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		return handler(srv, &stageStream{ServerStream: ss, ctx: serverContext(ss.Context(), c)})
	}
}

type stageStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *stageStream) Context() context.Context { return s.ctx }

// ForwardGrayMetadata returns ctx with traceparent, baggage and x-release-stage from ctx added to
// its outgoing metadata (metadata already there is kept). Go does not carry a server's incoming
// metadata to the calls it makes; a call made without the client interceptors must go through
// this, or the stage stops here.
func ForwardGrayMetadata(ctx context.Context) context.Context {
	md, _ := metadata.FromOutgoingContext(ctx)
	md = md.Copy()
	Inject(ctx, metadataCarrier(md))
	return metadata.NewOutgoingContext(ctx, md)
}

// UnaryClientInterceptor sends traceparent, baggage and x-release-stage on every call.
func UnaryClientInterceptor() grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		return invoker(ForwardGrayMetadata(ctx), method, req, reply, cc, opts...)
	}
}

// StreamClientInterceptor is UnaryClientInterceptor for streams.
func StreamClientInterceptor() grpc.StreamClientInterceptor {
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		return streamer(ForwardGrayMetadata(ctx), desc, cc, method, opts...)
	}
}
