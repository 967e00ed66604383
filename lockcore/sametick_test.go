package lockcore

import (
	"testing"

	"github.com/lockreactor/dflockd/codec"
)

// PROTOCOL.md (Fairness, leases): "When a lease runs out without renewal,
// the holder is evicted and the next waiter is granted at once." A waiter
// whose timeout falls due 18 ms after the holder's lease ran out must be
// granted, not timed out, even when both deadlines round up to the same
// wheel tick. The wheel fires the timers of one slot in no particular
// order; fire puts a key's lease ends and timeouts in deadline order.
func TestSameTickLeaseEndBeforeTimeoutGrants(t *testing.T) {
	for _, c := range []struct {
		tick, hold, wait int64 // tick; when the holder acquires (lease 1 s); when the waiter parks (timeout 1 s)
	}{
		{20 * msec, 1 * msec, 19 * msec},  // lease ends 1.001 s, timeout 1.019 s: both tick 51
		{1 * sec, 100 * msec, 900 * msec}, // --tick=1s: lease ends 1.1 s, timeout 1.9 s: both tick 2
	} {
		now := int64(0)
		tbl := fakeTable(Config{Shards: 1, Tick: durationOf(c.tick)}, &now)
		now = c.hold
		if r := tbl.Acquire(NewOwner(1), Locks, []byte("k"), 0, 1, 1, nil, now); r.Code != codec.CodeOK {
			t.Fatalf("l: %v", fmtRes(r))
		}
		now = c.wait
		w := &rec{tbl: tbl}
		if r := tbl.Acquire(NewOwner(2), Locks, []byte("k"), 1, 1, 0, w, now); !r.Parked {
			t.Fatalf("l: %v", fmtRes(r))
		}
		now = ceilDiv(c.wait+sec, c.tick) * c.tick
		tbl.Advance(now)
		mustInvariants(t, tbl)
		if len(w.results) != 1 || w.results[0].Code != codec.CodeOK {
			t.Errorf("tick %v: lease ended at %v, waiter's timeout at %v: waiter got %v, want a grant; state %s",
				durationOf(c.tick), durationOf(c.hold+sec), durationOf(c.wait+sec), w.results, tbl.dump())
		}
	}
}

// The mirror case: the waiter's timeout (1.001 s) passes before the
// holder's renewed lease ends (1.019 s); the waiter must time out, not be
// granted a lock that was never free before its deadline.
func TestSameTickTimeoutBeforeLeaseEndTimesOut(t *testing.T) {
	now := int64(0)
	tbl := fakeTable(Config{Shards: 1, Tick: 20 * 1_000_000}, &now)
	tok := tbl.Acquire(NewOwner(1), Locks, []byte("k"), 0, 1, 5, nil, now).Token
	now = 1 * msec
	w := &rec{tbl: tbl}
	if r := tbl.Acquire(NewOwner(2), Locks, []byte("k"), 1, 1, 0, w, now); !r.Parked {
		t.Fatalf("l: %v", fmtRes(r))
	} // timeout at 1.001 s (tick 51)
	now = 19 * msec
	if r := tbl.Renew(Locks, []byte("k"), tok, 1, now); r.Code != codec.CodeOK {
		t.Fatalf("n: %v", fmtRes(r))
	} // lease ends at 1.019 s (tick 51)
	now = 1020 * msec
	tbl.Advance(now)
	mustInvariants(t, tbl)
	if len(w.results) != 1 || w.results[0].Code != codec.CodeTimeout {
		t.Fatalf("timeout at 1.001 s, lease end at 1.019 s: waiter got %v, want timeout; state %s", w.results, tbl.dump())
	}
}
