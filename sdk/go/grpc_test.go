package grayscope

import (
	"context"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/grayscope/grayscope/sdk/go/internal/grpctest"
)

// recorder is a health server that remembers what its handler's context said.
type recorder struct {
	healthpb.UnimplementedHealthServer
	stage string
	md    metadata.MD
	next  healthpb.HealthClient
}

func (r *recorder) Check(ctx context.Context, _ *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	r.stage = Stage(ctx)
	r.md, _ = metadata.FromIncomingContext(ctx)
	if r.next != nil {
		// A hop without interceptors on its client: ForwardGrayMetadata carries the stage on.
		if _, err := r.next.Check(ForwardGrayMetadata(ctx), &healthpb.HealthCheckRequest{}); err != nil {
			return nil, err
		}
	}
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

func (r *recorder) Watch(_ *healthpb.HealthCheckRequest, s grpc.ServerStreamingServer[healthpb.HealthCheckResponse]) error {
	r.stage = Stage(s.Context())
	return s.Send(&healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING})
}

func serve(t *testing.T, impl healthpb.HealthServer, opts ...Option) string {
	t.Helper()
	return grpctest.Serve(t, impl, grpc.UnaryInterceptor(UnaryServerInterceptor(opts...)), grpc.StreamInterceptor(StreamServerInterceptor(opts...)))
}

func dial(t *testing.T, addr string, opts ...grpc.DialOption) healthpb.HealthClient {
	t.Helper()
	opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	cc, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return healthpb.NewHealthClient(cc)
}

func TestInterceptorsCarryTheStageAcrossTwoHops(t *testing.T) {
	last := &recorder{}
	lastAddr := serve(t, last)
	first := &recorder{next: dial(t, lastAddr)}
	firstAddr := serve(t, first, Entry("stable"))
	client := dial(t, firstAddr, grpc.WithUnaryInterceptor(UnaryClientInterceptor()), grpc.WithStreamInterceptor(StreamClientInterceptor()))

	for _, c := range []struct{ sent, want string }{{"", "stable"}, {"canary", "canary"}} {
		ctx := context.Background()
		if c.sent != "" {
			ctx = WithStage(ctx, c.sent)
		}
		if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatal(err)
		}
		if first.stage != c.want || last.stage != c.want {
			t.Fatalf("sent %q: first saw %q, last saw %q", c.sent, first.stage, last.stage)
		}
		if got := last.md.Get(StageKey); len(got) != 1 || got[0] != c.want {
			t.Fatalf("metadata at the last hop: %v", last.md)
		}
		if got := last.md.Get("baggage"); len(got) != 1 || got[0] != "x-release-stage="+c.want {
			t.Fatalf("baggage at the last hop: %v", got)
		}
	}

	// Streams too.
	stream, err := client.Watch(WithStage(context.Background(), "canary"), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	if first.stage != "canary" {
		t.Fatalf("stream handler saw %q", first.stage)
	}
}

// Without the client interceptor or ForwardGrayMetadata, Go drops the stage at the first gRPC hop:
// the bug the interceptors exist for.
func TestWithoutForwardingTheStageStops(t *testing.T) {
	last := &recorder{}
	lastAddr := serve(t, last)
	next := dial(t, lastAddr)
	first := &forgetful{next: next}
	firstAddr := serve(t, first)
	if _, err := dial(t, firstAddr, grpc.WithUnaryInterceptor(UnaryClientInterceptor())).Check(WithStage(context.Background(), "canary"), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	if first.stage != "canary" || last.stage != "" {
		t.Fatalf("first %q, last %q", first.stage, last.stage)
	}
}

type forgetful struct {
	healthpb.UnimplementedHealthServer
	stage string
	next  healthpb.HealthClient
}

func (f *forgetful) Check(ctx context.Context, _ *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	f.stage = Stage(ctx)
	if _, err := f.next.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		return nil, err
	}
	return &healthpb.HealthCheckResponse{}, nil
}
