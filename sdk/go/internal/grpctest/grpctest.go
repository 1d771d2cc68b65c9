// Package grpctest serves gRPC health services on 127.0.0.1 for tests: a real server, a real
// socket, a port the OS chose.
package grpctest

import (
	"context"
	"net"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Counting is a health server that counts its Check calls.
type Counting struct {
	healthpb.UnimplementedHealthServer
	Calls atomic.Int64
}

// Check counts the call.
func (c *Counting) Check(context.Context, *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	c.Calls.Add(1)
	return &healthpb.HealthCheckResponse{}, nil
}

// Serve serves impl until the test ends and returns its address.
func Serve(t testing.TB, impl healthpb.HealthServer, opts ...grpc.ServerOption) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(opts...)
	healthpb.RegisterHealthServer(s, impl)
	go func() { _ = s.Serve(l) }()
	t.Cleanup(s.Stop)
	return l.Addr().String()
}
