package main

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// reporter prints the status lines and the summary.
type reporter struct {
	out     io.Writer
	tally   *tally
	w       *workload
	started time.Time
	prevLat []uint64 // latency buckets at the last status line
	prevEvt int64    // Notify events at the last status line

	// extra, if set, adds rows at the end of the summary, given the
	// writes to etcd.
	extra func(row func(name, value, note string), writes float64)
}

// status prints one line about the last whole second.
func (r *reporter) status() {
	last, lastStart, _ := r.tally.update()
	lat := r.w.latency.snapshot()
	window := lat
	if r.prevLat != nil {
		window = minus(lat, r.prevLat)
	}
	r.prevLat = lat
	if lastStart.Before(r.started) {
		return // the second began before the workload: nothing to say yet
	}
	p := percentiles(window, 0.50, 0.99)

	events := r.w.events.Load()
	newEvents := events - r.prevEvt
	r.prevEvt = events

	gets := last.gets("kv")
	fmt.Fprintf(r.out, "%4s  gets/s %9s  hit %8s  fetches/s %3.0f (total %5s)  notify/s %3d (total %5s)  Get p50 %-7s p99 %s\n",
		time.Since(r.started).Round(time.Second),
		group(gets),
		ratio(last[cacheCounter("kv", "hit")], gets),
		last.fetches(""),
		group(r.tally.total.fetches("")),
		newEvents,
		group(float64(events)),
		round(p[0]), round(p[1]))
}

// summary prints the final table.
func (r *reporter) summary(o options, backend string) {
	_, _, current := r.tally.update()
	total := r.tally.total.plus(current)
	elapsed := time.Since(r.started)
	perSec := func(v float64) string { return group(v/elapsed.Seconds()) + "/s" }

	gets := total.gets("kv")
	fetches := total.fetches("")
	lat := r.w.latency.snapshot()
	p := percentiles(lat, 0.50, 0.99)

	fmt.Fprintf(r.out, "\nsummary: %d readers on %d keys, %.4g writes/s, %s, against %s\n\n",
		o.readers, o.keys, o.writesPerSec, elapsed.Round(10*time.Millisecond), backend)
	row := func(name, value, note string) {
		line := fmt.Sprintf("  %-30s %14s  %s", name, value, note)
		fmt.Fprintln(r.out, strings.TrimRight(line, " "))
	}
	row("client Gets (kv)", group(gets), perSec(gets))
	row("  cache hits", group(total[cacheCounter("kv", "hit")]), ratio(total[cacheCounter("kv", "hit")], gets))
	row("  misses, new entry", group(total[cacheCounter("kv", "miss_new")]), "")
	row("  misses, blocking", group(total[cacheCounter("kv", "miss_block")]), "")
	row("  Get errors", group(float64(r.w.getErrors.Load())), "")
	row("backend fetches (all types)", group(fetches), perSec(fetches))
	row("  kv", group(total.fetches("kv")), "")
	row("  prefix", group(total.fetches("prefix")), "")
	row("  failed", group(total[cacheCounter("fetch_error")]), "")
	row("Gets per backend fetch", group(gets/max(fetches, 1)), "")
	row("writes to etcd", group(float64(r.w.writes.Load())), "")
	row("Notify events (prefix)", group(float64(r.w.events.Load())), "")
	row("Get latency p50 / p99 / max", fmt.Sprintf("%s / %s / %s", round(p[0]), round(p[1]), round(time.Duration(r.w.latency.max.Load()))), "")
	if r.extra != nil {
		r.extra(row, float64(r.w.writes.Load()))
	}
}

// group formats a count with thousands separators.
func group(v float64) string {
	s := fmt.Sprintf("%.0f", v)
	neg := len(s) > 0 && s[0] == '-'
	if neg {
		s = s[1:]
	}
	out := ""
	for len(s) > 3 {
		out = "," + s[len(s)-3:] + out
		s = s[:len(s)-3]
	}
	if neg {
		s = "-" + s
	}
	return s + out
}

// ratio formats part/whole as a percentage.
func ratio(part, whole float64) string {
	if whole == 0 {
		return "-"
	}
	return fmt.Sprintf("%.3f%%", 100*part/whole)
}

// round shortens a latency for display.
func round(d time.Duration) string {
	switch {
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond).String()
	case d >= time.Microsecond:
		return d.Round(10 * time.Nanosecond).String()
	}
	return d.String()
}
