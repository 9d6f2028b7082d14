package redistier

import (
	"sync/atomic"

	metrics "github.com/armon/go-metrics"
)

// Stats are a tier's counters since Wrap. Each is also reported through
// go-metrics as <prefix>.<Name>.redis.<name>, with the name given in its
// comment.
type Stats struct {
	SharedHits    uint64 // shared_hit: fetches answered from Redis without a backend call
	LeaseWins     uint64 // lease_win: fetches that took the lease and called the backend
	Waits         uint64 // wait: waits for another instance's fetch
	Fallbacks     uint64 // fallback: backend calls made directly because Redis failed or was down
	Direct        uint64 // direct: backend calls without the lease, while another instance's blocking query held it and no usable record was there
	BackendCalls  uint64 // backend_call: calls of the wrapped Type, for any reason
	RemoteErrors  uint64 // remote_error: backend errors received from another instance
	PublishErrors uint64 // publish_error: records or notices that could not be written or published
	DecodeErrors  uint64 // decode_error: records or publications that could not be decoded or were not the partition's
	EncodeErrors  uint64 // encode_error: values the Codec could not encode (not shared)
	LeasesLost    uint64 // lease_lost: leases found taken by another owner while their fetch ran
}

// counter is one of a tier's counters.
type counter int

const (
	cSharedHit counter = iota
	cLeaseWin
	cWait
	cFallback
	cDirect
	cBackendCall
	cRemoteError
	cPublishError
	cDecodeError
	cEncodeError
	cLeaseLost
	numCounters
)

var counterNames = [numCounters]string{
	"shared_hit", "lease_win", "wait", "fallback", "direct", "backend_call",
	"remote_error", "publish_error", "decode_error", "encode_error", "lease_lost",
}

// tierMetrics counts a tier's events and reports them to go-metrics.
type tierMetrics struct {
	m      *metrics.Metrics // nil: the global instance
	keys   [numCounters][]string
	counts [numCounters]atomic.Uint64
}

func (tm *tierMetrics) init(o *Options) {
	tm.m = o.Metrics
	for i, n := range counterNames {
		k := append([]string(nil), o.MetricsPrefix...)
		tm.keys[i] = append(k, o.Name, "redis", n)
	}
}

func (tm *tierMetrics) incr(c counter) {
	tm.counts[c].Add(1)
	if tm.m != nil {
		tm.m.IncrCounter(tm.keys[c], 1)
	} else {
		metrics.IncrCounter(tm.keys[c], 1)
	}
}

func (tm *tierMetrics) stats() Stats {
	g := func(c counter) uint64 { return tm.counts[c].Load() }
	return Stats{
		SharedHits: g(cSharedHit), LeaseWins: g(cLeaseWin), Waits: g(cWait),
		Fallbacks: g(cFallback), Direct: g(cDirect), BackendCalls: g(cBackendCall),
		RemoteErrors: g(cRemoteError), PublishErrors: g(cPublishError),
		DecodeErrors: g(cDecodeError), EncodeErrors: g(cEncodeError), LeasesLost: g(cLeaseLost),
	}
}
