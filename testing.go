package cache

import (
	"reflect"
	"sync"
	"time"

	"github.com/stretchr/testify/mock"
)

// T is the part of *testing.T that the test helpers use; testing.TB
// satisfies it.
type T interface {
	Helper()
	Cleanup(func())
	Logf(format string, args ...any)
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
	FailNow()
}

// testResultWait is how long the helpers wait for a result.
const testResultWait = 150 * time.Millisecond

// MockType is a Type for tests, built on testify's mock.Mock.
//
// Fetch and SupportsBlocking may be given fixed results with Return, or
// functions that compute them from the arguments:
//
//	typ.On("Fetch", mock.Anything, mock.Anything).Return(
//		func(o FetchOptions, r Request) FetchResult { ... },
//		func(o FetchOptions, r Request) error { ... })
type MockType struct {
	mock.Mock
}

// Fetch records the call and returns what the matching expectation says.
func (m *MockType) Fetch(opts FetchOptions, r Request) (FetchResult, error) {
	ret := m.Called(opts, r)

	var res FetchResult
	if f, ok := ret.Get(0).(func(FetchOptions, Request) FetchResult); ok {
		res = f(opts, r)
	} else if v := ret.Get(0); v != nil {
		res = v.(FetchResult)
	}

	var err error
	if f, ok := ret.Get(1).(func(FetchOptions, Request) error); ok {
		err = f(opts, r)
	} else {
		err = ret.Error(1)
	}
	return res, err
}

// SupportsBlocking records the call and returns what the matching
// expectation says.
func (m *MockType) SupportsBlocking() bool {
	ret := m.Called()
	if f, ok := ret.Get(0).(func() bool); ok {
		return f()
	}
	return ret.Bool(0)
}

// Static makes every Fetch return r and err. It returns the expectation, so
// that it can be limited with Once, Times and so on.
func (m *MockType) Static(r FetchResult, err error) *mock.Call {
	return m.On("Fetch", mock.Anything, mock.Anything).Return(r, err)
}

// MockRequest is a Request for tests, built on testify's mock.Mock.
type MockRequest struct {
	mock.Mock
}

// CacheInfo records the call and returns what the matching expectation
// says: a RequestInfo, or a func() RequestInfo that computes it.
func (m *MockRequest) CacheInfo() RequestInfo {
	ret := m.Called()
	if f, ok := ret.Get(0).(func() RequestInfo); ok {
		return f()
	}
	return ret.Get(0).(RequestInfo)
}

// Reset drops the request's expectations and recorded calls, so that new
// ones can be set. It must not run concurrently with CacheInfo.
func (m *MockRequest) Reset() {
	m.Mock = mock.Mock{}
}

// TestCache returns a new Cache that is closed when the test ends.
func TestCache(t T) *Cache {
	t.Helper()
	c := New(nil)
	t.Cleanup(func() { c.Close() })
	return c
}

// TestCacheGetCh runs Get in a goroutine and returns a channel that
// receives its value. As in Consul, a failed Get sends nothing: the error is
// logged with t.Logf and the channel closed, so that a receive gets nil.
// Assert the value with TestCacheGetChResult; use TestCacheGetChErr to see
// the error. The channel is buffered, so the goroutine ends even if nobody
// receives, and an error that comes once the test's cleanups started is not
// logged, since testing panics on a log after the test.
func TestCacheGetCh(t T, c *Cache, typ string, r Request) <-chan any {
	t.Helper()
	logf := testLogf(t)
	ch := make(chan any, 1)
	go func() {
		v, _, err := c.Get(typ, r)
		if err != nil {
			logf("Error: %s", err)
			close(ch)
			return
		}
		ch <- v
	}()
	return ch
}

// TestGetResult is what TestCacheGetChErr delivers: the results of a Get.
type TestGetResult struct {
	Value any
	Meta  ResultMeta
	Err   error
}

// TestCacheGetChErr runs Get in a goroutine and returns a channel that
// receives its results, error included. The channel is buffered, so the
// goroutine ends even if nobody receives.
func TestCacheGetChErr(t T, c *Cache, typ string, r Request) <-chan TestGetResult {
	t.Helper()
	ch := make(chan TestGetResult, 1)
	go func() {
		v, meta, err := c.Get(typ, r)
		ch <- TestGetResult{Value: v, Meta: meta, Err: err}
	}()
	return ch
}

// testLogf returns a func that logs with t.Logf until t's cleanups start
// and drops the line after that.
func testLogf(t T) func(format string, args ...any) {
	var mu sync.Mutex
	done := false
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		done = true
	})
	return func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if !done {
			t.Logf(format, args...)
		}
	}
}

// TestCacheGetChResult fails the test unless ch delivers a value equal
// (reflect.DeepEqual) to expected within a short time. A channel that
// TestCacheGetCh closed after a failed Get delivers nil, so, as in Consul,
// an expected nil passes for a failed Get.
func TestCacheGetChResult(t T, ch <-chan any, expected any) {
	t.Helper()
	timer := time.NewTimer(testResultWait)
	defer timer.Stop()
	select {
	case got := <-ch:
		if !reflect.DeepEqual(got, expected) {
			t.Fatalf("result doesn't match:\n got: %#v\nwant: %#v", got, expected)
		}
	case <-timer.C:
		t.Fatalf("no result on channel within %s", testResultWait)
	}
}

// TestCacheNotifyChResult fails the test unless ch delivers len(expected)
// events within a short time that match expected in any order. Meta.Age is
// not compared, since it depends on timing. As in Consul, it panics if
// expected is empty: asking for zero events is a bug in the test.
func TestCacheNotifyChResult(t T, ch <-chan UpdateEvent, expected ...UpdateEvent) {
	t.Helper()
	if len(expected) == 0 {
		panic("asking for zero updates seems like a bug")
	}
	timer := time.NewTimer(testResultWait)
	defer timer.Stop()
	got := make([]UpdateEvent, 0, len(expected))
	for len(got) < len(expected) {
		select {
		case ev := <-ch:
			ev.Meta.Age = 0
			got = append(got, ev)
		case <-timer.C:
			t.Fatalf("got %d of %d events within %s: %+v", len(got), len(expected), testResultWait, got)
			return
		}
	}
	if missing, extra := diffEvents(expected, got); len(missing)+len(extra) > 0 {
		t.Fatalf("events don't match:\nmissing: %+v\nunexpected: %+v", missing, extra)
	}
}

// diffEvents matches want against got regardless of order, ignoring
// Meta.Age, and returns what is left unmatched on each side.
func diffEvents(want, got []UpdateEvent) (missing, extra []UpdateEvent) {
	extra = append(extra, got...)
	for _, w := range want {
		w.Meta.Age = 0
		found := false
		for i, g := range extra {
			if reflect.DeepEqual(w, g) {
				extra = append(extra[:i], extra[i+1:]...)
				found = true
				break
			}
		}
		if !found {
			missing = append(missing, w)
		}
	}
	return missing, extra
}

// TestRequest returns a MockRequest whose CacheInfo returns info.
func TestRequest(t T, info RequestInfo) *MockRequest {
	t.Helper()
	req := &MockRequest{}
	req.On("CacheInfo").Return(info)
	return req
}

// TestType returns a MockType that supports blocking. Fetch expectations
// are for the test to set.
func TestType(t T) *MockType {
	t.Helper()
	return testType(true)
}

// TestTypeNonBlocking returns a MockType that does not support blocking.
// Fetch expectations are for the test to set.
func TestTypeNonBlocking(t T) *MockType {
	t.Helper()
	return testType(false)
}

func testType(blocking bool) *MockType {
	typ := &MockType{}
	typ.On("SupportsBlocking").Return(blocking).Maybe()
	return typ
}
