package cache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
)

// statsBackend is a blocking ContextType whose data has one index for
// every key: a fetch answers once the index is above MinIndex, or fails
// with err while it is set.
type statsBackend struct {
	mu      sync.Mutex
	index   uint64
	err     error
	changed chan struct{} // closed and replaced by set
}

func newStatsBackend(index uint64) *statsBackend {
	return &statsBackend{index: index, changed: make(chan struct{})}
}

func (b *statsBackend) SupportsBlocking() bool { return true }

func (b *statsBackend) Fetch(o FetchOptions, r Request) (FetchResult, error) {
	return b.FetchContext(context.Background(), o, r)
}

func (b *statsBackend) FetchContext(ctx context.Context, o FetchOptions, _ Request) (FetchResult, error) {
	for {
		b.mu.Lock()
		index, err, changed := b.index, b.err, b.changed
		b.mu.Unlock()
		if err != nil {
			return FetchResult{}, err
		}
		if index > o.MinIndex {
			return FetchResult{Value: index, Index: index}, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return FetchResult{}, ctx.Err()
		}
	}
}

// set changes the index and the error, and wakes the fetches.
func (b *statsBackend) set(index uint64, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.index, b.err = index, err
	close(b.changed)
	b.changed = make(chan struct{})
}

// statsFingerprint is the fingerprint EntryInfo documents, computed here
// on its own.
func statsFingerprint(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])[:8]
}

// statsOne returns the one entry of type typ and key key.
func statsOne(t *testing.T, c *Cache, typ, key string) EntryInfo {
	t.Helper()
	var found []EntryInfo
	for _, e := range c.Entries(EntryFilter{Type: typ}) {
		if e.Key == key {
			found = append(found, e)
		}
	}
	require.Len(t, found, 1, "entries of type %q, key %q", typ, key)
	return found[0]
}

// statsKeys returns the sorted keys of the entries f selects.
func statsKeys(c *Cache, f EntryFilter) []string {
	var keys []string
	for e := range c.EntriesSeq(f) {
		keys = append(keys, e.Key)
	}
	slices.Sort(keys)
	return keys
}

// TestEntriesDescribesEachField follows entries of a plain type and of a
// blocking refreshing one through values, a watch, failures and expiry,
// and checks every field of their EntryInfo at each step, at fake time.
func TestEntriesDescribesEachField(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const tokA, tokB = "3f1c2a9e-token-a", "77d0b4c1-token-b"
		c := TestCache(t)
		c.RegisterType("plain", FetchFunc(func(_ FetchOptions, r Request) (FetchResult, error) {
			info := r.CacheInfo()
			if info.Key == "denied" {
				return FetchResult{}, fmt.Errorf("token %s: permission denied", info.Token)
			}
			return FetchResult{Value: info.Key, Index: 7}, nil
		}), &RegisterOptions{LastGetTTL: 10 * time.Minute})
		b := newStatsBackend(5)
		c.RegisterType("watch", b, &RegisterOptions{Refresh: true, RefreshTimeout: 10 * time.Minute, LastGetTTL: time.Hour})

		_, _, err := c.Get("plain", RequestInfo{Datacenter: "dc1", Token: tokA, Key: "k1"})
		require.NoError(t, err)
		time.Sleep(3 * time.Minute)
		watchReq := RequestInfo{Datacenter: "dc2", Token: tokB, Key: "w1"}
		_, _, err = c.Get("watch", watchReq)
		require.NoError(t, err)
		synctest.Wait() // the refresh now blocks on index 5

		require.Equal(t, EntryInfo{
			Type: "plain", Datacenter: "dc1", Key: "k1", TokenFingerprint: statsFingerprint(tokA),
			HasValue: true, Index: 7, Age: 3 * time.Minute, SinceFetch: 3 * time.Minute, TTL: 7 * time.Minute,
		}, statsOne(t, c, "plain", "k1"))
		require.Equal(t, EntryInfo{
			Type: "watch", Datacenter: "dc2", Key: "w1", TokenFingerprint: statsFingerprint(tokB),
			HasValue: true, Index: 5, Fetching: true, Blocking: true, Refreshing: true, TTL: time.Hour,
		}, statsOne(t, c, "watch", "w1"))

		// A blocking Get watches the entry, which then keeps its TTL.
		blocked := make(chan error, 1)
		go func() {
			req := watchReq
			req.MinIndex = 5
			_, _, err := c.Get("watch", req)
			blocked <- err
		}()
		time.Sleep(2 * time.Minute)
		synctest.Wait()
		w := statsOne(t, c, "watch", "w1")
		require.Equal(t, 1, w.Watchers)
		require.Equal(t, time.Hour, w.TTL, "a watched entry does not age")
		require.Equal(t, 2*time.Minute, w.SinceFetch)
		require.Zero(t, w.Age, "a refresh that keeps up")
		k1 := statsOne(t, c, "plain", "k1")
		require.Equal(t, 5*time.Minute, k1.Age)
		require.Equal(t, 5*time.Minute, k1.TTL)

		// The refresh fails, and goes on failing with back-off.
		b.set(5, fmt.Errorf("token %q rejected", tokB))
		require.Error(t, <-blocked)
		time.Sleep(30 * time.Second)
		synctest.Wait()
		w = statsOne(t, c, "watch", "w1")
		// 4 failures at once, then back-off waits of 2-4 s, 4-8 s, 8-16 s,
		// 16-32 s: 7 or 8 in 30 s.
		require.GreaterOrEqual(t, w.Failures, 7)
		require.LessOrEqual(t, w.Failures, 8)
		w.Failures = 0
		require.Equal(t, EntryInfo{
			Type: "watch", Datacenter: "dc2", Key: "w1", TokenFingerprint: statsFingerprint(tokB),
			HasValue: true, Index: 5, Age: 30 * time.Second, SinceFetch: 2*time.Minute + 30*time.Second,
			Refreshing: true, LostContact: 30 * time.Second, LastError: `token "<redacted>" rejected`,
			TTL: time.Hour - 30*time.Second,
		}, w)

		_, _, err = c.Get("plain", RequestInfo{Datacenter: "dc1", Token: tokA, Key: "denied"})
		require.Error(t, err)
		require.Equal(t, EntryInfo{
			Type: "plain", Datacenter: "dc1", Key: "denied", TokenFingerprint: statsFingerprint(tokA),
			LastError: "token <redacted>: permission denied", Failures: 1, TTL: 10 * time.Minute,
		}, statsOne(t, c, "plain", "denied"))

		// Back online: the error is gone.
		b.set(6, nil)
		synctest.Wait()
		time.Sleep(2 * CacheRefreshMaxWait) // the longest back-off
		synctest.Wait()
		w = statsOne(t, c, "watch", "w1")
		require.Equal(t, uint64(6), w.Index)
		require.True(t, w.Blocking, "blocks on index 6")
		require.Zero(t, w.LostContact)
		require.Zero(t, w.Age)
		require.Empty(t, w.LastError)
		require.Zero(t, w.Failures)
	})
}

// TestEntriesCountsEmptyFetches checks Failures for a type whose fetches
// succeed with nothing to serve: each counts as a failed attempt.
func TestEntriesCountsEmptyFetches(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := TestCache(t)
		var fetches atomic.Int32
		c.RegisterType("empty", FetchFunc(func(FetchOptions, Request) (FetchResult, error) {
			fetches.Add(1)
			return FetchResult{}, nil
		}), nil)
		v, _, err := c.Get("empty", RequestInfo{Key: "k", Timeout: 10 * time.Second})
		require.NoError(t, err)
		require.Nil(t, v)
		synctest.Wait()
		n := int(fetches.Load())
		require.Greater(t, n, CacheRefreshBackoffMin, "the Get went on fetching")
		e := statsOne(t, c, "empty", "k")
		require.Equal(t, n, e.Failures)
		require.False(t, e.HasValue)
		require.Empty(t, e.LastError)
	})
}

// TestEntriesFilterAndExpiry checks the filters, and that reading entries
// does not keep them from expiring.
func TestEntriesFilterAndExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := TestCache(t)
		for _, typ := range []string{"a", "b"} {
			c.RegisterType(typ, FetchFunc(func(FetchOptions, Request) (FetchResult, error) {
				return FetchResult{Value: 1, Index: 1}, nil
			}), &RegisterOptions{LastGetTTL: time.Minute})
		}
		for _, p := range []struct{ typ, dc, key string }{
			{"a", "dc1", "web/1"}, {"a", "dc1", "db/1"}, {"a", "dc2", "web/2"}, {"b", "dc1", "web/3"}, {"b", "", "web/4"},
		} {
			require.NoError(t, c.Prepopulate(p.typ, FetchResult{Value: 1, Index: 1}, p.dc, "", p.key))
		}

		require.Equal(t, []string{"db/1", "web/1", "web/2", "web/3", "web/4"}, statsKeys(c, EntryFilter{}))
		require.Equal(t, []string{"db/1", "web/1", "web/2"}, statsKeys(c, EntryFilter{Type: "a"}))
		require.Equal(t, []string{"db/1", "web/1", "web/3"}, statsKeys(c, EntryFilter{Datacenter: "dc1"}))
		require.Equal(t, []string{"web/1", "web/2", "web/3", "web/4"}, statsKeys(c, EntryFilter{KeyPrefix: "web/"}))
		require.Equal(t, []string{"web/1"}, statsKeys(c, EntryFilter{Type: "a", Datacenter: "dc1", KeyPrefix: "web/"}))
		require.Empty(t, statsKeys(c, EntryFilter{Type: "c"}))

		for range 5 {
			time.Sleep(10 * time.Second)
			require.Len(t, c.Entries(EntryFilter{}), 5)
		}
		time.Sleep(11 * time.Second)
		synctest.Wait()
		require.Empty(t, c.Entries(EntryFilter{}), "snapshots kept entries alive")
	})
}

// statsTokenForms returns the forms of token that must never appear in
// output: as it is, Go- and JSON-quoted, and URL-escaped.
func statsTokenForms(token string) []string {
	q := strconv.Quote(token)
	j, _ := json.Marshal(token)
	return []string{token, q[1 : len(q)-1], q, string(j), url.QueryEscape(token), url.PathEscape(token)}
}

// statsRequireNoToken fails if out holds a form of one of tokens.
func statsRequireNoToken(t *testing.T, out string, tokens ...string) {
	t.Helper()
	for _, tok := range tokens {
		for _, form := range statsTokenForms(tok) {
			if i := strings.Index(out, form); i >= 0 {
				t.Fatalf("the form %q of the token %q is in the output: ...%s...", form, tok, out[max(i-60, 0):min(i+len(form)+60, len(out))])
			}
		}
	}
}

// TestEntriesNeverShowTheToken stores entries whose keys and errors hold
// tokens in every form, and checks that no form is in what a snapshot
// prints or encodes.
func TestEntriesNeverShowTheToken(t *testing.T) {
	tokens := []string{"c0ffee00-1111-2222-3333-444455556666", `s3cr:t "tok"/en+&=%?`}
	c := TestCache(t)
	c.RegisterType("t", FetchFunc(func(_ FetchOptions, r Request) (FetchResult, error) {
		info := r.CacheInfo()
		if strings.HasPrefix(info.Key, "exit/") {
			// The cache's error names the key, and no fetch redacted it.
			runtime.Goexit()
		}
		if strings.HasPrefix(info.Key, "fail") {
			return FetchResult{}, fmt.Errorf("denied: %s, %q, %s, %s", info.Token, info.Token, url.QueryEscape(info.Token), url.PathEscape(info.Token))
		}
		return FetchResult{Value: 1, Index: 1}, nil
	}), nil)
	perToken := map[string]map[RequestInfo]bool{} // the entries of each token
	for _, tok := range tokens {
		perToken[tok] = map[RequestInfo]bool{}
		for i, form := range statsTokenForms(tok) {
			for _, key := range []string{"fail-" + strconv.Itoa(i), "key/" + form + "/x", "exit/" + form} {
				info := RequestInfo{Token: tok, Datacenter: "dc-" + form, Key: key}
				_, _, _ = c.Get("t", info)
				perToken[tok][info] = true
			}
		}
	}
	_, _, err := c.Get("t", RequestInfo{Key: "no-token"})
	require.NoError(t, err)

	infos := c.Entries(EntryFilter{})
	require.Len(t, infos, 1+len(perToken[tokens[0]])+len(perToken[tokens[1]]))
	js, err := json.Marshal(infos)
	require.NoError(t, err)
	out := fmt.Sprintf("%v\n%+v\n%#v\n%s", infos, infos, infos, js)
	statsRequireNoToken(t, out, tokens...)
	require.Contains(t, out, "<redacted>")

	fps := map[string]int{}
	for _, e := range infos {
		fps[e.TokenFingerprint]++
	}
	require.Equal(t, map[string]int{
		"":                          1,
		statsFingerprint(tokens[0]): len(perToken[tokens[0]]),
		statsFingerprint(tokens[1]): len(perToken[tokens[1]]),
	}, fps)
	for _, tok := range tokens {
		require.Equal(t, statsFingerprint(tok), TokenFingerprint(tok))
	}
	require.Empty(t, TokenFingerprint(""))
}

// statsCheck fails if e breaks an invariant of EntryInfo, for a cache
// whose types are named in ttls, with their LastGetTTL, and whose tokens
// have the fingerprints in fps.
func statsCheck(e EntryInfo, ttls map[string]time.Duration, fps map[string]bool) error {
	ttl, ok := ttls[e.Type]
	switch {
	case !ok:
		return fmt.Errorf("unknown type %q", e.Type)
	case !fps[e.TokenFingerprint]:
		return fmt.Errorf("unknown token fingerprint %q", e.TokenFingerprint)
	case !strings.HasPrefix(e.Key, "k"):
		return fmt.Errorf("key %q", e.Key)
	case e.TTL < 0 || e.TTL > ttl:
		return fmt.Errorf("TTL %v of %v", e.TTL, ttl)
	case e.Watchers < 0 || e.Failures < 0:
		return fmt.Errorf("%d watchers, %d failures", e.Watchers, e.Failures)
	case e.Age < 0 || e.SinceFetch < 0 || e.LostContact < 0:
		return fmt.Errorf("age %v, since fetch %v, lost contact %v", e.Age, e.SinceFetch, e.LostContact)
	case !e.HasValue && (e.Index != 0 || e.Age != 0 || e.SinceFetch != 0):
		return fmt.Errorf("no value, but index %d, age %v, since fetch %v", e.Index, e.Age, e.SinceFetch)
	case e.Blocking && !e.Fetching:
		return errors.New("blocking without a fetch")
	case e.LastError != "" && e.Failures < 1:
		return fmt.Errorf("error %q with %d failures", e.LastError, e.Failures)
	}
	return nil
}

// TestEntriesWhileCacheChurns takes snapshots while Gets create, hit and
// refresh entries and evictions remove them, by size and by TTL, so that
// the race detector sees every field being read while it is written, and
// checks each EntryInfo's invariants.
func TestEntriesWhileCacheChurns(t *testing.T) {
	tokens := []string{"", "churn-token-aaaaaaaa", "churn-token-bbbbbbbb"}
	fps := map[string]bool{}
	for _, tok := range tokens {
		fps[TokenFingerprint(tok)] = true
	}
	ttls := map[string]time.Duration{"plain": 20 * time.Millisecond, "refresh": 50 * time.Millisecond}
	c := New(&Options{MaxEntries: 300})
	defer c.Close()
	c.RegisterType("plain", FetchFunc(func(_ FetchOptions, r Request) (FetchResult, error) {
		return FetchResult{Value: r.CacheInfo().Key, Index: 1}, nil
	}), &RegisterOptions{LastGetTTL: ttls["plain"]})
	b := newStatsBackend(1)
	c.RegisterType("refresh", b, &RegisterOptions{Refresh: true, RefreshTimeout: time.Second, LastGetTTL: ttls["refresh"]})

	var wg sync.WaitGroup
	var getters sync.WaitGroup
	for g := range 4 {
		getters.Go(func() {
			for i := range 3000 {
				typ := []string{"plain", "refresh"}[(i/3)%2]
				req := RequestInfo{Token: tokens[i%3], Key: "k" + strconv.Itoa((i*7+g)%500)}
				_, _, _ = c.Get(typ, req)
			}
		})
	}
	done := make(chan struct{})
	wg.Go(func() {
		getters.Wait()
		close(done)
	})
	wg.Go(func() {
		for i := 2; ; i++ {
			select {
			case <-done:
				return
			default:
			}
			var err error
			if i%5 == 0 {
				err = errors.New("backend unavailable")
			}
			b.set(uint64(i), err)
			time.Sleep(100 * time.Microsecond)
		}
	})

	snapshots, described := 0, 0
	for running := true; running; snapshots++ {
		select {
		case <-done:
			running = false // one more, after the Gets
		default:
		}
		for e := range c.EntriesSeq(EntryFilter{}) {
			if err := statsCheck(e, ttls, fps); err != nil {
				t.Fatalf("%v in %+v", err, e)
			}
			described++
		}
	}
	wg.Wait()
	t.Logf("%d snapshots described %d entries", snapshots, described)
	require.Greater(t, described, 0)
}

// TestEntriesHoldNoLockWhileYielding suspends a snapshot in its loop body
// and, meanwhile, uses everything that takes the cache's locks: misses
// (every shard's lock, entry locks, the expiry lock), hits, evictions
// and Close. A lock held across yield would deadlock them.
func TestEntriesHoldNoLockWhileYielding(t *testing.T) {
	// No deferred Close: it would deadlock too.
	c := New(nil)
	c.RegisterType("t", FetchFunc(func(_ FetchOptions, r Request) (FetchResult, error) {
		return FetchResult{Value: r.CacheInfo().Key, Index: 1}, nil
	}), nil)
	for i := range 200 {
		require.NoError(t, c.Prepopulate("t", FetchResult{Value: i, Index: 1}, "", "", "k"+strconv.Itoa(i)))
	}

	done := make(chan error, 1)
	go func() {
		first := true
		for e := range c.EntriesSeq(EntryFilter{}) {
			if !first {
				continue
			}
			first = false
			for i := range 200 {
				if _, _, err := c.Get("t", RequestInfo{Key: "new-" + strconv.Itoa(i)}); err != nil {
					done <- err
					return
				}
			}
			if _, meta, err := c.Get("t", RequestInfo{Key: e.Key}); err != nil || !meta.Hit {
				done <- fmt.Errorf("hit on %q: %+v, %v", e.Key, meta, err)
				return
			}
			c.ReloadOptions(Options{MaxEntries: 50})
			c.Close()
		}
		done <- nil
	}()
	select {
	case err := <-done:
		c.Close()
		require.NoError(t, err)
	case <-time.After(time.Minute):
		t.Fatal("the cache's locks were held while the snapshot yielded")
	}
}
