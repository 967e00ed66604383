package lockcore

import (
	"fmt"
	"testing"

	"github.com/lockreactor/dflockd/codec"
)

// namesInShards returns n key names of namespace ns whose shards are given
// by want (a shard index per name).
func namesInShards(t *testing.T, tbl *Table, ns Namespace, want ...int) []string {
	t.Helper()
	out := make([]string, len(want))
	used := map[string]bool{}
	for i, sh := range want {
		for j := 0; ; j++ {
			name := fmt.Sprintf("k%d", j)
			if !used[name] && tbl.shardIndex(ns, name) == sh {
				out[i] = name
				used[name] = true
				break
			}
		}
	}
	return out
}

func TestMaxLocksReclaimsThisShardFirstThenOthers(t *testing.T) {
	now := int64(0)
	tbl := fakeTable(Config{Shards: 4, MaxLocks: 3}, &now)
	o := NewOwner(1)
	// x0, x1 in shard 1; y0 in shard 2; z in shard 2 (new key).
	n := namesInShards(t, tbl, Locks, 1, 1, 2, 2, 3)
	x0, x1, y0, z, w := n[0], n[1], n[2], n[3], n[4]
	acq := func(name string) codec.Token {
		t.Helper()
		r := tbl.Acquire(o, Locks, []byte(name), 0, 1, 0, nil, now)
		if r.Code != codec.CodeOK {
			t.Fatalf("acquire %s: %v", name, fmtRes(r))
		}
		return r.Token
	}
	rel := func(name string, tok codec.Token) {
		t.Helper()
		if c := tbl.Release(Locks, []byte(name), tok, now); c != codec.CodeOK {
			t.Fatalf("release %s: %v", name, c)
		}
	}
	tx0, tx1, ty0 := acq(x0), acq(x1), acq(y0)
	now = 1 * sec
	rel(x0, tx0) // shard 1, oldest idle
	now = 2 * sec
	rel(x1, tx1) // shard 1
	now = 3 * sec
	rel(y0, ty0) // shard 2, youngest idle
	// z hashes to shard 2: its own shard's idle key y0 goes first, although
	// x0 is older.
	acq(z)
	if tbl.findKey(Locks, y0) != nil || tbl.findKey(Locks, x0) == nil {
		t.Fatalf("reclaimed the wrong key: %s", tbl.dump())
	}
	// w hashes to shard 3, which has no idle key: the oldest of shard 1.
	acq(w)
	if tbl.findKey(Locks, x0) != nil || tbl.findKey(Locks, x1) == nil {
		t.Fatalf("reclaimed the wrong key: %s", tbl.dump())
	}
	// Nothing idle any more.
	if r := tbl.Enqueue(o, Semaphores, []byte(x0), 2, 0, now); r.Code != codec.CodeOK && r.Code != codec.CodeAcquired {
		t.Fatalf("enqueue after reclaiming x1: %v", fmtRes(r))
	}
	if r := tbl.Acquire(o, Locks, []byte("fresh"), 5, 1, 0, nil, now); r.Code != codec.CodeErrorMaxLocks {
		t.Fatalf("acquire at the cap: %v", fmtRes(r))
	}
	if tbl.Keys() != 3 {
		t.Fatalf("Keys() = %d", tbl.Keys())
	}
	mustInvariants(t, tbl)
}

// A session never sends a second w while one is parked; if a caller does
// anyway, the parked w must keep its one completion and the wheel must stay
// intact.
func TestWaitWhileParked(t *testing.T) {
	now := int64(0)
	tbl := fakeTable(Config{Shards: 2}, &now)
	o1, o2 := NewOwner(1), NewOwner(2)
	tok := tbl.Acquire(o1, Locks, []byte("a"), 0, 1, 0, nil, now).Token
	if r := tbl.Enqueue(o2, Locks, []byte("a"), 1, 0, now); r.Code != codec.CodeQueued {
		t.Fatalf("enqueue: %v", fmtRes(r))
	}
	first := &rec{tbl: tbl}
	if r := tbl.Wait(o2, Locks, []byte("a"), 5, first, now); !r.Parked {
		t.Fatalf("wait: %v", fmtRes(r))
	}
	for _, timeout := range []int64{0, 3} {
		second := &rec{tbl: tbl}
		r := tbl.Wait(o2, Locks, []byte("a"), timeout, second, now)
		if r.Parked || r.Code != codec.CodeError {
			t.Fatalf("second wait (timeout %d): %v, want error", timeout, fmtRes(r))
		}
		mustInvariants(t, tbl)
	}
	tbl.Release(Locks, []byte("a"), tok, now)
	if len(first.results) != 1 || first.results[0].Code != codec.CodeOK {
		t.Fatalf("first wait got %v", first.results)
	}
	mustInvariants(t, tbl)
}

func TestShardsRoundedToPowerOfTwo(t *testing.T) {
	for _, c := range []struct{ in, want int }{{0, 64}, {-3, 64}, {1, 1}, {2, 2}, {3, 4}, {5, 8}, {64, 64}, {65, 128}} {
		now := int64(0)
		if got := len(fakeTable(Config{Shards: c.in}, &now).shards); got != c.want {
			t.Errorf("Shards %d: %d shards, want %d", c.in, got, c.want)
		}
	}
}

// Many timers due in one shard at once: Advance fires them all, in
// budget-sized batches, and delivers every completion.
func TestAdvanceManyDueAtOnce(t *testing.T) {
	now := int64(0)
	tbl := fakeTable(Config{Shards: 1}, &now)
	const n = 3 * advanceBudget
	holder := NewOwner(1)
	var recs []*rec
	for i := range n {
		k := fmt.Appendf(nil, "k%d", i)
		tbl.Acquire(holder, Locks, k, 0, 1, 2, nil, now)
		r := &rec{tbl: tbl}
		if res := tbl.Acquire(NewOwner(uint64(i+2)), Locks, k, 1, 1, 0, r, now); !res.Parked {
			t.Fatal("not parked")
		}
		recs = append(recs, r)
	}
	w := &rec{tbl: tbl}
	tbl.Acquire(NewOwner(99999), Locks, []byte("k0"), 1, 1, 0, w, now) // behind rec 0
	now = 1 * sec
	tbl.Advance(now) // every waiter's timeout
	for i, r := range recs {
		if len(r.results) != 1 || r.results[0].Code != codec.CodeTimeout {
			t.Fatalf("waiter %d: %v", i, r.results)
		}
	}
	if len(w.results) != 1 {
		t.Fatal("last waiter not resolved")
	}
	mustInvariants(t, tbl)
	now = 2 * sec
	tbl.Advance(now) // every lease
	if st := tbl.Stats(now); len(st.Locks) != 0 || len(st.IdleLocks) != n {
		t.Fatalf("after the leases ended: %d busy, %d idle", len(st.Locks), len(st.IdleLocks))
	}
	if tbl.wheelLen() != 0 {
		t.Fatal("timers left")
	}
	mustInvariants(t, tbl)
}

// Owner objects may be pooled: after CloseOwner, Init makes the same
// object a fresh owner.
func TestOwnerReuseAfterClose(t *testing.T) {
	now := int64(0)
	tbl := fakeTable(Config{Shards: 8, AutoRelease: true}, &now)
	o := NewOwner(1)
	for i := range 20 {
		tbl.Acquire(o, Locks, fmt.Appendf(nil, "k%d", i), 0, 1, 0, nil, now)
		tbl.Enqueue(o, Semaphores, fmt.Appendf(nil, "k%d", i), 2, 0, now)
	}
	tbl.CloseOwner(o, now)
	if o.touched.Load() != 0 {
		t.Fatal("touched bits left after close")
	}
	mustInvariants(t, tbl)
	o.Init(2)
	if o.ID() != 2 {
		t.Fatal("ID after Init")
	}
	r := tbl.Acquire(o, Locks, []byte("k3"), 0, 1, 0, nil, now)
	if r.Code != codec.CodeOK {
		t.Fatalf("acquire after reuse: %v", fmtRes(r))
	}
	if st := tbl.Stats(now); st.Locks[0].OwnerConnID != 2 {
		t.Fatalf("owner id %d", st.Locks[0].OwnerConnID)
	}
	tbl.CloseOwner(o, now)
	mustInvariants(t, tbl)
	if tbl.wheelLen() != 0 {
		t.Fatal("timers left")
	}
}

// TestStatsTombstoneOnlyKeysIdle: a key named only by a two-phase
// tombstone (an expired grant its owner has not collected with w) has no
// holder and no waiter: stats lists it as idle (it is prunable and
// reclaimable like any idle key), not as held by anyone.
func TestStatsTombstoneOnlyKeysIdle(t *testing.T) {
	now := int64(0)
	tbl := fakeTable(Config{Shards: 4}, &now)
	for _, ns := range []Namespace{Locks, Semaphores} {
		o := NewOwner(7)
		if r := tbl.Enqueue(o, ns, []byte("t"), 2, 1, now); r.Code != codec.CodeAcquired {
			t.Fatalf("enqueue: %v", fmtRes(r))
		}
	}
	st := tbl.Stats(now)
	if len(st.Locks) != 1 || st.Locks[0].OwnerConnID != 7 || len(st.Semaphores) != 1 || st.Semaphores[0].Holders != 1 {
		t.Fatalf("while held: %+v", st)
	}
	now = 2 * sec
	tbl.Advance(now) // both leases end; the grants become tombstones
	st = tbl.Stats(now)
	if len(st.Locks)+len(st.Semaphores) != 0 || len(st.IdleLocks) != 1 || len(st.IdleSemaphores) != 1 ||
		st.IdleLocks[0].Key != "t" || st.IdleSemaphores[0].Key != "t" {
		t.Fatalf("tombstone-only keys not listed as idle: %+v", st)
	}
	mustInvariants(t, tbl)
}

// A release served with a clock reading older than a waiter's arrival (the
// releaser read now, then another goroutine parked the waiter) must not
// start the waiter's lease in the past: the lease counts from when the
// waiter joined at the earliest, so it never ends early. For a parked w
// that is the w's arrival, not the e's (PROTOCOL.md: a w that answers ok
// restarts the lease "from that moment (full TTL)").
func TestHandoffLeaseNotBeforeWaiterJoined(t *testing.T) {
	for _, tc := range []struct {
		name string
		park func(tbl *Table, w *Owner, r *rec) Result // at 5 s
	}{
		{"l", func(tbl *Table, w *Owner, r *rec) Result {
			return tbl.Acquire(w, Locks, []byte("k"), 30, 1, 10, r, 5*sec)
		}},
		{"e at 0, w at 5 s", func(tbl *Table, w *Owner, r *rec) Result {
			if res := tbl.Enqueue(w, Locks, []byte("k"), 1, 10, 0); res.Code != codec.CodeQueued {
				return res
			}
			return tbl.Wait(w, Locks, []byte("k"), 30, r, 5*sec)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now := int64(0)
			tbl := fakeTable(Config{Shards: 4}, &now)
			h, w := NewOwner(1), NewOwner(2)
			tok := tbl.Acquire(h, Locks, []byte("k"), 0, 1, 10, nil, 0).Token
			r := &rec{}
			if res := tc.park(tbl, w, r); !res.Parked {
				t.Fatalf("waiter: %v", fmtRes(res))
			}
			if code := tbl.Release(Locks, []byte("k"), tok, 3*sec); code != codec.CodeOK { // stale now
				t.Fatalf("release: %v", code)
			}
			if len(r.results) != 1 || r.results[0].Code != codec.CodeOK {
				t.Fatalf("waiter not granted: %v", r.results)
			}
			st := tbl.Stats(5 * sec)
			if len(st.Locks) != 1 || st.Locks[0].OwnerConnID != 2 || st.Locks[0].LeaseExpiresInS != 10 {
				t.Fatalf("lease from the stale release time, not the waiter's arrival: %+v", st.Locks)
			}
			now = 14*sec + 999*msec
			tbl.Advance(now)
			if st := tbl.Stats(now); len(st.Locks) != 1 {
				t.Fatal("lease ended before 10 s after the waiter joined")
			}
			mustInvariants(t, tbl)
		})
	}
}
