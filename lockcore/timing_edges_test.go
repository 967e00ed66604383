package lockcore

import (
	"fmt"
	"testing"

	"github.com/lockreactor/dflockd/codec"
)

// review13a: lock-core timing and semantics at the edges.

func edgeCode(t *testing.T, what string, r Result, want codec.Code) Result {
	t.Helper()
	if r.Parked || r.Code != want {
		t.Fatalf("%s: got %s, want %v", what, fmtRes(r), want)
	}
	return r
}

func edgeOne(t *testing.T, what string, w *rec, want codec.Code) Result {
	t.Helper()
	if len(w.results) != 1 || w.results[0].Code != want {
		t.Fatalf("%s: got %v, want exactly one %v", what, w.results, want)
	}
	return w.results[0]
}

// edgeEmpty checks that nothing is left of the lock state: no key, no
// timer, no holder or waiter counted, no owner list, no two-phase entry.
func edgeEmpty(t *testing.T, tbl *Table) {
	t.Helper()
	mustInvariants(t, tbl)
	if k := tbl.Keys(); k != 0 {
		t.Errorf("Keys() = %d after everything was released and pruned; state %s", k, tbl.dump())
	}
	if n := tbl.wheelLen(); n != 0 {
		t.Errorf("%d timers pending with nothing held or waiting", n)
	}
	c := tbl.Counters()
	if c.Held != [2]int64{} || c.Waiting != [2]int64{} {
		t.Errorf("counters Held %v Waiting %v, want zero", c.Held, c.Waiting)
	}
	for i := range tbl.shards {
		s := &tbl.shards[i]
		s.mu.Lock()
		if len(s.c.locks)+len(s.c.sems) != 0 || len(s.c.twoPhase) != 0 || len(s.c.lapsed) != 0 || s.c.idleHead != nil {
			t.Errorf("shard %d: %d locks %d sems %d twoPhase %d lapsed idle %v", i, len(s.c.locks), len(s.c.sems), len(s.c.twoPhase), len(s.c.lapsed), s.c.idleHead != nil)
		}
		for o, h := range s.c.owners {
			if h != nil {
				t.Errorf("shard %d: owner %d still has nodes", i, o.id)
			}
		}
		s.mu.Unlock()
	}
	snap := tbl.Stats(0)
	if len(snap.Locks)+len(snap.Semaphores)+len(snap.IdleLocks)+len(snap.IdleSemaphores) != 0 {
		t.Errorf("stats not empty: %+v", snap)
	}
}

// Timeouts and leases at the largest value the server accepts
// (codec.MaxSeconds, 100 years): no overflow of the ns deadline or of the
// wheel's range; nothing fires a nanosecond early; everything fires on time.
func TestMaxSecondsNoOverflow(t *testing.T) {
	for _, tick := range []int64{msec, 10 * msec, sec} {
		t.Run(fmt.Sprint(durationOf(tick)), func(t *testing.T) {
			now := int64(7 * sec)
			tbl := fakeTable(Config{Shards: 2, Tick: durationOf(tick)}, &now)
			big := codec.MaxSeconds
			a := edgeCode(t, "l max lease", tbl.Acquire(NewOwner(1), Locks, []byte("k"), big, 1, big, nil, now), codec.CodeOK)
			if a.Lease != big {
				t.Fatalf("lease %d, want %d", a.Lease, big)
			}
			start := now
			now += 3 * msec
			w := &rec{tbl: tbl}
			if r := tbl.Acquire(NewOwner(2), Locks, []byte("k"), big, 1, big, w, now); !r.Parked {
				t.Fatalf("l: %s", fmtRes(r))
			}
			// se of a semaphore with the same extremes.
			o3 := NewOwner(3)
			edgeCode(t, "se", tbl.Enqueue(o3, Semaphores, []byte("s"), 1, big, now), codec.CodeAcquired)
			// Renew the lock with the largest lease: restarts from now.
			now += 5 * sec
			rn := edgeCode(t, "n max", tbl.Renew(Locks, []byte("k"), a.Token, big, now), codec.CodeOK)
			if rn.Lease != big {
				t.Fatalf("renew lease %d", rn.Lease)
			}
			leaseEnd := now + seconds(big)
			// 99 years later nothing has happened.
			now = leaseEnd - seconds(365*86400)
			tbl.Advance(now)
			mustInvariants(t, tbl)
			if len(w.results) != 0 {
				t.Fatalf("waiter resolved after 99 years of a 100-year wait: %v", w.results)
			}
			// The waiter's timeout (100 years after it parked, 5 s before
			// the renewed lease ends) comes first.
			wTimeout := start + 3*msec + seconds(big)
			now = wTimeout - 1
			tbl.Advance(now)
			if len(w.results) != 0 && tick == msec {
				t.Fatalf("waiter resolved 1 ns before its timeout: %v", w.results)
			}
			now = wTimeout + tick
			tbl.Advance(now)
			edgeOne(t, "waiter at its 100-year timeout", w, codec.CodeTimeout)
			if k := tbl.findKey(Locks, "k"); k == nil || k.holders.n != 1 {
				t.Fatalf("holder gone before its lease end: %s", tbl.dump())
			}
			now = leaseEnd + tick
			tbl.Advance(now)
			mustInvariants(t, tbl)
			if k := tbl.findKey(Locks, "k"); k != nil && k.holders.n != 0 {
				t.Fatalf("holder still there after its 100-year lease: %s", tbl.dump())
			}
			if r := tbl.Renew(Locks, []byte("k"), a.Token, 0, now); r.Code != codec.CodeError {
				t.Fatalf("renew after expiry: %s", fmtRes(r))
			}
			// The se grant (lease 100 y from +3 ms) has ended too: its w
			// answers error_lease_expired.
			edgeCode(t, "sw after 100 y", tbl.Wait(o3, Semaphores, []byte("s"), 0, &rec{}, now), codec.CodeErrorLeaseExpired)
			tbl.CloseOwner(o3, now)
			now += 200 * sec
			tbl.GC(now)
			edgeEmpty(t, tbl)
		})
	}
}

// A renewal exactly at the lease end is refused (tick-precise expiry, an
// expired lock is never resurrected); one nanosecond before it succeeds
// and the lease restarts from then, so the old deadline's timer never
// evicts the renewed holder.
func TestRenewAtTheBoundary(t *testing.T) {
	now := int64(0)
	tbl := fakeTable(Config{Shards: 1}, &now)
	a := edgeCode(t, "l", tbl.Acquire(NewOwner(1), Locks, []byte("k"), 0, 1, 1, nil, now), codec.CodeOK)
	w := &rec{tbl: tbl}
	if r := tbl.Acquire(NewOwner(2), Locks, []byte("k"), 10, 1, 0, w, now); !r.Parked {
		t.Fatal(fmtRes(r))
	}
	now = sec - 1
	edgeCode(t, "n 1ns early", tbl.Renew(Locks, []byte("k"), a.Token, 1, now), codec.CodeOK)
	for now = sec - 1; now < 2*sec-1; now += msec / 2 {
		tbl.Advance(now)
		if len(w.results) != 0 {
			t.Fatalf("renewed holder evicted at %v: waiter got %v", durationOf(now), w.results)
		}
	}
	now = 2*sec - 1 // the renewed lease's end exactly
	if r := tbl.Renew(Locks, []byte("k"), a.Token, 1, now); r.Code != codec.CodeError {
		t.Fatalf("renew at the lease end: %s, want error", fmtRes(r))
	}
	// The renewal evicted it: the waiter is granted at once, not at the
	// next Advance.
	got := edgeOne(t, "waiter after the boundary renewal", w, codec.CodeOK)
	if got.Lease != 33 {
		t.Fatalf("waiter lease %d", got.Lease)
	}
	tbl.Advance(now + msec)
	mustInvariants(t, tbl)
	if len(w.results) != 1 {
		t.Fatalf("waiter answered twice: %v", w.results)
	}
}

// Thousands of waiters on one key, all timing out at the very nanosecond
// the holder's lease ends (tie goes to the grant): exactly one grant (the
// head), every other one timeout, each answered exactly once, across
// several budget-limited Advance chunks.
func TestManyTimersSameInstant(t *testing.T) {
	now := int64(0)
	tbl := fakeTable(Config{Shards: 4}, &now)
	edgeCode(t, "l", tbl.Acquire(NewOwner(1), Locks, []byte("k"), 0, 1, 2, nil, now), codec.CodeOK)
	const n = 3000
	ws := make([]*rec, n)
	now = sec // every waiter: timeout 1 s from 1 s = 2 s, the lease end
	for i := range ws {
		ws[i] = &rec{tbl: tbl}
		if r := tbl.Acquire(NewOwner(uint64(10+i)), Locks, []byte("k"), 1, 1, 0, ws[i], now); !r.Parked {
			t.Fatal(fmtRes(r))
		}
	}
	// And many keys whose holders' leases end at the same instant, each
	// with one waiter that must be granted.
	const m = 1000
	others := make([]*rec, m)
	for i := range others {
		name := []byte(fmt.Sprintf("o%d", i))
		now = 0
		edgeCode(t, "l o", tbl.Acquire(NewOwner(uint64(100000+i)), Locks, name, 0, 1, 2, nil, now), codec.CodeOK)
		now = sec
		others[i] = &rec{tbl: tbl}
		if r := tbl.Acquire(NewOwner(uint64(200000+i)), Locks, name, 5, 1, 0, others[i], now); !r.Parked {
			t.Fatal(fmtRes(r))
		}
	}
	now = 2 * sec
	tbl.Advance(now)
	mustInvariants(t, tbl)
	if got := edgeOne(t, "head waiter", ws[0], codec.CodeOK); got.Token.IsZero() {
		t.Fatal("zero token")
	}
	for i := 1; i < n; i++ {
		edgeOne(t, fmt.Sprintf("waiter %d", i), ws[i], codec.CodeTimeout)
	}
	for i := range others {
		edgeOne(t, fmt.Sprintf("other %d", i), others[i], codec.CodeOK)
	}
	if c := tbl.Counters(); c.Held[Locks] != m+1 || c.Waiting[Locks] != 0 {
		t.Fatalf("held %d waiting %d", c.Held[Locks], c.Waiting[Locks])
	}
	// Their 33 s leases end: nothing is left after GC.
	now = 40 * sec
	tbl.Advance(now)
	now += 61 * sec
	tbl.GC(now)
	edgeEmpty(t, tbl)
}

// Semaphore FIFO across sl (parked) and se (two-phase) waiters, with the
// head needing the slot that frees first; a later limit on the same key is
// refused while the key exists, also once idle, and accepted after it is
// pruned.
func TestSemaphoreFIFOAndLimitChange(t *testing.T) {
	now := int64(0)
	tbl := fakeTable(Config{Shards: 1}, &now)
	s := []byte("s")
	h1 := edgeCode(t, "sl h1", tbl.Acquire(NewOwner(1), Semaphores, s, 0, 2, 0, nil, now), codec.CodeOK)
	h2 := edgeCode(t, "sl h2", tbl.Acquire(NewOwner(2), Semaphores, s, 0, 2, 0, nil, now), codec.CodeOK)
	edgeCode(t, "sl other limit", tbl.Acquire(NewOwner(9), Semaphores, s, 0, 3, 0, nil, now), codec.CodeErrorLimitMismatch)
	edgeCode(t, "se other limit", tbl.Enqueue(NewOwner(9), Semaphores, s, 1, 0, now), codec.CodeErrorLimitMismatch)
	a := &rec{tbl: tbl}
	if r := tbl.Acquire(NewOwner(3), Semaphores, s, 10, 2, 0, a, now); !r.Parked {
		t.Fatal(fmtRes(r))
	}
	ob := NewOwner(4)
	edgeCode(t, "se b", tbl.Enqueue(ob, Semaphores, s, 2, 0, now), codec.CodeQueued)
	c := &rec{tbl: tbl}
	if r := tbl.Acquire(NewOwner(5), Semaphores, s, 10, 2, 0, c, now); !r.Parked {
		t.Fatal(fmtRes(r))
	}
	// A newcomer with timeout 0 must not jump the queue.
	now = sec
	edgeCode(t, "sl try", tbl.Acquire(NewOwner(6), Semaphores, s, 0, 2, 0, nil, now), codec.CodeTimeout)
	edgeCode(t, "sr h1", Result{Code: tbl.Release(Semaphores, s, h1.Token, now)}, codec.CodeOK)
	ga := edgeOne(t, "a", a, codec.CodeOK)
	if len(c.results) != 0 {
		t.Fatalf("c granted before b")
	}
	edgeCode(t, "sr h2", Result{Code: tbl.Release(Semaphores, s, h2.Token, now)}, codec.CodeOK)
	if len(c.results) != 0 {
		t.Fatalf("c granted the slot b's se was given")
	}
	bw := &rec{tbl: tbl}
	gb := edgeCode(t, "sw b", tbl.Wait(ob, Semaphores, s, 0, bw, now), codec.CodeOK)
	if gb.Token.Fence <= ga.Token.Fence {
		t.Fatalf("fence not increasing: a %x b %x", ga.Token.Fence, gb.Token.Fence)
	}
	edgeCode(t, "sr a", Result{Code: tbl.Release(Semaphores, s, ga.Token, now)}, codec.CodeOK)
	gc := edgeOne(t, "c", c, codec.CodeOK)
	edgeCode(t, "sr b", Result{Code: tbl.Release(Semaphores, s, gb.Token, now)}, codec.CodeOK)
	edgeCode(t, "sr c", Result{Code: tbl.Release(Semaphores, s, gc.Token, now)}, codec.CodeOK)
	// Idle but existing: still the old limit.
	edgeCode(t, "sl idle other limit", tbl.Acquire(NewOwner(7), Semaphores, s, 0, 5, 0, nil, now), codec.CodeErrorLimitMismatch)
	// The lock namespace is separate.
	edgeCode(t, "l s", tbl.Acquire(NewOwner(7), Locks, s, 0, 1, 0, nil, now), codec.CodeOK)
	tbl.CloseOwner(NewOwner(7), now) // a fresh owner: not the holder
	now += 70 * sec                  // the l's 33 s lease ends, then both keys are idle past GCMaxIdle
	tbl.Advance(now)
	now += 70 * sec
	tbl.GC(now)
	edgeEmpty(t, tbl)
	edgeCode(t, "sl new limit after prune", tbl.Acquire(NewOwner(8), Semaphores, s, 0, 5, 0, nil, now), codec.CodeOK)
}

// Two-phase at the extremes: w with timeout 0 after an untold grant answers
// ok (it is granted already); a w parked with the largest timeout is
// granted at the nanosecond the holder's lease ends although its timeout
// is 100 years away; e whose grant expires one tick before its w answers
// error_lease_expired and then error_not_enqueued.
func TestTwoPhaseExtremes(t *testing.T) {
	now := int64(0)
	tbl := fakeTable(Config{Shards: 1}, &now)
	k := []byte("k")
	h := edgeCode(t, "l", tbl.Acquire(NewOwner(1), Locks, k, 0, 1, 1, nil, now), codec.CodeOK)
	o2 := NewOwner(2)
	edgeCode(t, "e", tbl.Enqueue(o2, Locks, k, 1, codec.MaxSeconds, now), codec.CodeQueued)
	o3 := NewOwner(3)
	edgeCode(t, "e3", tbl.Enqueue(o3, Locks, k, 1, 1, now), codec.CodeQueued)
	w3 := &rec{tbl: tbl}
	if r := tbl.Wait(o3, Locks, k, codec.MaxSeconds, w3, now); !r.Parked {
		t.Fatal(fmtRes(r))
	}
	// Holder's lease ends at 1 s: o2 (head, not waiting) gets an untold grant.
	now = sec
	tbl.Advance(now)
	if len(w3.results) != 0 {
		t.Fatal("o3 granted ahead of o2")
	}
	now = 2 * sec
	g2 := edgeCode(t, "w 0 after untold grant", tbl.Wait(o2, Locks, k, 0, &rec{}, now), codec.CodeOK)
	if g2.Lease != codec.MaxSeconds || g2.Token.Fence <= h.Token.Fence {
		t.Fatalf("w: %s", fmtRes(g2))
	}
	edgeCode(t, "second w", tbl.Wait(o2, Locks, k, 0, &rec{}, now), codec.CodeErrorNotEnqueued)
	edgeCode(t, "r", Result{Code: tbl.Release(Locks, k, g2.Token, now)}, codec.CodeOK)
	g3 := edgeOne(t, "w3", w3, codec.CodeOK)
	if g3.Lease != 1 {
		t.Fatalf("w3 lease %d", g3.Lease)
	}
	// o3 holds with lease 1 from 2 s. Another e queues, granted untold at
	// 3 s with lease 1 (ends 4 s); its w at exactly 4 s is too late.
	o4 := NewOwner(4)
	edgeCode(t, "e4", tbl.Enqueue(o4, Locks, k, 1, 1, now), codec.CodeQueued)
	now = 3 * sec
	tbl.Advance(now)
	now = 4*sec - 1
	tbl.Advance(now)
	now = 4 * sec
	edgeCode(t, "w4 at lease end", tbl.Wait(o4, Locks, k, 5, &rec{}, now), codec.CodeErrorLeaseExpired)
	edgeCode(t, "w4 again", tbl.Wait(o4, Locks, k, 5, &rec{}, now), codec.CodeErrorNotEnqueued)
	now += 100 * sec
	tbl.Advance(now)
	tbl.GC(now)
	edgeEmpty(t, tbl)
}

// After a mix of everything -- grants, waits, two-phase queues and
// tombstones, orphaned holdings (auto-release off), closes -- the table
// empties completely once leases end and GC runs.
func TestEverythingReclaimed(t *testing.T) {
	for _, auto := range []bool{true, false} {
		t.Run(fmt.Sprint("auto=", auto), func(t *testing.T) {
			now := int64(0)
			tbl := fakeTable(Config{Shards: 8, AutoRelease: auto}, &now)
			owners := make([]*Owner, 20)
			for i := range owners {
				owners[i] = NewOwner(uint64(i + 1))
			}
			for i, o := range owners {
				for j := 0; j < 10; j++ {
					name := []byte(fmt.Sprintf("k%d", j))
					switch (i + j) % 4 {
					case 0:
						tbl.Acquire(o, Locks, name, 0, 1, 2, nil, now)
					case 1:
						tbl.Enqueue(o, Locks, name, 1, 1, now)
					case 2:
						tbl.Acquire(o, Semaphores, name, 0, 3, 1, nil, now)
					case 3:
						tbl.Enqueue(o, Semaphores, name, 3, 2, now)
					}
				}
				if i%3 == 0 {
					w := &rec{tbl: tbl}
					tbl.Acquire(o, Locks, []byte("parked"), 3, 1, 1, w, now)
				}
				now += 7 * msec
			}
			mustInvariants(t, tbl)
			for i, o := range owners {
				if i%2 == 0 {
					tbl.CloseOwner(o, now)
				}
			}
			for ; now < 60*sec; now += 100 * msec {
				tbl.Advance(now)
			}
			for i, o := range owners {
				if i%2 == 1 {
					tbl.CloseOwner(o, now)
				}
			}
			tbl.Advance(now + sec)
			now += 200 * sec
			tbl.GC(now)
			edgeEmpty(t, tbl)
		})
	}
}
