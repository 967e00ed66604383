package lockcore

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/lockreactor/dflockd/codec"
)

// The two-phase index gives back what a burst made it grow to. 300
// connections each `e` on the same 1000 held lock keys (300,000 queued
// two-phase entries in one shard: within the default caps), then all close
// and the keys go. Go maps never shrink: the emptied index kept ~14 MB
// (~47 B per entry of the burst) for the life of the process, until
// clearTwoPhase rebuilt it once down to a quarter of its peak.
func TestTwoPhaseIndexShrinksAfterBurst(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates ~70 MB")
	}
	const conns, keys = 300, 1000
	now := int64(sec)
	tbl := fakeTable(Config{Shards: 1, DefaultLease: 3600, GCMaxIdle: durationOf(sec)}, &now)
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	before := heap()
	func() {
		h := NewOwner(1)
		toks := make([]codec.Token, keys)
		name := func(i int) []byte { return fmt.Appendf(nil, "k%04d", i) }
		for i := range keys {
			toks[i] = tbl.Acquire(h, Locks, name(i), 0, 1, 3600, nil, now).Token
		}
		owners := make([]*Owner, conns)
		for c := range owners {
			owners[c] = NewOwner(uint64(c + 2))
			for i := range keys {
				if r := tbl.Enqueue(owners[c], Locks, name(i), 1, 0, now); r.Code != codec.CodeQueued {
					t.Fatal(r.Code)
				}
			}
		}
		for _, o := range owners {
			tbl.CloseOwner(o, now)
		}
		for i := range keys {
			tbl.Release(Locks, name(i), toks[i], now)
		}
		tbl.CloseOwner(h, now)
		now += 2 * sec
		tbl.GC(now)
	}()
	if err := tbl.CheckInvariants(); err != nil {
		t.Fatal(err)
	}
	if n := twoPhaseIndexLen(tbl); n != 0 {
		t.Fatalf("%d index entries left", n)
	}
	retained := int64(heap()) - int64(before)
	t.Logf("burst of %d two-phase entries, all gone: heap +%.1f MB over the start", conns*keys, float64(retained)/(1<<20))
	if retained > 4<<20 {
		t.Errorf("after the burst ended (no key, no owner, no entry left) the shard still holds %.1f MB (%.0f B per entry of the burst)",
			float64(retained)/(1<<20), float64(retained)/float64(conns*keys))
	}
	runtime.KeepAlive(tbl)
}
