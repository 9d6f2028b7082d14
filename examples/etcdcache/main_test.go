package etcdcache

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/agentcache/cache/examples/internal/embedetcd"
)

// shared is the etcd server the tests use, unless a test needs its own.
var shared *embedetcd.Server

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "etcdcache-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)

	srv, err := embedetcd.Start(filepath.Join(dir, "etcd"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer srv.Stop()
	shared = srv
	return m.Run()
}
