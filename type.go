package cache

import (
	"context"
	"errors"
	"time"
)

// Type implements the logic to fetch one kind of data, usually by wrapping
// an RPC. A Type is registered with RegisterType under a name that Get and
// Notify then use.
//
// The cache never calls Fetch concurrently for the same entry, but it does
// call it concurrently for different entries, so a Type must be safe for
// concurrent use.
type Type interface {
	// Fetch fetches a single unique item.
	//
	// For a type that supports blocking, FetchOptions.MinIndex and
	// FetchOptions.Timeout describe a blocking query: Fetch should wait
	// until the data's index is greater than MinIndex, or Timeout passes,
	// and then return what it has.
	//
	// A FetchResult with a nil Value means "no new value": the cache keeps
	// the value it has. An error is handed to the callers that were waiting
	// for this fetch; the cached value, if any, is kept.
	Fetch(FetchOptions, Request) (FetchResult, error)

	// SupportsBlocking reports whether the type supports blocking queries.
	// Only then does the cache pass MinIndex and Timeout to Fetch and honour
	// RequestInfo.MinIndex in Get.
	SupportsBlocking() bool
}

// ContextType is a Type whose fetches can be abandoned. When a registered
// Type implements it, the cache calls FetchContext instead of Fetch, with a
// context that is done when nobody needs the result any more: the entry
// was evicted, the cache closed while no Get waited for the fetch's value
// (see Cache.Close), or, for a Get that bypasses the cache, that Get gave
// up (its context ended, its Timeout passed, or the cache closed during a
// blocking query). A Type should then abandon a long blocking query and
// return.
//
// It is an interface of its own, not a field of FetchOptions, so that
// FetchOptions stay what Types written for Consul's cache compare against.
type ContextType interface {
	Type
	FetchContext(ctx context.Context, opts FetchOptions, r Request) (FetchResult, error)
}

// FetchOptions are the options the cache passes to Type.Fetch.
type FetchOptions struct {
	// MinIndex is the index of the value the cache already has, to block
	// on. It is zero for the first fetch and for non-blocking types.
	MinIndex uint64

	// Timeout is the longest the fetch should block, from the type's
	// RegisterOptions.RefreshTimeout. It is zero for non-blocking types.
	Timeout time.Duration

	// LastResult is the last successful result the cache holds for this
	// entry, including its State, or nil if there is none yet. Types keep
	// per-entry state (a rate-limit back-off, a stream position) there.
	LastResult *FetchResult
}

// FetchResult is the result of a Type's Fetch.
type FetchResult struct {
	// Value is the result of the fetch. Nil means no new value: the cache
	// keeps the one it has.
	Value any

	// State is opaque per-entry data that the cache keeps and hands back in
	// FetchOptions.LastResult on the next fetch. A result with a nil Value,
	// a non-nil State and no error still updates the stored State.
	State any

	// Index is the index of Value, for example a Raft index. An index of 0
	// with a value is stored as 1 so that the next blocking fetch blocks;
	// a fetch that returns index 0 counts as a failed attempt for back-off.
	Index uint64

	// NotModified says that the value has not changed since
	// FetchOptions.LastResult, so that a server can answer "nothing new"
	// without sending the value again; Value is then ignored. The cache
	// keeps its value and takes the result's State, its fetch time (for
	// MaxAge and Age) and, if higher, its Index as the index the next
	// blocking fetch waits on. To callers and watchers nothing changed:
	// Gets blocked on the value's index keep waiting, Notify sends
	// nothing, and ResultMeta.Index stays the value's. It is counted as
	// <prefix>.<type>.fetch_not_modified, besides fetch_success. Without a
	// cached value it means no value, as a nil Value does.
	NotModified bool
}

// StopRefresh wraps err, returned by a Type's Fetch, to say that retrying
// is pointless until something changes: the ACL token of the request was
// deleted, say. The background refresh of the entry then stops after
// handing the error to the callers waiting for it; the cached value stays
// until its TTL, and the next Get of the entry fetches again (and so
// restarts the refresh). errors.Is and errors.As see err through the
// wrapper. It is counted as <prefix>.<type>.fetch_error_terminal, besides
// fetch_error. StopRefresh(nil) is nil.
func StopRefresh(err error) error {
	if err == nil {
		return nil
	}
	return &stopRefreshError{err}
}

// stopRefreshError is an error wrapped by StopRefresh.
type stopRefreshError struct{ err error }

func (e *stopRefreshError) Error() string { return e.err.Error() }
func (e *stopRefreshError) Unwrap() error { return e.err }

// isStopRefresh reports whether err was wrapped by StopRefresh.
func isStopRefresh(err error) bool {
	var s *stopRefreshError
	return errors.As(err, &s)
}

// FetchFunc adapts an ordinary function to a Type that does not support
// blocking, as http.HandlerFunc does for handlers.
type FetchFunc func(FetchOptions, Request) (FetchResult, error)

// Fetch calls f(opts, r).
func (f FetchFunc) Fetch(opts FetchOptions, r Request) (FetchResult, error) { return f(opts, r) }

// SupportsBlocking returns false.
func (FetchFunc) SupportsBlocking() bool { return false }

// BlockingFetchFunc adapts an ordinary function to a Type that supports
// blocking: the function gets MinIndex and Timeout in its FetchOptions.
type BlockingFetchFunc func(FetchOptions, Request) (FetchResult, error)

// Fetch calls f(opts, r).
func (f BlockingFetchFunc) Fetch(opts FetchOptions, r Request) (FetchResult, error) {
	return f(opts, r)
}

// SupportsBlocking returns true.
func (BlockingFetchFunc) SupportsBlocking() bool { return true }
