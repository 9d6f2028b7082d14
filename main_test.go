package cache

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if any goroutine outlives the tests: every
// goroutine the cache starts must end with its cache, watch or fetch.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
