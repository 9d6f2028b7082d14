package redistier_test

import (
	"fmt"
	"log"
	"time"

	"github.com/agentcache/cache"
	"github.com/agentcache/cache/redistier"
	"github.com/redis/go-redis/v9"
)

// Node is what the example's backend returns.
type Node struct {
	Name, Address string
}

// nodesType stands for a Type that wraps a blocking RPC.
var nodesType cache.Type = cache.BlockingFetchFunc(func(opts cache.FetchOptions, r cache.Request) (cache.FetchResult, error) {
	return cache.FetchResult{Value: []Node{{"web-1", "10.0.0.1"}}, Index: 42}, nil
})

// ExampleWrap shows the wiring of a tier. Every instance of the fleet
// runs the same code against the same Redis. It is compiled but not run
// by go test, since it needs a Redis at 127.0.0.1:6379; the package's
// tests run the same wiring against a redis-server they start.
func ExampleWrap() {
	rdb := redis.NewClient(&redis.Options{
		Addr: "127.0.0.1:6379",
		// Let the tier's per-call deadline reach the sockets.
		ContextTimeoutEnabled: true,
	})
	defer rdb.Close()

	tier := redistier.Wrap(nodesType, rdb, redistier.Options{
		Name:     "service-nodes", // as registered below, so metrics line up
		Codec:    redistier.JSON[[]Node](),
		LeaseTTL: 5 * time.Second,  // a dead holder's lease passes on after this
		MaxStale: 30 * time.Second, // first Gets accept records this old
	})
	defer tier.Close() // after the cache: defers run in reverse

	c := cache.New(nil)
	defer c.Close()
	c.RegisterType("service-nodes", tier, &cache.RegisterOptions{
		Refresh:        true,
		RefreshTimeout: 10 * time.Minute,
	})

	v, meta, err := c.Get("service-nodes", cache.RequestInfo{Datacenter: "dc1", Key: "web"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(v, meta.Index)
	fmt.Printf("%+v\n", tier.Stats())
}
