package lockcore

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/lockreactor/dflockd/codec"
)

// The two-phase index gives back what a burst made it grow to. Many
// connections each `e` on the same held lock keys (within the default
// caps), then all close and the keys go. Go maps never shrink: in one
// shard the emptied index kept ~14 MB (~47 B per entry of the burst) for
// the life of the process, until clearTwoPhase rebuilt it once down to a
// quarter of its peak; spread over the default 64 shards below a
// per-shard threshold of 4096, 6.7 MB stayed until the threshold went
// down to 256.
func TestTwoPhaseIndexShrinksAfterBurst(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates ~70 MB")
	}
	for _, c := range []struct {
		name        string
		shards      int
		conns, keys int
	}{
		{"one shard", 1, 300, 1000},
		{"default shards", 0, 50, 4096},
	} {
		t.Run(c.name, func(t *testing.T) {
			now := int64(sec)
			tbl := fakeTable(Config{Shards: c.shards, DefaultLease: 3600, GCMaxIdle: durationOf(sec)}, &now)
			heap := func() int64 {
				runtime.GC()
				runtime.GC()
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				return int64(ms.HeapAlloc)
			}
			before := heap()
			twoPhaseBurst(t, tbl, &now, c.conns, c.keys)
			if err := tbl.CheckInvariants(); err != nil {
				t.Fatal(err)
			}
			if n := twoPhaseIndexLen(tbl); n != 0 {
				t.Fatalf("%d index entries left", n)
			}
			retained := heap() - before
			// What the emptied indexes alone hold: swap in fresh maps and
			// measure again (the rest is the shards' free lists, bounded
			// at 1024 nodes each by design).
			for i := range tbl.shards {
				tbl.shards[i].c.twoPhase = make(map[ownerKey]*node)
			}
			index := retained - (heap() - before)
			entries := c.conns * c.keys
			t.Logf("burst of %d two-phase entries over %d shards, all gone: heap +%.1f MB, of which the indexes %.1f MB",
				entries, len(tbl.shards), float64(retained)/(1<<20), float64(index)/(1<<20))
			if index > 4<<20 {
				t.Errorf("after the burst ended (no key, no owner, no entry left) the empty two-phase indexes hold %.1f MB (%.0f B per entry of the burst)",
					float64(index)/(1<<20), float64(index)/float64(entries))
			}
			runtime.KeepAlive(tbl)
		})
	}
}

// twoPhaseBurst: one owner holds keys locks, conns owners each `e` on
// all of them, then every owner closes, the locks are released and GC
// prunes the keys.
func twoPhaseBurst(t *testing.T, tbl *Table, now *int64, conns, keys int) {
	t.Helper()
	h := NewOwner(1)
	toks := make([]codec.Token, keys)
	name := func(i int) []byte { return fmt.Appendf(nil, "k%04d", i) }
	for i := range keys {
		toks[i] = tbl.Acquire(h, Locks, name(i), 0, 1, 3600, nil, *now).Token
	}
	owners := make([]*Owner, conns)
	for c := range owners {
		owners[c] = NewOwner(uint64(c + 2))
		for i := range keys {
			if r := tbl.Enqueue(owners[c], Locks, name(i), 1, 0, *now); r.Code != codec.CodeQueued {
				t.Fatal(r.Code)
			}
		}
	}
	for _, o := range owners {
		tbl.CloseOwner(o, *now)
	}
	for i := range keys {
		tbl.Release(Locks, name(i), toks[i], *now)
	}
	tbl.CloseOwner(h, *now)
	*now += 2 * sec
	tbl.GC(*now)
}
