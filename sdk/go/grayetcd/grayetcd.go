// Package grayetcd resolves gRPC targets from instances registered in etcd, each with its stage
// label, for grayscope's stage-aware balancer.
//
// An instance registers itself under /grayscope/services/<service>/<instance> with a lease (see
// Register); its value says where it listens and which stage it runs:
//
//	{"addr": "10.0.0.7:50051", "stage": "canary"}
//
// The resolver lists a service's instances once, keeps them in a local cache and keeps that cache
// fresh with a watch: etcd is never queried per call. A cache that is not watched goes stale: a
// canary registered after the client started never gets traffic, one that left still gets it.
//
//	grpc.NewClient("grayscope-etcd:///orders",
//		grpc.WithResolvers(grayetcd.NewBuilder(etcdClient)),
//		grpc.WithDefaultServiceConfig(grayscope.RoutingServiceConfig), ...)
package grayetcd

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/resolver"

	grayscope "github.com/grayscope/grayscope/sdk/go"
)

// Scheme is the target scheme the resolver answers: grayscope-etcd:///<service>.
const Scheme = "grayscope-etcd"

// Prefix is where instances are registered.
const Prefix = "/grayscope/services/"

// Instance is what an instance registers.
type Instance struct {
	Addr  string `json:"addr"`
	Stage string `json:"stage"`
}

// Register puts the instance under the service with a lease of ttl seconds, kept alive until ctx
// ends; then the registration expires with the lease.
func Register(ctx context.Context, cli *clientv3.Client, service, id string, inst Instance, ttl int64) error {
	value, err := json.Marshal(inst)
	if err != nil {
		return err
	}
	lease, err := cli.Grant(ctx, ttl)
	if err != nil {
		return fmt.Errorf("granting the registration lease: %w", err)
	}
	if _, err := cli.Put(ctx, key(service, id), string(value), clientv3.WithLease(lease.ID)); err != nil {
		return fmt.Errorf("registering %s/%s: %w", service, id, err)
	}
	alive, err := cli.KeepAlive(ctx, lease.ID)
	if err != nil {
		return fmt.Errorf("keeping the registration alive: %w", err)
	}
	go func() {
		for range alive {
		}
	}()
	return nil
}

func key(service, id string) string {
	return Prefix + path.Join(service, id)
}

// Option configures the resolver.
type Option func(*Builder)

// WithoutWatch lists instances once and never again: the stale-cache bug, for tests and demos of
// what grayscope catches. Do not use it in a service.
func WithoutWatch() Option {
	return func(b *Builder) { b.watch = false }
}

// Builder builds resolvers for Scheme targets on one etcd client.
type Builder struct {
	cli   *clientv3.Client
	watch bool
}

// NewBuilder returns the resolver builder; pass it to grpc.WithResolvers.
func NewBuilder(cli *clientv3.Client, opts ...Option) *Builder {
	b := &Builder{cli: cli, watch: true}
	for _, o := range opts {
		o(b)
	}
	return b
}

// Scheme is Scheme.
func (b *Builder) Scheme() string { return Scheme }

// Build starts listing and watching the target's service.
func (b *Builder) Build(target resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	service := strings.Trim(target.Endpoint(), "/")
	if service == "" {
		return nil, fmt.Errorf("grayetcd: target %q names no service", target.URL.String())
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &etcdResolver{
		cli:       b.cli,
		cc:        cc,
		prefix:    Prefix + service + "/",
		cancel:    cancel,
		instances: map[string]Instance{},
	}
	r.done.Add(1)
	go r.run(ctx, b.watch)
	return r, nil
}

type etcdResolver struct {
	cli       *clientv3.Client
	cc        resolver.ClientConn
	prefix    string
	cancel    context.CancelFunc
	done      sync.WaitGroup
	instances map[string]Instance
}

// run lists the instances, then applies every change the watch reports; when the watch fails
// (etcd unreachable, history compacted) it lists again and watches from there.
func (r *etcdResolver) run(ctx context.Context, watch bool) {
	defer r.done.Done()
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		rev, err := r.list(ctx)
		if err != nil {
			r.cc.ReportError(err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		if !watch {
			<-ctx.Done()
			return
		}
		for resp := range r.cli.Watch(clientv3.WithRequireLeader(ctx), r.prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
			if resp.Err() != nil {
				break
			}
			for _, ev := range resp.Events {
				k := string(ev.Kv.Key)
				if ev.Type == clientv3.EventTypeDelete {
					delete(r.instances, k)
				} else if inst, ok := parse(ev.Kv.Value); ok {
					r.instances[k] = inst
				}
			}
			r.update()
		}
	}
}

func (r *etcdResolver) list(ctx context.Context) (int64, error) {
	resp, err := r.cli.Get(ctx, r.prefix, clientv3.WithPrefix())
	if err != nil {
		return 0, fmt.Errorf("grayetcd: listing %s: %w", r.prefix, err)
	}
	r.instances = map[string]Instance{}
	for _, kv := range resp.Kvs {
		if inst, ok := parse(kv.Value); ok {
			r.instances[string(kv.Key)] = inst
		}
	}
	r.update()
	return resp.Header.Revision, nil
}

func parse(value []byte) (Instance, bool) {
	var inst Instance
	if err := json.Unmarshal(value, &inst); err != nil || inst.Addr == "" {
		log.Printf("grayetcd: ignoring a registration that is not {\"addr\": ..., \"stage\": ...}: %q", value)
		return Instance{}, false
	}
	return inst, true
}

func (r *etcdResolver) update() {
	keys := make([]string, 0, len(r.instances))
	for k := range r.instances {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	addrs := make([]resolver.Address, 0, len(keys))
	for _, k := range keys {
		inst := r.instances[k]
		addrs = append(addrs, grayscope.WithEndpointStage(resolver.Address{Addr: inst.Addr}, inst.Stage))
	}
	// An error here means the balancer cannot use the list (it is empty): gRPC fails calls and
	// asks again (ResolveNow) by itself; the watch delivers the next list.
	_ = r.cc.UpdateState(resolver.State{Addresses: addrs})
}

// ResolveNow does nothing: the watch keeps the cache fresh, and etcd is not queried per call.
func (r *etcdResolver) ResolveNow(resolver.ResolveNowOptions) {}

// Close stops the watch.
func (r *etcdResolver) Close() {
	r.cancel()
	r.done.Wait()
}
