//go:build !race

package reactor_test

import (
	"runtime"
	"testing"
)

// TestRequestPathAllocs: with request metrics on, a lock round trip (two
// requests) allocates nothing on the server. Allocations are counted
// process-wide, so background work (timer ticks) may add a few over the
// run; one allocation per request would show as >= 1 per op.
func TestRequestPathAllocs(t *testing.T) {
	op := lockRoundTrip(t, true)
	for range 200 { // warm up: buffers, free lists, the key
		op()
	}
	const n = 2000
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range n {
		op()
	}
	runtime.ReadMemStats(&after)
	if perOp := float64(after.Mallocs-before.Mallocs) / n; perOp > 0.5 {
		t.Fatalf("%.2f allocations per acquire + release with metrics on, want ~0", perOp)
	}
}
