package cache_test

import (
	"fmt"
	"slices"
	"strings"

	"github.com/agentcache/cache"
)

// aclType is a type whose servers know one token, as a Consul catalog
// with ACLs would.
func aclType(token string) cache.FetchFunc {
	return func(_ cache.FetchOptions, r cache.Request) (cache.FetchResult, error) {
		info := r.CacheInfo()
		if info.Token != token {
			return cache.FetchResult{}, fmt.Errorf("ACL not found: token %s", info.Token)
		}
		return cache.FetchResult{Value: []string{info.Key + "-1"}, Index: 42}, nil
	}
}

func ExampleCache_Entries() {
	const token = "5b8d7c1e-4a2f-4c3b-9d6e-0f1a2b3c4d5e"
	c := cache.New(nil)
	defer c.Close()
	c.RegisterType("services", aclType(token), nil)
	for _, info := range []cache.RequestInfo{
		{Datacenter: "dc1", Token: token, Key: "web"},
		{Datacenter: "dc1", Token: "deleted-token-0a1b2c3d", Key: "web"},
		{Datacenter: "dc2", Token: token, Key: "db"},
	} {
		_, _, _ = c.Get("services", info)
	}

	entries := c.Entries(cache.EntryFilter{Type: "services", Datacenter: "dc1"})
	slices.SortFunc(entries, func(a, b cache.EntryInfo) int {
		return strings.Compare(a.TokenFingerprint, b.TokenFingerprint)
	})
	for _, e := range entries {
		fmt.Printf("%s/%s/%s token %s: value %t, index %d, error %q\n",
			e.Type, e.Datacenter, e.Key, e.TokenFingerprint, e.HasValue, e.Index, e.LastError)
	}
	fmt.Println(cache.TokenFingerprint(token))
	// Output:
	// services/dc1/web token 978f0b99: value true, index 42, error ""
	// services/dc1/web token f220277f: value false, index 0, error "ACL not found: token <redacted>"
	// 978f0b99
}

func ExampleCache_EntriesSeq() {
	c := cache.New(nil)
	defer c.Close()
	c.RegisterType("services", aclType("t0k3n-0123456789"), nil)
	for _, key := range []string{"web", "db", "cache"} {
		_, _, _ = c.Get("services", cache.RequestInfo{Token: "t0k3n-0123456789", Key: key})
	}
	_, _, _ = c.Get("services", cache.RequestInfo{Token: "expired-9876543210", Key: "web"})

	// Stop at the first failing entry: a snapshot costs only what it reads.
	for e := range c.EntriesSeq(cache.EntryFilter{}) {
		if e.LastError != "" {
			fmt.Printf("%s %q failing (at least %d): %s\n", e.Type, e.Key, e.Failures, e.LastError)
			break
		}
	}
	// Output:
	// services "web" failing (at least 1): ACL not found: token <redacted>
}
