package cache

import (
	"errors"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
)

var _ T = (*recordingT)(nil)
var _ T = (*testing.T)(nil)

// Pins MockType.Static: every Fetch returns the given result and error, and
// the returned *mock.Call can limit it (Times).
func TestHelper_MockTypeStatic(t *testing.T) {
	typ := &MockType{}
	call := typ.Static(FetchResult{Value: 42, Index: 3}, nil)
	require.IsType(t, &mock.Call{}, call)
	call.Times(2)

	for i := 0; i < 2; i++ {
		res, err := typ.Fetch(FetchOptions{MinIndex: uint64(i)}, nil)
		require.NoError(t, err)
		require.Equal(t, FetchResult{Value: 42, Index: 3}, res)
	}
	typ.AssertExpectations(t)
	typ.AssertNumberOfCalls(t, "Fetch", 2)
	require.Panics(t, func() { typ.Fetch(FetchOptions{}, nil) }, "a third call exceeds Times(2)")

	boom := errors.New("boom")
	errTyp := &MockType{}
	errTyp.Static(FetchResult{}, boom)
	res, err := errTyp.Fetch(FetchOptions{}, nil)
	require.Equal(t, boom, err)
	require.Equal(t, FetchResult{}, res)
}

// Pins func-valued Return: Fetch's result and error, SupportsBlocking and
// CacheInfo are computed from the call's arguments.
func TestHelper_FuncValuedReturns(t *testing.T) {
	req := &MockRequest{}
	n := 0
	req.On("CacheInfo").Return(func() RequestInfo {
		n++
		return RequestInfo{Key: fmt.Sprint("k", n)}
	})
	require.Equal(t, "k1", req.CacheInfo().Key)
	require.Equal(t, "k2", req.CacheInfo().Key)

	typ := &MockType{}
	typ.On("Fetch", mock.Anything, mock.Anything).Return(
		func(o FetchOptions, r Request) FetchResult {
			return FetchResult{Value: r.CacheInfo().Key, Index: o.MinIndex + 1}
		},
		func(o FetchOptions, _ Request) error {
			if o.MinIndex > 10 {
				return fmt.Errorf("too high: %d", o.MinIndex)
			}
			return nil
		})
	res, err := typ.Fetch(FetchOptions{MinIndex: 4}, req)
	require.NoError(t, err)
	require.Equal(t, FetchResult{Value: "k3", Index: 5}, res)
	_, err = typ.Fetch(FetchOptions{MinIndex: 11}, req)
	require.EqualError(t, err, "too high: 11")

	blocking := true
	typ.On("SupportsBlocking").Return(func() bool { return blocking })
	require.True(t, typ.SupportsBlocking())
	blocking = false
	require.False(t, typ.SupportsBlocking())

	// A plain value still works next to the func forms.
	plain := &MockType{}
	plain.On("SupportsBlocking").Return(true)
	plain.On("Fetch", mock.Anything, mock.Anything).Return(FetchResult{Value: "x"}, nil)
	require.True(t, plain.SupportsBlocking())
	res, err = plain.Fetch(FetchOptions{}, nil)
	require.NoError(t, err)
	require.Equal(t, "x", res.Value)
}

// Pins TestRequest and MockRequest.Reset: after Reset the old expectation and
// recorded calls are gone and new ones apply.
func TestHelper_MockRequestReset(t *testing.T) {
	info1 := RequestInfo{Key: "one", Datacenter: "dc1", MinIndex: 3}
	req := TestRequest(t, info1)
	require.Equal(t, info1, req.CacheInfo())
	req.AssertNumberOfCalls(t, "CacheInfo", 1)

	req.Reset()
	require.Empty(t, req.ExpectedCalls)
	require.Empty(t, req.Calls)
	require.Panics(t, func() { req.CacheInfo() }, "no expectation after Reset")

	req.Reset()
	info2 := RequestInfo{Key: "two", MaxAge: time.Second}
	req.On("CacheInfo").Return(info2)
	require.Equal(t, info2, req.CacheInfo())
	req.AssertNumberOfCalls(t, "CacheInfo", 1)
}

// Pins TestType and TestTypeNonBlocking: SupportsBlocking is true/false and
// optional (AssertExpectations passes without a call).
func TestHelper_TestTypeSupportsBlocking(t *testing.T) {
	b := TestType(t)
	b.AssertExpectations(t)
	require.True(t, b.SupportsBlocking())
	b.AssertExpectations(t)

	nb := TestTypeNonBlocking(t)
	nb.AssertExpectations(t)
	require.False(t, nb.SupportsBlocking())
	nb.AssertExpectations(t)
}

// Pins TestCache: a working cache that is closed by the test's cleanup.
func TestHelper_TestCacheClosedOnCleanup(t *testing.T) {
	ft := &recordingT{}
	c := TestCache(ft)
	require.NotNil(t, c)
	require.Len(t, ft.cleanups, 1)
	require.False(t, c.closed.Load())

	typ := TestType(t)
	typ.Static(FetchResult{Value: "v", Index: 1}, nil)
	c.RegisterType("t", typ, nil)
	v, _, err := c.Get("t", TestRequest(t, RequestInfo{Key: "k"}))
	require.NoError(t, err)
	require.Equal(t, "v", v)

	ft.runCleanups()
	require.True(t, c.closed.Load())
	select {
	case <-c.closing:
	default:
		t.Fatal("stop channel not closed")
	}
	require.False(t, ft.failed())
}

// Pins TestCacheGetCh (Consul's semantics): the channel receives the Get's
// value; a failed Get sends nothing, logs the error and closes the channel.
func TestHelper_TestCacheGetCh(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, boom := okAndBadCache(t)

		ft := &recordingT{}
		require.Equal(t, "v", <-TestCacheGetCh(ft, c, "ok", TestRequest(t, RequestInfo{Key: "k"})))
		ch := TestCacheGetCh(ft, c, "bad", TestRequest(t, RequestInfo{Key: "k"}))
		v, ok := <-ch
		require.False(t, ok, "closed, no value sent")
		require.Nil(t, v)
		require.False(t, ft.failed())
		require.Equal(t, []string{"Error: " + boom.Error()}, ft.logs)

		// With the check helper, on the real T: nil for the failed Get.
		TestCacheGetChResult(t, TestCacheGetCh(t, c, "ok", TestRequest(t, RequestInfo{Key: "k"})), "v")
		TestCacheGetChResult(t, TestCacheGetCh(t, c, "bad", TestRequest(t, RequestInfo{Key: "k"})), nil)

		ft = &recordingT{}
		TestCacheGetChResult(ft, TestCacheGetCh(ft, c, "bad", TestRequest(t, RequestInfo{Key: "k"})), "v")
		require.True(t, ft.failed(), "a failed Get is not the value")
	})
}

// Pins that TestCacheGetCh does not log once the test's cleanups started,
// which testing would turn into a panic after the test, and that its
// goroutine ends without a receiver (else the bubble could not end).
func TestHelper_TestCacheGetChNoLogAfterCleanup(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := TestCache(t)
		release := make(chan struct{})
		c.RegisterType("slow", FetchFunc(func(FetchOptions, Request) (FetchResult, error) {
			<-release
			return FetchResult{}, errors.New("late")
		}), nil)

		ft := &recordingT{}
		TestCacheGetCh(ft, c, "slow", TestRequest(t, RequestInfo{Key: "k"}))
		synctest.Wait()
		ft.runCleanups()
		close(release)
		synctest.Wait()
		require.Empty(t, ft.logs)
		require.False(t, ft.failed())
	})
}

// Pins TestCacheGetChErr: the channel receives the Get's value and meta, or
// its error.
func TestHelper_TestCacheGetChErr(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, boom := okAndBadCache(t)

		ft := &recordingT{}
		res := <-TestCacheGetChErr(ft, c, "ok", TestRequest(t, RequestInfo{Key: "k"}))
		require.Equal(t, TestGetResult{Value: "v", Meta: ResultMeta{Index: 1}}, res)
		res = <-TestCacheGetChErr(ft, c, "ok", TestRequest(t, RequestInfo{Key: "k"}))
		require.NoError(t, res.Err)
		require.True(t, res.Meta.Hit)
		res = <-TestCacheGetChErr(ft, c, "bad", TestRequest(t, RequestInfo{Key: "k"}))
		require.ErrorIs(t, res.Err, boom)
		require.Nil(t, res.Value)
		require.False(t, ft.failed())
		require.Empty(t, ft.logs)
	})
}

// okAndBadCache returns a test cache with a type "ok", whose Fetch returns
// "v" at index 1, and a type "bad", whose Fetch fails with the returned
// error.
func okAndBadCache(t *testing.T) (*Cache, error) {
	c := TestCache(t)
	ok := TestType(t)
	ok.Static(FetchResult{Value: "v", Index: 1}, nil)
	c.RegisterType("ok", ok, nil)
	boom := errors.New("boom")
	bad := TestType(t)
	bad.Static(FetchResult{}, boom)
	c.RegisterType("bad", bad, nil)
	return c, boom
}

// Pins TestCacheGetChResult: passes on an equal value, fails on a different
// one and when nothing arrives within its wait.
func TestHelper_TestCacheGetChResult(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		send := func(v any) <-chan any {
			ch := make(chan any, 1)
			ch <- v
			return ch
		}

		ft := &recordingT{}
		TestCacheGetChResult(ft, send([]int{1, 2}), []int{1, 2})
		require.False(t, ft.failed(), "deep-equal value passes")

		ft = &recordingT{}
		TestCacheGetChResult(ft, send("a"), "b")
		require.True(t, ft.failed(), "different value fails")

		// A value arriving within the wait passes.
		ft = &recordingT{}
		late := make(chan any, 1)
		go func() {
			time.Sleep(100 * time.Millisecond)
			late <- "x"
		}()
		TestCacheGetChResult(ft, late, "x")
		require.False(t, ft.failed())

		// Nothing within the wait fails, at ~150ms.
		ft = &recordingT{}
		start := time.Now()
		TestCacheGetChResult(ft, make(chan any), "x")
		require.True(t, ft.failed(), "timeout fails")
		require.Equal(t, testResultWait, time.Since(start))
	})
}

// Pins TestCacheNotifyChResult: order-insensitive, Age ignored, and failing
// on a missing, different or absent event.
func TestHelper_TestCacheNotifyChResult(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		evA := UpdateEvent{CorrelationID: "a", Result: "x", Meta: ResultMeta{Index: 1}}
		evB := UpdateEvent{CorrelationID: "b", Result: []string{"y"}, Meta: ResultMeta{Hit: true, Index: 2}}
		evErr := UpdateEvent{CorrelationID: "c", Err: errors.New("boom")}
		send := func(evs ...UpdateEvent) <-chan UpdateEvent {
			ch := make(chan UpdateEvent, len(evs))
			for _, ev := range evs {
				ch <- ev
			}
			return ch
		}
		aged := func(ev UpdateEvent, age time.Duration) UpdateEvent {
			ev.Meta.Age = age
			return ev
		}

		ft := &recordingT{}
		TestCacheNotifyChResult(ft, send(evA, evB, evErr), evA, evB, evErr)
		require.False(t, ft.failed(), "same order")

		ft = &recordingT{}
		TestCacheNotifyChResult(ft, send(evErr, evB, evA), evA, evB, evErr)
		require.False(t, ft.failed(), "any order")

		ft = &recordingT{}
		TestCacheNotifyChResult(ft, send(aged(evA, 5*time.Second), aged(evB, time.Hour)), evA, aged(evB, time.Minute))
		require.False(t, ft.failed(), "Age ignored on both sides")

		ft = &recordingT{}
		TestCacheNotifyChResult(ft, send(evA, evA), evA, evB)
		require.True(t, ft.failed(), "a duplicate is not the missing event")

		ft = &recordingT{}
		other := evA
		other.Meta.Index = 7
		TestCacheNotifyChResult(ft, send(other), evA)
		require.True(t, ft.failed(), "different index")

		ft = &recordingT{}
		start := time.Now()
		TestCacheNotifyChResult(ft, send(evA), evA, evB)
		require.True(t, ft.failed(), "missing event")
		require.Equal(t, testResultWait, time.Since(start), "fails after its wait")

		// No expected events is a misuse: Consul panics.
		require.PanicsWithValue(t, "asking for zero updates seems like a bug", func() { TestCacheNotifyChResult(&recordingT{}, send(evA)) })

		// Events arriving over time within the wait pass.
		ft = &recordingT{}
		ch := make(chan UpdateEvent)
		go func() {
			ch <- evB
			time.Sleep(100 * time.Millisecond)
			ch <- evA
		}()
		TestCacheNotifyChResult(ft, ch, evA, evB)
		require.False(t, ft.failed())
	})
}
