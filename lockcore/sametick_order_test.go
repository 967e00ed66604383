package lockcore

import (
	"testing"

	"github.com/lockreactor/dflockd/codec"
)

// The wheel fires the timers of one level-0 slot last-added first, so the
// order below is deterministic. All deadlines fall in tick 11 (tick 1 s).

// Semaphore, limit 2: H1's lease ends at 10.3 s, W's timeout is 10.5 s,
// H2's lease ends at 10.6 s. A slot came free for W at 10.3 s: W must be
// granted. H2's timer fires first (renewed last) and used to time W out, as
// W's timeout is before H2's own lease end, ignoring H1's earlier one.
func TestSameTickSemaphoreOtherHolderFreesFirst(t *testing.T) {
	now := int64(0)
	tbl := fakeTable(Config{Shards: 1, Tick: durationOf(sec)}, &now)
	k := []byte("s")
	now = 300 * msec
	if r := tbl.Acquire(NewOwner(1), Semaphores, k, 0, 2, 10, nil, now); r.Code != codec.CodeOK {
		t.Fatalf("h1: %v", fmtRes(r))
	} // lease ends 10.3 s
	now = 400 * msec
	r2 := tbl.Acquire(NewOwner(2), Semaphores, k, 0, 2, 10, nil, now)
	if r2.Code != codec.CodeOK {
		t.Fatalf("h2: %v", fmtRes(r2))
	}
	now = 500 * msec
	w := &rec{tbl: tbl}
	if r := tbl.Acquire(NewOwner(3), Semaphores, k, 10, 2, 10, w, now); !r.Parked {
		t.Fatalf("w: %v", fmtRes(r))
	} // timeout 10.5 s
	now = 600 * msec
	if r := tbl.Renew(Semaphores, k, r2.Token, 10, now); r.Code != codec.CodeOK {
		t.Fatalf("renew h2: %v", fmtRes(r))
	} // lease ends 10.6 s
	now = 11 * sec
	tbl.Advance(now)
	mustInvariants(t, tbl)
	if len(w.results) != 1 || w.results[0].Code != codec.CodeOK {
		t.Fatalf("h1 lease end 10.3 s, waiter timeout 10.5 s, h2 lease end 10.6 s: waiter got %v, want a grant; state %s",
			w.results, tbl.dump())
	}
}

// Lock: H's lease ends at 10.5 s; W1 (queue head) times out at 10.2 s, W2
// at 10.7 s. In deadline order W1 times out, then H expires and W2 is
// granted. W2's timer fires first (added last): it expires H, which grants
// W1 (whose timeout had passed before the lock came free), and W2 then
// times out.
func TestSameTickWaiterFireGrantsTimedOutHead(t *testing.T) {
	now := int64(0)
	tbl := fakeTable(Config{Shards: 1, Tick: durationOf(sec)}, &now)
	k := []byte("k")
	now = 500 * msec
	if r := tbl.Acquire(NewOwner(1), Locks, k, 0, 1, 10, nil, now); r.Code != codec.CodeOK {
		t.Fatalf("h: %v", fmtRes(r))
	} // lease ends 10.5 s
	now = 1200 * msec
	w1 := &rec{tbl: tbl, name: "w1"}
	if r := tbl.Acquire(NewOwner(2), Locks, k, 9, 1, 10, w1, now); !r.Parked {
		t.Fatalf("w1: %v", fmtRes(r))
	} // timeout 10.2 s
	now = 1700 * msec
	w2 := &rec{tbl: tbl, name: "w2"}
	if r := tbl.Acquire(NewOwner(3), Locks, k, 9, 1, 10, w2, now); !r.Parked {
		t.Fatalf("w2: %v", fmtRes(r))
	} // timeout 10.7 s
	now = 11 * sec
	tbl.Advance(now)
	mustInvariants(t, tbl)
	if len(w1.results) != 1 || w1.results[0].Code != codec.CodeTimeout ||
		len(w2.results) != 1 || w2.results[0].Code != codec.CodeOK {
		t.Fatalf("w1 timeout 10.2 s, lease end 10.5 s, w2 timeout 10.7 s: w1 got %v (want timeout), w2 got %v (want a grant); state %s",
			w1.results, w2.results, tbl.dump())
	}
}
