package main

import (
	"testing"
	"time"
)

func TestBucketBounds(t *testing.T) {
	for _, d := range []time.Duration{0, 1, 3, 4, 5, 7, 8, 100, 999, time.Microsecond, 1234567, time.Second, time.Hour} {
		b := bucket(d)
		if d > upperBound(b) {
			t.Fatalf("%v is above the bound %v of its bucket %d", d, upperBound(b), b)
		}
		if b > 0 && d <= upperBound(b-1) {
			t.Fatalf("%v fits the bucket below its own (%d)", d, b)
		}
	}
}

func TestPercentiles(t *testing.T) {
	var h histogram
	for i := 1; i <= 100; i++ {
		h.record(time.Duration(i) * time.Microsecond)
	}
	p := percentiles(h.snapshot(), 0.5, 0.99)
	if p[0] < 50*time.Microsecond || p[0] > 60*time.Microsecond {
		t.Fatalf("p50 %v, want about 50µs", p[0])
	}
	if p[1] < 99*time.Microsecond || p[1] > 120*time.Microsecond {
		t.Fatalf("p99 %v, want about 99µs", p[1])
	}
	if got := time.Duration(h.max.Load()); got != 100*time.Microsecond {
		t.Fatalf("max %v", got)
	}
}
