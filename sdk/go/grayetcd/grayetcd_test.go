package grayetcd

import (
	"context"
	"net"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	grayscope "github.com/grayscope/grayscope/sdk/go"
)

// startEtcd runs a real, embedded single-node etcd on 127.0.0.1 ports the OS chose.
func startEtcd(t *testing.T) *clientv3.Client {
	t.Helper()
	cfg := embed.NewConfig()
	cfg.Dir = t.TempDir()
	cfg.LogLevel = "error"
	peer, client := listen(t), listen(t)
	cfg.ListenPeerUrls = []url.URL{peer}
	cfg.AdvertisePeerUrls = []url.URL{peer}
	cfg.ListenClientUrls = []url.URL{client}
	cfg.AdvertiseClientUrls = []url.URL{client}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(20 * time.Second):
		t.Fatal("etcd did not start")
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{client.Host}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// listen reserves a 127.0.0.1 port chosen by the OS for etcd, which takes URLs, not listeners.
func listen(t *testing.T) url.URL {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return url.URL{Scheme: "http", Host: l.Addr().String()}
}

type counting struct {
	healthpb.UnimplementedHealthServer
	calls atomic.Int64
}

func (c *counting) Check(context.Context, *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	c.calls.Add(1)
	return &healthpb.HealthCheckResponse{}, nil
}

func serve(t *testing.T) (*counting, string) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &counting{}
	s := grpc.NewServer()
	healthpb.RegisterHealthServer(s, c)
	go func() { _ = s.Serve(l) }()
	t.Cleanup(s.Stop)
	return c, l.Addr().String()
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
	cli := startEtcd(t)
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
	if stable.calls.Load() != 2 || canary.calls.Load() != 0 {
		t.Fatalf("before the canary: stable %d, canary %d", stable.calls.Load(), canary.calls.Load())
	}

	canaryCtx, stopCanary := context.WithCancel(ctx)
	if err := Register(canaryCtx, cli, "orders", "orders-2", Instance{Addr: canaryAddr, Stage: "canary"}, 10); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the canary registered after start never got a canary call", func() bool {
		canaryCall(t, watched)
		return canary.calls.Load() > 0
	})

	// The unwatched cache never learns of it: its canary calls keep going to stable.
	before := canary.calls.Load()
	for range 20 {
		canaryCall(t, stale)
	}
	if canary.calls.Load() != before {
		t.Fatal("the unwatched resolver saw the new canary")
	}

	// Deregistration (here: a deleted key) is seen too: canary calls fall back to stable.
	stopCanary()
	if _, err := cli.Delete(ctx, Prefix+"orders/orders-2"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "canary calls did not fall back after the canary left", func() bool {
		s := stable.calls.Load()
		canaryCall(t, watched)
		return stable.calls.Load() > s
	})
}
