// Command grayscope-go-mesh runs the Go example mesh against a grayscope collector, with an
// embedded etcd as its registry, until interrupted:
//
//	go run ./example/cmd/grayscope-go-mesh -otlp 127.0.0.1:4317 [-fault stale-cache]
//	curl -H 'X-Release-Stage: canary' http://127.0.0.1:8082/checkout
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/grayscope/grayscope/sdk/go/example/mesh"
	"github.com/grayscope/grayscope/sdk/go/internal/embedetcd"
)

func main() {
	otlp := flag.String("otlp", "127.0.0.1:4317", "the collector's OTLP/gRPC address")
	gateway := flag.String("gateway", "127.0.0.1:8082", "where the gateway listens")
	faults := make([]string, 0, len(mesh.Faults))
	for _, f := range mesh.Faults {
		faults = append(faults, string(f))
	}
	fault := flag.String("fault", "", "run with one bug: "+strings.Join(faults, ", "))
	flag.Parse()
	if *fault != "" && !contains(faults, *fault) {
		log.Fatalf("unknown -fault %q; one of: %s", *fault, strings.Join(faults, ", "))
	}

	dir, err := os.MkdirTemp("", "grayscope-go-mesh-etcd")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	etcd, stopEtcd, err := embedetcd.Start(dir)
	if err != nil {
		log.Fatalf("etcd: %v", err)
	}
	defer stopEtcd()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	m, err := mesh.Start(ctx, mesh.Config{OTLP: *otlp, Etcd: etcd, Fault: mesh.Fault(*fault), Gateway: *gateway})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("gateway on %s/checkout, spans to %s\n", m.GatewayURL, *otlp)
	<-ctx.Done()
	shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.Shutdown(shutdown); err != nil {
		log.Print(err)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
