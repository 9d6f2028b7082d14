package fleet

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/agentcache/cache/examples/internal/embedetcd"
	"github.com/agentcache/cache/redistier/redistest"
	"github.com/redis/go-redis/v9"
)

// etcd is the etcd server the tests share.
var etcd *embedetcd.Server

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

// runTests starts etcd, then the shared redis-server (see redistest.Main),
// and runs the tests.
func runTests(m *testing.M) int {
	srv, stop, err := embedetcd.StartTemp("fleet-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer stop()
	etcd = srv
	// go-redis logs connections it drops after a cancelled call; the
	// tests cancel calls on purpose.
	redis.SetLogger(quiet{})
	return redistest.Main(m)
}

// quiet discards go-redis's log lines.
type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}
