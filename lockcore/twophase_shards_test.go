package lockcore

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/lockreactor/dflockd/codec"
)

// The shrink keys off one shard's peak, and the table has 64 shards by
// default: with a threshold of 4096 per shard, a burst spread over the
// shards below it (up to 64 × 4096 entries in all) was never given back
// (6.7 MB kept here). Same workload as TestTwoPhaseIndexShrinksAfterBurst,
// with the default shard count and 50 connections × 4096 keys (204,800
// entries, ~3,200 per shard).
func TestTwoPhaseIndexShrinksDefaultShards(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates ~60 MB")
	}
	const conns, keys = 50, 4096
	now := int64(sec)
	tbl := fakeTable(Config{ /* Shards: default 64 */ DefaultLease: 3600, GCMaxIdle: durationOf(sec)}, &now)
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	before := heap()
	maxPeak := 0
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
		for i := range tbl.shards {
			maxPeak = max(maxPeak, tbl.shards[i].c.twoPhasePeak)
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
	rebuilt := 0
	for i := range tbl.shards {
		if tbl.shards[i].c.twoPhasePeak <= minTwoPhaseShrink {
			rebuilt++
		}
	}
	retained := int64(heap()) - int64(before)
	// What the emptied indexes alone hold: swap in fresh maps and measure
	// again (the rest is the shards' free lists, bounded at 1024 nodes
	// each by design, and the other per-shard maps).
	for i := range tbl.shards {
		tbl.shards[i].c.twoPhase = make(map[ownerKey]*node)
	}
	index := retained - (int64(heap()) - int64(before))
	t.Logf("of which the emptied two-phase indexes: %.1f MB", float64(index)/(1<<20))
	t.Logf("burst of %d two-phase entries over %d shards (largest shard peak %d): %d shards rebuilt; heap +%.1f MB over the start",
		conns*keys, len(tbl.shards), maxPeak, rebuilt, float64(retained)/(1<<20))
	if index > 4<<20 {
		t.Errorf("after the burst ended (no key, no owner, no entry left) the %d shards' empty two-phase indexes still hold %.1f MB (%.0f B per entry of the burst): a burst spread over the default 64 shards is not given back",
			len(tbl.shards), float64(index)/(1<<20), float64(index)/float64(conns*keys))
	}
	runtime.KeepAlive(tbl)
}
