package main

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// subBuckets splits each power of two of nanoseconds into this many
// buckets, so a reported percentile is within about 19% of the truth.
const subBuckets = 4

// histogram is a lock-free latency histogram with logarithmic buckets.
type histogram struct {
	counts [64 * subBuckets]atomic.Uint64
	max    atomic.Int64
}

// bucket returns the bucket of a duration.
func bucket(d time.Duration) int {
	ns := uint64(d)
	if ns < subBuckets {
		return int(ns)
	}
	exp := bits.Len64(ns) - 1 // ns is in [2^exp, 2^(exp+1)), exp >= 2
	frac := (ns >> (exp - 2)) & (subBuckets - 1)
	return (exp-1)*subBuckets + int(frac)
}

// upperBound returns the largest duration that falls in bucket b.
func upperBound(b int) time.Duration {
	if b < subBuckets {
		return time.Duration(b)
	}
	exp, frac := b/subBuckets+1, uint64(b%subBuckets)
	lo := uint64(1)<<exp + frac<<(exp-2)
	return time.Duration(lo + 1<<(exp-2) - 1)
}

// record adds one observation.
func (h *histogram) record(d time.Duration) {
	h.counts[bucket(d)].Add(1)
	for {
		m := h.max.Load()
		if int64(d) <= m || h.max.CompareAndSwap(m, int64(d)) {
			return
		}
	}
}

// snapshot returns the bucket counts.
func (h *histogram) snapshot() []uint64 {
	out := make([]uint64, len(h.counts))
	for i := range h.counts {
		out[i] = h.counts[i].Load()
	}
	return out
}

// percentiles returns, for each quantile q in (0, 1], the upper bound of
// the bucket holding it; zero when there are no observations.
func percentiles(counts []uint64, qs ...float64) []time.Duration {
	var total uint64
	for _, n := range counts {
		total += n
	}
	out := make([]time.Duration, len(qs))
	if total == 0 {
		return out
	}
	for i, q := range qs {
		rank := uint64(q*float64(total) + 0.5)
		if rank < 1 {
			rank = 1
		}
		var seen uint64
		for b, n := range counts {
			seen += n
			if seen >= rank {
				out[i] = upperBound(b)
				break
			}
		}
	}
	return out
}

// minus returns a-b bucket by bucket: the observations made between two
// snapshots.
func minus(a, b []uint64) []uint64 {
	out := make([]uint64, len(a))
	for i := range a {
		out[i] = a[i] - b[i]
	}
	return out
}
