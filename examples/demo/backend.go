package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/agentcache/cache/examples/internal/embedetcd"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// backend is the etcd the demo runs against: an embedded server in a
// temporary directory, or an existing cluster.
type backend struct {
	cli *clientv3.Client
	srv *embedetcd.Server // nil for an existing cluster
	dir string            // the embedded server's temporary directory
}

// openBackend connects to the cluster at endpoints (comma-separated
// host:port), or starts an embedded server when endpoints is empty.
func openBackend(endpoints string) (*backend, error) {
	b := &backend{}
	var eps []string
	if endpoints == "" {
		dir, err := os.MkdirTemp("", "agentcache-demo-")
		if err != nil {
			return nil, err
		}
		b.dir = dir
		srv, err := embedetcd.Start(filepath.Join(dir, "etcd"))
		if err != nil {
			b.close()
			return nil, err
		}
		b.srv = srv
		eps = srv.Endpoints()
	} else {
		eps = strings.Split(endpoints, ",")
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   eps,
		DialTimeout: 10 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		b.close()
		return nil, fmt.Errorf("connect to %v: %w", eps, err)
	}
	b.cli = cli
	return b, nil
}

// describe says what the demo runs against.
func (b *backend) describe() string {
	if b.srv != nil {
		return "embedded etcd at " + strings.Join(b.srv.Endpoints(), ",")
	}
	return "etcd at " + strings.Join(b.cli.Endpoints(), ",")
}

// close closes the client, stops an embedded server and removes its
// directory.
func (b *backend) close() {
	if b.cli != nil {
		_ = b.cli.Close()
	}
	if b.srv != nil {
		b.srv.Stop()
	}
	if b.dir != "" {
		_ = os.RemoveAll(b.dir)
	}
}
