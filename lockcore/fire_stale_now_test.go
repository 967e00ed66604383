package lockcore

import (
	"testing"

	"github.com/lockreactor/dflockd/codec"
)

// TestFireHolderNotDueByFireNow: the wheel fires a timer whose tick
// is at or before its Now() even when Advance is given an older now (the
// wheel documents this). fire used to find no due lease end then and
// treat the firing holder as a waiter (timeOut on a holder).
func TestFireHolderNotDueByFireNow(t *testing.T) {
	now := int64(0)
	tbl := fakeTable(Config{Shards: 1, Tick: durationOf(sec)}, &now)
	now = 20 * sec
	tbl.Advance(now) // wheel at tick 20
	// A request whose now was read well before (stale by > its lease).
	stale := 5 * sec
	r := tbl.Acquire(NewOwner(1), Locks, []byte("k"), 0, 1, 10, nil, stale)
	if r.Code != codec.CodeOK {
		t.Fatalf("h: %v", fmtRes(r))
	} // lease ends 15 s, tick 15 <= wheel tick 20: due list
	w := &rec{tbl: tbl, name: "w"}
	if r := tbl.Acquire(NewOwner(2), Locks, []byte("k"), 30, 1, 10, w, stale); !r.Parked {
		t.Fatalf("w: %v", fmtRes(r))
	}
	tbl.Advance(stale) // an Advance with the same (older) now
	mustInvariants(t, tbl)
	t.Logf("state %s; w %v", tbl.dump(), w.results)
}
