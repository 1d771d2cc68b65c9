// Package embedetcd runs a real, embedded single-node etcd, for the example mesh and the tests.
package embedetcd

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
)

// Start runs etcd with its data in dir, on 127.0.0.1 ports the OS chose; stop closes the client
// and the server.
func Start(dir string) (cli *clientv3.Client, stop func(), err error) {
	var e *embed.Etcd
	var client url.URL
	// etcd takes URLs, not listeners: a port picked free may be taken by another process before
	// etcd binds it. Then it is tried again on other ports, in a fresh directory.
	for attempt := 0; ; attempt++ {
		e, client, err = startOn(filepath.Join(dir, fmt.Sprintf("etcd-%d", attempt)))
		if err == nil || attempt == 4 || !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	if err != nil {
		return nil, nil, err
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(20 * time.Second):
		e.Close()
		return nil, nil, errors.New("etcd did not start within 20 s")
	}
	cli, err = clientv3.New(clientv3.Config{Endpoints: []string{client.Host}, DialTimeout: 5 * time.Second})
	if err != nil {
		e.Close()
		return nil, nil, err
	}
	return cli, func() { cli.Close(); e.Close() }, nil
}

// startOn starts etcd with its data in dir on two ports picked free.
func startOn(dir string) (*embed.Etcd, url.URL, error) {
	cfg := embed.NewConfig()
	cfg.Dir = dir
	cfg.LogLevel = "fatal" // its shutdown logs errors about its own closed listeners
	peer, err := reserve()
	if err != nil {
		return nil, url.URL{}, err
	}
	client, err := reserve()
	if err != nil {
		return nil, url.URL{}, err
	}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	e, err := embed.StartEtcd(cfg)
	return e, client, err
}

// reserve picks a 127.0.0.1 port by binding port 0: etcd takes URLs, not listeners.
func reserve() (url.URL, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return url.URL{}, err
	}
	defer l.Close()
	return url.URL{Scheme: "http", Host: l.Addr().String()}, nil
}
