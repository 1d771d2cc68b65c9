package grayetcd

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	grayscope "github.com/grayscope/grayscope/sdk/go"
	"github.com/grayscope/grayscope/sdk/go/internal/etcdtest"
	"github.com/grayscope/grayscope/sdk/go/internal/grpctest"
)

func serve(t *testing.T) (*grpctest.Counting, string) {
	c := &grpctest.Counting{}
	return c, grpctest.Serve(t, c)
}

func client(t *testing.T, b *Builder) healthpb.HealthClient {
	cc, err := grpc.NewClient(Scheme+":///orders", grpc.WithResolvers(b),
		grpc.WithDefaultServiceConfig(grayscope.RoutingServiceConfig),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return healthpb.NewHealthClient(cc)
}

func canaryCall(t *testing.T, c healthpb.HealthClient) {
	t.Helper()
	ctx, cancel := context.WithTimeout(grayscope.WithStage(context.Background(), "canary"), 5*time.Second)
	defer cancel()
	if _, err := c.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true)); err != nil {
		t.Fatal(err)
	}
}

// eventually retries cond for up to 10 s: a watch event takes a moment to reach the balancer.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal(what)
}

func TestTheWatchRoutesCanaryCallsToACanaryRegisteredLater(t *testing.T) {
	cli := etcdtest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stable, stableAddr := serve(t)
	canary, canaryAddr := serve(t)
	if err := Register(ctx, cli, "orders", "orders-1", Instance{Addr: stableAddr, Stage: "stable"}, 10); err != nil {
		t.Fatal(err)
	}
	watched := client(t, NewBuilder(cli))
	stale := client(t, NewBuilder(cli, WithoutWatch()))
	canaryCall(t, watched) // no canary yet: stable serves it
	canaryCall(t, stale)
	if stable.Calls.Load() != 2 || canary.Calls.Load() != 0 {
		t.Fatalf("before the canary: stable %d, canary %d", stable.Calls.Load(), canary.Calls.Load())
	}

	canaryCtx, stopCanary := context.WithCancel(ctx)
	if err := Register(canaryCtx, cli, "orders", "orders-2", Instance{Addr: canaryAddr, Stage: "canary"}, 10); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the canary registered after start never got a canary call", func() bool {
		canaryCall(t, watched)
		return canary.Calls.Load() > 0
	})

	// The unwatched cache never learns of it: its canary calls keep going to stable.
	before := canary.Calls.Load()
	for range 20 {
		canaryCall(t, stale)
	}
	if canary.Calls.Load() != before {
		t.Fatal("the unwatched resolver saw the new canary")
	}

	// Deregistration (here: a deleted key) is seen too: canary calls fall back to stable.
	stopCanary()
	if _, err := cli.Delete(ctx, Prefix+"orders/orders-2"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "canary calls did not fall back after the canary left", func() bool {
		s := stable.Calls.Load()
		canaryCall(t, watched)
		return stable.Calls.Load() > s
	})
}
