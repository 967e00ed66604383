//go:build !race

package lockcore

import (
	"testing"

	"github.com/lockreactor/dflockd/codec"
)

// The fast paths allocate nothing once warm (nodes come from the free
// list, owner map entries and the completion buffer are reused).

func TestAllocsAcquireRelease(t *testing.T) {
	now := int64(1)
	tbl := fakeTable(Config{MaxLocks: 1024}, &now)
	o := NewOwner(1)
	key := []byte("alloc/uncontended")
	acquireRelease(t, tbl, o, key, now)
	if n := testing.AllocsPerRun(1000, func() { acquireRelease(t, tbl, o, key, now) }); n != 0 {
		t.Fatalf("acquire+release: %v allocs", n)
	}
}

func TestAllocsHandoff(t *testing.T) {
	h := newHandoff(t)
	h.round(t)
	h.round(t)
	if n := testing.AllocsPerRun(1000, func() { h.round(t) }); n != 0 {
		t.Fatalf("hand-off: %v allocs", n)
	}
	if h.hcont.n == 0 || h.wcont.n == 0 {
		t.Fatal("no completions")
	}
}

// Two-phase, renew, and a parked request that times out.
func TestAllocsOtherPaths(t *testing.T) {
	now := int64(1)
	tbl := fakeTable(Config{Shards: 8}, &now)
	o, other := NewOwner(1), NewOwner(2)
	key, held := []byte("alloc/e"), []byte("alloc/held")
	tbl.Acquire(other, Locks, held, 0, 1, 3600, nil, now)
	var cont nopCont
	round := func() {
		r := tbl.Enqueue(o, Locks, key, 1, 0, now)
		if r.Code != codec.CodeAcquired {
			t.Fatalf("enqueue: %v", r.Code)
		}
		if tbl.Renew(Locks, key, r.Token, 5, now).Code != codec.CodeOK {
			t.Fatal("renew")
		}
		if tbl.Wait(o, Locks, key, 0, nil, now).Code != codec.CodeOK {
			t.Fatal("wait")
		}
		tbl.Release(Locks, key, r.Token, now)
		if !tbl.Acquire(o, Locks, held, 1, 1, 0, cont, now).Parked {
			t.Fatal("not parked")
		}
		now += sec
		tbl.Advance(now) // the timeout
	}
	round()
	if n := testing.AllocsPerRun(1000, round); n != 0 {
		t.Fatalf("%v allocs", n)
	}
}
