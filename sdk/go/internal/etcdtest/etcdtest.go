// Package etcdtest runs a real, embedded single-node etcd for a test.
package etcdtest

import (
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/grayscope/grayscope/sdk/go/internal/embedetcd"
)

// Start runs etcd until the test ends and returns a client of it.
func Start(t testing.TB) *clientv3.Client {
	t.Helper()
	cli, stop, err := embedetcd.Start(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return cli
}
