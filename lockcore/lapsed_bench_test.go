package lockcore

import (
	"fmt"
	"strings"
	"testing"

	"github.com/lockreactor/dflockd/codec"
)

// lapsedTable returns a one-shard table (one shard stands for any
// shard of the default 64) whose core.lapsed holds `fill` lapsed grants,
// made the production way: e, the lease runs out uncollected, GC prunes
// the idle key. The first maxLapsedOwn grants are lapsed by owner `by`
// (nil: one owner per grant), the rest by one owner each.
func lapsedTable(tb testing.TB, fill int, by *Owner, keyLen int) (*Table, *int64) {
	now := int64(1)
	tbl := fakeTable(Config{Shards: 1, DefaultLease: 1, GCMaxIdle: 1_000_000_000}, &now)
	for i := 0; i < fill; i++ {
		o := by
		if o == nil || i >= maxLapsedOwn {
			o = NewOwner(uint64(1000 + i))
		}
		name := lapsedName(i, keyLen)
		if r := tbl.Enqueue(o, Locks, name, 1, 1, now); r.Code != codec.CodeAcquired {
			tb.Fatalf("e: %v", r.Code)
		}
	}
	now += 2 * sec
	tbl.Advance(now)
	now += 2 * sec
	tbl.GC(now)
	if got := len(tbl.shards[0].c.lapsed); got != fill {
		tb.Fatalf("lapsed %d, want %d", got, fill)
	}
	return tbl, &now
}

func lapsedName(i, keyLen int) []byte {
	s := fmt.Sprintf("lapsed/%06d", i)
	if keyLen > len(s) {
		s = strings.Repeat("p", keyLen-len(s)) + s
	}
	return []byte(s)
}

// BenchmarkEnqueueWait: e (fast path acquired) + w + r by one
// owner on one key, with the shard's lapsed FIFO empty, full of other
// owners' grants, or full with the most of this owner's own it can hold
// (maxLapsedOwn) on keys of the same length: every e it sends afterwards
// scans the 64 and string-compares its own.
func BenchmarkEnqueueWait(b *testing.B) {
	for _, keyLen := range []int{16, 250} {
		for _, c := range []struct {
			name string
			fill int
			self bool
		}{{"empty", 0, false}, {"others64", 64, false}, {"self8others56", 64, true}} {
			b.Run(fmt.Sprintf("keylen=%d/%s", keyLen, c.name), func(b *testing.B) {
				me := NewOwner(1)
				var by *Owner
				if c.self {
					by = me
				}
				tbl, now := lapsedTable(b, c.fill, by, keyLen)
				key := lapsedName(999999, keyLen)
				b.ReportAllocs()
				for b.Loop() {
					r := tbl.Enqueue(me, Locks, key, 1, 30, *now)
					if r.Code != codec.CodeAcquired {
						b.Fatalf("e: %v", r.Code)
					}
					w := tbl.Wait(me, Locks, key, 0, nil, *now)
					if w.Code != codec.CodeOK {
						b.Fatalf("w: %v", w.Code)
					}
					if code := tbl.Release(Locks, key, w.Token, *now); code != codec.CodeOK {
						b.Fatalf("r: %v", code)
					}
				}
			})
		}
	}
}

// BenchmarkTwoPhaseOwnerHolds: e + w + r by an owner that holds `held`
// semaphore slots on other keys of the same shard (1024 keys × 1024 slots
// is what the default --max-locks and --max-semaphore-limit allow one
// connection). Finding the owner's two-phase entry walked everything the
// owner had in the shard; it must not depend on held.
func BenchmarkTwoPhaseOwnerHolds(b *testing.B) {
	for _, held := range []int{0, 1024, 65536} {
		b.Run(fmt.Sprintf("held=%d", held), func(b *testing.B) {
			now := int64(1)
			tbl := fakeTable(Config{Shards: 1, DefaultLease: 3600, MaxLocks: 2048}, &now)
			me := NewOwner(1)
			const limit = 1024
			for i := 0; i < held; i++ {
				name := fmt.Appendf(nil, "held/%04d", i/limit)
				if r := tbl.Acquire(me, Semaphores, name, 0, limit, 3600, nil, now); r.Code != codec.CodeOK {
					b.Fatalf("sl %d: %v", i, r.Code)
				}
			}
			key := []byte("twophase")
			b.ReportAllocs()
			for b.Loop() {
				r := tbl.Enqueue(me, Locks, key, 1, 30, now)
				if r.Code != codec.CodeAcquired {
					b.Fatalf("e: %v", r.Code)
				}
				w := tbl.Wait(me, Locks, key, 0, nil, now)
				if w.Code != codec.CodeOK {
					b.Fatalf("w: %v", w.Code)
				}
				if code := tbl.Release(Locks, key, w.Token, now); code != codec.CodeOK {
					b.Fatalf("r: %v", code)
				}
			}
		})
	}
}
