// Package mesh is a small Go service mesh built with grayscope's Go library, for trying grayscope
// and for its end-to-end tests: a gateway and users over HTTP, orders (a stable and a canary
// instance, found through etcd) and payments over gRPC, every service exporting its spans over
// OTLP. Each Fault switches on one real propagation or routing bug.
//
//	client --HTTP--> gateway --HTTP--> users --gRPC (etcd, by stage)--> orders --gRPC--> payments
package mesh

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	grayscope "github.com/grayscope/grayscope/sdk/go"
	"github.com/grayscope/grayscope/sdk/go/grayetcd"
)

// Fault is one bug the mesh can run with.
type Fault string

const (
	// None: every hop carries the stage and routes by it.
	None Fault = ""
	// MissingForward: orders calls payments without the client interceptor or
	// ForwardGrayMetadata, so the stage is not in the outgoing metadata.
	MissingForward Fault = "missing-forward"
	// Overwrite: users sets the stage to stable on its call to orders.
	Overwrite Fault = "overwrite"
	// MisspeltKey: users sends its stage to orders under the baggage key x-release-stag.
	MisspeltKey Fault = "misspelt-key"
	// IgnoreStage: users balances its calls to orders round-robin, whatever their stage.
	IgnoreStage Fault = "ignore-stage"
	// StaleCache: users lists orders' instances once, without a watch, before the canary instance
	// registers: the canary never gets traffic.
	StaleCache Fault = "stale-cache"
	// Goroutine: orders calls payments from a goroutine given a fresh context instead of the
	// request's.
	Goroutine Fault = "goroutine"
)

// Faults lists every fault.
var Faults = []Fault{MissingForward, Overwrite, MisspeltKey, IgnoreStage, StaleCache, Goroutine}

// Config is how to run the mesh.
type Config struct {
	// OTLP is the collector's OTLP/gRPC address (host:port).
	OTLP string
	// Etcd is the registry orders' instances register in.
	Etcd *clientv3.Client
	// Fault is the bug to run with.
	Fault Fault
	// Gateway is where the gateway listens; 127.0.0.1:0 if empty.
	Gateway string
}

// Mesh is a running mesh.
type Mesh struct {
	// GatewayURL is where requests enter: GET {GatewayURL}/checkout.
	GatewayURL string
	stops      []func(context.Context) error
}

// Shutdown stops every service and flushes their spans.
func (m *Mesh) Shutdown(ctx context.Context) error {
	var errs []error
	for i := len(m.stops) - 1; i >= 0; i-- {
		errs = append(errs, m.stops[i](ctx))
	}
	return errors.Join(errs...)
}

// The global propagator in many Go services is TraceContext only; the mesh uses that for the
// OpenTelemetry instrumentations, so the stage travels only where grayscope's library carries it,
// and a hop that forgets it loses it, as in real services.
var traceContextOnly = propagation.TraceContext{}

// Start runs the mesh; Shutdown stops it.
func Start(ctx context.Context, cfg Config) (_ *Mesh, err error) {
	m := &Mesh{}
	defer func() {
		if err != nil {
			_ = m.Shutdown(context.Background())
		}
	}()
	if cfg.Gateway == "" {
		cfg.Gateway = "127.0.0.1:0"
	}
	regCtx, stopRegistrations := context.WithCancel(context.Background())
	m.stops = append(m.stops, func(context.Context) error { stopRegistrations(); return nil })

	payments, err := m.grpcService(ctx, cfg, "payments", "stable", "grayscope.example.Payments", "Pay",
		func(context.Context, string) (string, error) { return "paid", nil })
	if err != nil {
		return nil, err
	}

	// orders: two instances; both call payments.
	for _, stage := range []string{"stable", "canary"} {
		if stage == "canary" && cfg.Fault == StaleCache {
			continue // registers after users has listed the instances, below
		}
		if err := m.orders(ctx, regCtx, cfg, stage, payments); err != nil {
			return nil, err
		}
	}

	users, err := m.users(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if cfg.Fault == StaleCache {
		if err := m.orders(ctx, regCtx, cfg, "canary", payments); err != nil {
			return nil, err
		}
	}
	return m, m.gateway(ctx, cfg, users)
}

// provider is a service instance's tracer provider: its resource names the service and the stage
// it runs, and it copies the stage from baggage onto every span.
func (m *Mesh) provider(ctx context.Context, cfg Config, service, stage string) (*sdktrace.TracerProvider, error) {
	exp, err := otlptracegrpc.New(ctx, otlptracegrpc.WithEndpoint(cfg.OTLP), otlptracegrpc.WithInsecure())
	if err != nil {
		return nil, fmt.Errorf("%s: the OTLP exporter: %w", service, err)
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithResource(resource.NewSchemaless(
			attribute.String("service.name", service),
			attribute.String("deployment.stage", stage))),
		sdktrace.WithSpanProcessor(grayscope.NewBaggageSpanProcessor()),
		sdktrace.WithBatcher(exp, sdktrace.WithBatchTimeout(200*time.Millisecond)),
	)
	m.stops = append(m.stops, tp.Shutdown)
	return tp, nil
}

// grpcService is a service instance that serves one method and calls nothing; it returns its
// address.
func (m *Mesh) grpcService(ctx context.Context, cfg Config, name, stage, service, method string, h handler) (string, error) {
	tp, err := m.provider(ctx, cfg, name, stage)
	if err != nil {
		return "", err
	}
	return m.serveGRPC(tp, serviceDesc(service, method, h))
}

// serveGRPC serves desc, instrumented, and returns the address.
func (m *Mesh) serveGRPC(tp *sdktrace.TracerProvider, desc *grpc.ServiceDesc) (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	s := grpc.NewServer(
		grpc.StatsHandler(otelgrpc.NewServerHandler(otelgrpc.WithTracerProvider(tp), otelgrpc.WithPropagators(traceContextOnly))),
		grpc.UnaryInterceptor(grayscope.UnaryServerInterceptor()),
	)
	s.RegisterService(desc, nil)
	go func() { _ = s.Serve(l) }()
	m.stops = append(m.stops, func(context.Context) error { s.Stop(); return nil })
	return l.Addr().String(), nil
}

func (m *Mesh) orders(ctx, regCtx context.Context, cfg Config, stage, payments string) error {
	tp, err := m.provider(ctx, cfg, "orders", stage)
	if err != nil {
		return err
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithStatsHandler(otelgrpc.NewClientHandler(otelgrpc.WithTracerProvider(tp), otelgrpc.WithPropagators(traceContextOnly))),
	}
	if cfg.Fault != MissingForward {
		opts = append(opts, grpc.WithUnaryInterceptor(grayscope.UnaryClientInterceptor()))
	}
	cc, err := grpc.NewClient(payments, opts...)
	if err != nil {
		return err
	}
	m.stops = append(m.stops, func(context.Context) error { return cc.Close() })
	place := func(ctx context.Context, in string) (string, error) {
		if cfg.Fault == Goroutine {
			done := make(chan error, 1)
			go func() {
				_, err := invoke(context.Background(), cc, payMethod, in)
				done <- err
			}()
			return "placed", <-done
		}
		_, err := invoke(ctx, cc, payMethod, in)
		return "placed", err
	}
	// orders' server shares its instance's tracer provider with its client.
	addr, err := m.serveGRPC(tp, serviceDesc("grayscope.example.Orders", "Place", place))
	if err != nil {
		return err
	}
	return grayetcd.Register(regCtx, cfg.Etcd, "orders", "orders-"+stage,
		grayetcd.Instance{Addr: addr, Stage: stage}, 5)
}

// users serves GET /me over HTTP and calls orders by stage; it returns its base URL.
func (m *Mesh) users(ctx context.Context, cfg Config) (string, error) {
	tp, err := m.provider(ctx, cfg, "users", "stable")
	if err != nil {
		return "", err
	}
	var resolverOpts []grayetcd.Option
	if cfg.Fault == StaleCache {
		resolverOpts = append(resolverOpts, grayetcd.WithoutWatch())
	}
	serviceConfig := grayscope.RoutingServiceConfig
	if cfg.Fault == IgnoreStage {
		serviceConfig = `{"loadBalancingConfig":[{"round_robin":{}}]}`
	}
	cc, err := grpc.NewClient(grayetcd.Scheme+":///orders",
		grpc.WithResolvers(grayetcd.NewBuilder(cfg.Etcd, resolverOpts...)),
		grpc.WithDefaultServiceConfig(serviceConfig),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithStatsHandler(otelgrpc.NewClientHandler(otelgrpc.WithTracerProvider(tp), otelgrpc.WithPropagators(traceContextOnly))),
		grpc.WithUnaryInterceptor(grayscope.UnaryClientInterceptor()),
	)
	if err != nil {
		return "", err
	}
	m.stops = append(m.stops, func(context.Context) error { return cc.Close() })
	if cfg.Fault == StaleCache {
		// The unwatched cache is filled on the first connection: connect before the canary exists.
		cc.Connect()
		waitReady(ctx, cc)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /me", func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		switch cfg.Fault {
		case Overwrite:
			ctx = grayscope.WithStage(ctx, "stable")
		case MisspeltKey:
			ctx = misspell(ctx)
		}
		if _, err := invoke(ctx, cc, placeMethod, "order"); err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return m.httpService(tp, "users", "127.0.0.1:0", grayscope.Middleware(mux))
}

// misspell moves the stage to the baggage key x-release-stag.
func misspell(ctx context.Context) context.Context {
	b := baggage.FromContext(ctx)
	stage := b.Member(grayscope.StageKey).Value()
	b = b.DeleteMember(grayscope.StageKey)
	if mem, err := baggage.NewMemberRaw("x-release-stag", stage); err == nil && stage != "" {
		b, _ = b.SetMember(mem)
	}
	return baggage.ContextWithBaggage(ctx, b)
}

func waitReady(ctx context.Context, cc *grpc.ClientConn) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for s := cc.GetState(); s.String() != "READY"; s = cc.GetState() {
		if !cc.WaitForStateChange(ctx, s) {
			return
		}
	}
}

func (m *Mesh) gateway(ctx context.Context, cfg Config, users string) error {
	tp, err := m.provider(ctx, cfg, "gateway", "stable")
	if err != nil {
		return err
	}
	client := &http.Client{Transport: otelhttp.NewTransport(grayscope.NewTransport(nil),
		otelhttp.WithTracerProvider(tp), otelhttp.WithPropagators(traceContextOnly))}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /checkout", func(w http.ResponseWriter, r *http.Request) {
		req, _ := http.NewRequestWithContext(r.Context(), http.MethodGet, users+"/me", nil)
		res, err := client.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		res.Body.Close()
		w.WriteHeader(res.StatusCode)
	})
	url, err := m.httpService(tp, "gateway", cfg.Gateway, grayscope.Middleware(mux, grayscope.Entry("stable")))
	m.GatewayURL = url
	return err
}

// httpService serves h, instrumented, and returns its base URL.
func (m *Mesh) httpService(tp *sdktrace.TracerProvider, name, addr string, h http.Handler) (string, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return "", err
	}
	srv := &http.Server{
		Handler:           otelhttp.NewHandler(h, name, otelhttp.WithTracerProvider(tp), otelhttp.WithPropagators(traceContextOnly)),
		ReadHeaderTimeout: 5 * time.Second,
	}
	go func() { _ = srv.Serve(l) }()
	m.stops = append(m.stops, srv.Shutdown)
	return "http://" + l.Addr().String(), nil
}
