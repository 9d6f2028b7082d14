// Package embedetcd runs a single-member etcd server inside the process, on
// loopback ports chosen at start, for the examples and their tests.
package embedetcd

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// readyTimeout bounds how long Start and Restart wait for the member to
// elect itself leader and serve clients.
const readyTimeout = 60 * time.Second

// Server is an embedded single-member etcd server. Its data directory and
// ports stay the same across Stop and Restart, so a restarted server
// serves the same data at the same endpoint.
type Server struct {
	dir    string
	client url.URL
	peer   url.URL
	etcd   *embed.Etcd
}

// Start starts a server that keeps its data in dir (which it creates if
// needed) and listens on two free loopback ports.
func Start(dir string) (*Server, error) {
	client, err := freeURL()
	if err != nil {
		return nil, err
	}
	peer, err := freeURL()
	if err != nil {
		return nil, err
	}
	s := &Server{dir: dir, client: client, peer: peer}
	if err := s.start(); err != nil {
		return nil, err
	}
	return s, nil
}

// Endpoints returns the client endpoints to dial.
func (s *Server) Endpoints() []string {
	return []string{s.client.String()}
}

// Stop stops the server. It is a no-op on a stopped server.
func (s *Server) Stop() {
	if s.etcd == nil {
		return
	}
	s.etcd.Close()
	s.etcd = nil
}

// Restart starts a stopped server again on the same data directory and
// ports.
func (s *Server) Restart() error {
	if s.etcd != nil {
		return errors.New("embedetcd: server is running")
	}
	return s.start()
}

func (s *Server) start() error {
	cfg := embed.NewConfig()
	cfg.Name = "default"
	cfg.Dir = s.dir
	cfg.ListenClientUrls = []url.URL{s.client}
	cfg.AdvertiseClientUrls = []url.URL{s.client}
	cfg.ListenPeerUrls = []url.URL{s.peer}
	cfg.AdvertisePeerUrls = []url.URL{s.peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.LogLevel = "error"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	// The examples speak gRPC only; the HTTP/JSON gateway is not needed.
	cfg.EnableGRPCGateway = false

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("embedetcd: start: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return fmt.Errorf("embedetcd: serve: %w", err)
	case <-time.After(readyTimeout):
		e.Close()
		return fmt.Errorf("embedetcd: not ready after %s", readyTimeout)
	}
	s.etcd = e
	return nil
}

// freeURL returns an http URL on a loopback port that was free a moment
// ago.
func freeURL() (url.URL, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return url.URL{}, fmt.Errorf("embedetcd: pick a port: %w", err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		return url.URL{}, fmt.Errorf("embedetcd: pick a port: %w", err)
	}
	return url.URL{Scheme: "http", Host: addr}, nil
}

// StartTemp starts a server in a new temporary directory whose name
// begins with pattern (as os.MkdirTemp takes it). The returned function
// stops the server and removes the directory.
func StartTemp(pattern string) (*Server, func(), error) {
	dir, err := os.MkdirTemp("", pattern)
	if err != nil {
		return nil, nil, err
	}
	s, err := Start(filepath.Join(dir, "etcd"))
	if err != nil {
		return nil, nil, errors.Join(err, os.RemoveAll(dir))
	}
	return s, func() {
		s.Stop()
		_ = os.RemoveAll(dir)
	}, nil
}
