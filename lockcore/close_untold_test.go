package lockcore

import (
	"testing"

	"github.com/lockreactor/dflockd/codec"
)

// PROTOCOL.md (Connections): with auto-release off "held locks stay until
// their lease runs out. Either way its waiters and two-phase state are
// dropped at once". A queued e whose grant reached the connection before it
// sent w is two-phase state: the client was only ever told "queued", nobody
// knows the token, so nobody can release or renew it. It must not keep the
// key for a whole lease after its owner is gone.
func TestCloseAutoReleaseOffDropsUntoldGrant(t *testing.T) {
	now := int64(0)
	tbl := fakeTable(Config{Shards: 4, AutoRelease: false, DefaultLease: 33}, &now)
	holder, o, next := NewOwner(1), NewOwner(2), NewOwner(3)
	tok := tbl.Acquire(holder, Locks, []byte("k"), 0, 1, 0, nil, now).Token
	if r := tbl.Enqueue(o, Locks, []byte("k"), 1, 0, now); r.Code != codec.CodeQueued {
		t.Fatalf("e: %v", fmtRes(r))
	}
	now = 1 * sec
	if c := tbl.Release(Locks, []byte("k"), tok, now); c != codec.CodeOK {
		t.Fatalf("r: %v", c)
	}
	// o's e entry now holds the lock; o never learnt the token.
	now = 2 * sec
	tbl.CloseOwner(o, now)
	mustInvariants(t, tbl)
	w := &rec{tbl: tbl}
	r := tbl.Acquire(next, Locks, []byte("k"), 5, 1, 0, w, now)
	if !r.Parked && r.Code == codec.CodeOK {
		return
	}
	now = 7 * sec
	tbl.Advance(now)
	t.Fatalf("after the owner of an uncollected queued grant closed (auto-release off), a new l on the key: %v, completions %v; state %s",
		fmtRes(r), w.results, tbl.dump())
}

// With auto-release off, an owner's untold grants are released and its
// other holdings orphaned in one close, whatever their order in the
// owner's list (releasing one must not relink an orphan: found by the
// long model run).
func TestCloseAutoReleaseOffMixedHoldings(t *testing.T) {
	now := int64(0)
	tbl := fakeTable(Config{Shards: 1, AutoRelease: false, DefaultLease: 33}, &now)
	holder, o := NewOwner(1), NewOwner(2)
	for _, k := range []string{"a", "c"} {
		if r := tbl.Acquire(o, Locks, []byte(k+"0"), 0, 1, 0, nil, now); r.Code != codec.CodeOK {
			t.Fatalf("l: %v", fmtRes(r))
		}
		tok := tbl.Acquire(holder, Locks, []byte(k), 0, 1, 0, nil, now).Token
		if r := tbl.Enqueue(o, Locks, []byte(k), 1, 0, now); r.Code != codec.CodeQueued {
			t.Fatalf("e: %v", fmtRes(r))
		}
		if c := tbl.Release(Locks, []byte(k), tok, now); c != codec.CodeOK {
			t.Fatalf("r: %v", c)
		}
		if r := tbl.Acquire(o, Locks, []byte(k+"1"), 0, 1, 0, nil, now); r.Code != codec.CodeOK {
			t.Fatalf("l: %v", fmtRes(r))
		}
	}
	now = sec
	tbl.CloseOwner(o, now)
	mustInvariants(t, tbl)
	next := NewOwner(3)
	for _, k := range []string{"a", "c"} {
		if r := tbl.Acquire(next, Locks, []byte(k), 0, 1, 0, nil, now); r.Code != codec.CodeOK {
			t.Fatalf("%s: the untold grant was not released: %v; state %s", k, fmtRes(r), tbl.dump())
		}
		for _, held := range []string{k + "0", k + "1"} {
			if r := tbl.Acquire(next, Locks, []byte(held), 0, 1, 0, nil, now); r.Code != codec.CodeTimeout {
				t.Fatalf("%s: the told grant was not kept: %v; state %s", held, fmtRes(r), tbl.dump())
			}
		}
	}
	mustInvariants(t, tbl)
}
