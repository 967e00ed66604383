package lockcore

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/codec"
)

// review8FireCost fills one semaphore (limit 1024) with 1024 holders whose
// 1 s leases end on distinct 1 ms ticks, queues w two-phase waiters (one
// `se` each from w distinct connections: nothing bounds w with the default
// --max-waiters 0), and returns how long the timer driver's Advance takes
// to run 2.5 s of the key's expiries (each expiry grants the next waiter,
// whose 1 s lease then expires too).
func review8FireCost(t *testing.T, w int) (time.Duration, int64) {
	var now int64
	tbl := fakeTable(Config{MaxSemaphoreLimit: 1024}, &now)
	name := []byte("S")
	for i := range 1024 {
		now = int64(i) * msec
		r := tbl.Acquire(NewOwner(uint64(i+1)), Semaphores, name, 0, 1024, 1, nil, now)
		require.Equal(t, codec.CodeOK, r.Code)
	}
	for i := range w {
		r := tbl.Enqueue(NewOwner(uint64(10_000+i)), Semaphores, name, 1024, 1, now)
		require.Equal(t, codec.CodeQueued, r.Code)
	}
	start := time.Now()
	var fired int64
	for now = 1000 * msec; now < 3500*msec; now += msec {
		tbl.Advance(now)
		fired++
	}
	return time.Since(start), int64(tbl.Counters().Expiries[Semaphores])
}

// TestReview8LimitsFireCostGrowsWithWaiters: core.fire walks every holder
// and every waiter of the key on each lease end (to order same-tick
// events), so with staggered leases the timer driver -- one goroutine for
// the whole table -- pays O(holders + waiters) per expiry. Suspicion of a
// CPU amplification: it compares w = 8000 waiters with w = 0.
func TestReview8LimitsFireCostGrowsWithWaiters(t *testing.T) {
	base, e0 := review8FireCost(t, 0)
	loaded, e1 := review8FireCost(t, 8000)
	t.Logf("2.5 s of expiries of one semaphore key: %v with no waiters (%d expiries), %v with 8000 two-phase waiters (%d expiries): %.0f µs vs %.0f µs per expiry",
		base, e0, loaded, e1, float64(base.Microseconds())/float64(max(e0, 1)), float64(loaded.Microseconds())/float64(max(e1, 1)))
}
