package grayscope

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	"github.com/grayscope/grayscope/sdk/go/internal/grpctest"
)

// instance is one serving endpoint, labelled with its stage.
type instance struct {
	*grpctest.Counting
	addr resolver.Address
}

func start(t *testing.T, stage string) instance {
	c := &grpctest.Counting{}
	return instance{c, WithEndpointStage(resolver.Address{Addr: serve(t, c)}, stage)}
}

func calls(is ...instance) (n []int64) {
	for _, i := range is {
		n = append(n, i.Calls.Load())
	}
	return n
}

func TestTheBalancerRoutesByStageAndFallsBackOnlyWhenNoneIsListed(t *testing.T) {
	a, b, c := start(t, StableStage), start(t, StableStage), start(t, "canary")
	r := manual.NewBuilderWithScheme("stagetest")
	r.InitialState(resolver.State{Addresses: []resolver.Address{a.addr, b.addr, c.addr}})
	cc, err := grpc.NewClient(r.Scheme()+":///orders", grpc.WithResolvers(r),
		grpc.WithDefaultServiceConfig(RoutingServiceConfig), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := healthpb.NewHealthClient(cc)
	call := func(stage string, timeout time.Duration) error {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		if stage != "" {
			ctx = WithStage(ctx, stage)
		}
		_, err := client.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
		return err
	}
	must := func(stage string, n int) {
		t.Helper()
		for range n {
			if err := call(stage, 5*time.Second); err != nil {
				t.Fatalf("stage %q: %v", stage, err)
			}
		}
	}

	// Wait until all three are connected, so that what follows does not depend on timing.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		must("canary", 1)
		must(StableStage, 2)
		if a.Calls.Load() > 0 && b.Calls.Load() > 0 {
			break
		}
	}
	base := calls(a, b, c)

	must("canary", 20)
	must(StableStage, 20)
	must("", 10)     // no stage: stable
	must("beta", 10) // no beta endpoint listed: stable
	got := calls(a, b, c)
	if got[2]-base[2] != 20 {
		t.Fatalf("canary endpoint served %d of 20 canary calls", got[2]-base[2])
	}
	if got[0]-base[0]+got[1]-base[1] != 40 || got[0] == base[0] || got[1] == base[1] {
		t.Fatalf("stable endpoints served %v (from %v), want 40 spread over both", got[:2], base[:2])
	}

	// The canary is deregistered: canary calls fall back to stable.
	r.UpdateState(resolver.State{Addresses: []resolver.Address{a.addr, b.addr}})
	time.Sleep(100 * time.Millisecond)
	base = calls(a, b, c)
	must("canary", 10)
	got = calls(a, b, c)
	if got[2] != base[2] || got[0]+got[1]-base[0]-base[1] != 10 {
		t.Fatalf("after deregistration: %v from %v", got, base)
	}

	// A canary is registered but unreachable: its calls wait and fail, never leak to stable.
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()
	r.UpdateState(resolver.State{Addresses: []resolver.Address{a.addr, b.addr, WithEndpointStage(resolver.Address{Addr: deadAddr}, "canary")}})
	time.Sleep(100 * time.Millisecond)
	base = calls(a, b, c)
	if err := call("canary", 300*time.Millisecond); err == nil {
		t.Fatal("a canary call succeeded with no reachable canary endpoint")
	}
	if got := calls(a, b, c); got[0] != base[0] || got[1] != base[1] {
		t.Fatalf("a canary call leaked to stable: %v from %v", got, base)
	}
	must(StableStage, 4)
}
