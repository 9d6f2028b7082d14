package main

import (
	"time"

	metrics "github.com/armon/go-metrics"
)

// counts maps counter names, as the sink records them, to sums.
type counts map[string]float64

// cacheCounter returns the sink's name for one of the cache's counters:
// its key parts joined with dots. No host or service name is prepended,
// since the demo configures go-metrics without either.
func cacheCounter(parts ...string) string {
	name := "consul.cache"
	for _, p := range parts {
		name += "." + p
	}
	return name
}

// gets returns the Gets the cache served for a type.
func (c counts) gets(typ string) float64 {
	return c[cacheCounter(typ, "hit")] + c[cacheCounter(typ, "miss_new")] + c[cacheCounter(typ, "miss_block")]
}

// fetches returns the backend fetches of a type, or of every type when
// typ is empty.
func (c counts) fetches(typ string) float64 {
	if typ == "" {
		return c[cacheCounter("fetch_success")] + c[cacheCounter("fetch_error")]
	}
	return c[cacheCounter(typ, "fetch_success")] + c[cacheCounter(typ, "fetch_error")]
}

// plus returns the sum of two sets of counts.
func (c counts) plus(o counts) counts {
	out := counts{}
	for k, v := range c {
		out[k] += v
	}
	for k, v := range o {
		out[k] += v
	}
	return out
}

// tally reads counters out of an InmemSink. The sink keeps per-interval
// sums for a limited time only; tally folds every finished interval into a
// running total, so the total covers the whole run as long as update is
// called more often than the sink's retention.
type tally struct {
	sink   *metrics.InmemSink
	folded time.Time // start of the last interval folded into total
	total  counts
}

// newTally returns a tally of the sink's counters.
func newTally(sink *metrics.InmemSink) *tally {
	return &tally{sink: sink, total: counts{}}
}

// update folds the intervals that finished since the last call into the
// total. It returns the counts of the latest finished interval, the time
// that interval started, and the counts of the interval in progress.
func (t *tally) update() (last counts, lastStart time.Time, current counts) {
	data := t.sink.Data()
	last = counts{}
	for i, intv := range data {
		c := read(intv)
		switch {
		case i == len(data)-1:
			current = c
		case i == len(data)-2:
			last, lastStart = c, intv.Interval
		}
		if i < len(data)-1 && intv.Interval.After(t.folded) {
			t.total = t.total.plus(c)
			t.folded = intv.Interval
		}
	}
	return last, lastStart, current
}

// read returns the counters of one interval.
func read(intv *metrics.IntervalMetrics) counts {
	intv.RLock()
	defer intv.RUnlock()
	out := make(counts, len(intv.Counters))
	for name, v := range intv.Counters {
		if v.AggregateSample != nil {
			out[name] = v.Sum
		}
	}
	return out
}
