package lockcore

import (
	"testing"
)

// TestFreeListBounded: the nodes of a burst of waiters go back to the
// collector beyond maxFreeNodes per shard, and the kept ones are reused.
func TestFreeListBounded(t *testing.T) {
	now := int64(0)
	tbl := fakeTable(Config{Shards: 1}, &now)
	tbl.Acquire(NewOwner(1), Locks, []byte("k"), 0, 1, 0, nil, now)
	owners := make([]*Owner, 3*maxFreeNodes)
	for i := range owners {
		owners[i] = NewOwner(uint64(i + 2))
		if r := tbl.Acquire(owners[i], Locks, []byte("k"), 5, 1, 0, &rec{tbl: tbl}, now); !r.Parked {
			t.Fatalf("waiter %d: %v", i, fmtRes(r))
		}
	}
	for _, o := range owners {
		tbl.CloseOwner(o, now)
	}
	mustInvariants(t, tbl)
	c := tbl.shards[0].c
	listed := 0
	for n := c.free; n != nil; n = n.knext {
		listed++
	}
	if c.nfree != maxFreeNodes || listed != maxFreeNodes {
		t.Fatalf("free list: nfree %d, %d listed; want %d", c.nfree, listed, maxFreeNodes)
	}
	head := c.free
	if r := tbl.Acquire(NewOwner(9999), Locks, []byte("k"), 5, 1, 0, &rec{tbl: tbl}, now); !r.Parked {
		t.Fatalf("waiter: %v", fmtRes(r))
	}
	if c.nfree != maxFreeNodes-1 || c.free == head || head.timer.Owner != head {
		t.Fatalf("a kept node was not reused: nfree %d", c.nfree)
	}
	mustInvariants(t, tbl)
}
