package main

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/agentcache/cache/redistier/redistest"
)

// TestDemoFleetWithLocalRedis runs the demo briefly with -instances 3
// -redis local and checks that its summary compares the fleets.
func TestDemoFleetWithLocalRedis(t *testing.T) {
	if _, err := exec.LookPath(redistest.Binary); err != nil {
		redistest.Unavailable(t, redistest.ErrNotInstalled)
	}
	var out bytes.Buffer
	o := options{
		readers: 6, keys: 5, writesPerSec: 20, duration: 2 * time.Second,
		think: time.Millisecond, refreshTimeout: time.Minute, prefix: "/agentcache-demo-test/",
		instances: 3, redis: "local",
	}
	if err := run(o, &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	for _, want := range []string{"3 without the tier, 3 with it (local redis-server", "without the tier", "with the tier", "Get errors                                0"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, out.String())
		}
	}
}
