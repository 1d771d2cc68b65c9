package grayscope

import (
	"sync"
	"sync/atomic"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/base"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/status"
)

// BalancerName is the gRPC load-balancing policy that sends each call to an endpoint of the call's
// stage. Select it with RoutingServiceConfig:
//
//	grpc.NewClient("grayscope-etcd:///orders", grpc.WithDefaultServiceConfig(grayscope.RoutingServiceConfig), ...)
const BalancerName = "grayscope_stage"

// RoutingServiceConfig is the gRPC service config that selects the stage-aware balancer.
const RoutingServiceConfig = `{"loadBalancingConfig":[{"` + BalancerName + `":{}}]}`

// StableStage is the stage of calls that carry none, of endpoints without a stage label, and the
// fallback.
const StableStage = "stable"

func init() {
	balancer.Register(builder{})
}

type stageLabel struct{}

// WithEndpointStage labels a resolved address with the stage of the instance behind it, for the
// balancer (resolvers call it; the etcd resolver does).
func WithEndpointStage(a resolver.Address, stage string) resolver.Address {
	a.BalancerAttributes = a.BalancerAttributes.WithValue(stageLabel{}, stage)
	return a
}

// EndpointStage is the stage label of a resolved address; StableStage if it has none.
func EndpointStage(a resolver.Address) string {
	if s, _ := a.BalancerAttributes.Value(stageLabel{}).(string); s != "" {
		return s
	}
	return StableStage
}

// The routing rule, kept consistent with how grayscope judges "misrouted" (a call of a stage
// served by an instance of another stage while an instance of its own stage is live):
//
//   - a call goes round-robin to the ready endpoints of its stage (StableStage if it has none);
//   - it falls back to the stable endpoints only when the resolver lists no endpoint of its stage
//     at all: a canary that is not deployed (or deregistered) is not a routing bug;
//   - when endpoints of its stage are listed but none is ready yet, the call waits for one (until
//     its deadline) instead of leaking to stable: a canary that is registered but unreachable fails
//     its calls rather than silently turning the release into a partial one.
type builder struct{}

func (builder) Name() string { return BalancerName }

func (builder) Build(cc balancer.ClientConn, opts balancer.BuildOptions) balancer.Balancer {
	listed := &listedStages{}
	inner := base.NewBalancerBuilder(BalancerName, pickerBuilder{listed}, base.Config{}).Build(cc, opts)
	return &stageBalancer{Balancer: inner, listed: listed}
}

// stageBalancer is the base balancer (a SubConn per address, a new picker on every change) that
// also remembers which stages the resolver lists, ready or not.
type stageBalancer struct {
	balancer.Balancer
	listed *listedStages
}

func (b *stageBalancer) UpdateClientConnState(s balancer.ClientConnState) error {
	stages := map[string]bool{}
	for _, a := range s.ResolverState.Addresses {
		stages[EndpointStage(a)] = true
	}
	for _, e := range s.ResolverState.Endpoints {
		for _, a := range e.Addresses {
			stages[EndpointStage(a)] = true
		}
	}
	b.listed.set(stages)
	return b.Balancer.UpdateClientConnState(s)
}

type listedStages struct {
	mu     sync.Mutex
	stages map[string]bool
}

func (l *listedStages) set(s map[string]bool) {
	l.mu.Lock()
	l.stages = s
	l.mu.Unlock()
}

func (l *listedStages) get() map[string]bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stages
}

type pickerBuilder struct{ listed *listedStages }

func (pb pickerBuilder) Build(info base.PickerBuildInfo) balancer.Picker {
	p := &stagePicker{ready: map[string][]balancer.SubConn{}, listed: pb.listed.get()}
	for sc, i := range info.ReadySCs {
		s := EndpointStage(i.Address)
		p.ready[s] = append(p.ready[s], sc)
	}
	return p
}

type stagePicker struct {
	ready  map[string][]balancer.SubConn
	listed map[string]bool
	next   atomic.Uint64
}

func (p *stagePicker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	stage := Stage(info.Ctx)
	if stage == "" {
		stage = StableStage
	}
	scs := p.ready[stage]
	if len(scs) == 0 {
		if p.listed[stage] {
			return balancer.PickResult{}, balancer.ErrNoSubConnAvailable
		}
		scs = p.ready[StableStage]
		if len(scs) == 0 && p.listed[StableStage] {
			return balancer.PickResult{}, balancer.ErrNoSubConnAvailable
		}
	}
	if len(scs) == 0 {
		return balancer.PickResult{}, status.Errorf(codes.Unavailable, "no endpoint of stage %q and no %s endpoint to fall back to", stage, StableStage)
	}
	return balancer.PickResult{SubConn: scs[p.next.Add(1)%uint64(len(scs))]}, nil
}
