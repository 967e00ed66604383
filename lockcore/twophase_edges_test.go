package lockcore

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/codec"
)

// Edge cases of the two-phase index (core.twoPhase), each
// followed by the full invariant check and checkTwoPhaseIndex.

func r9must(t *testing.T, tbl *Table) {
	t.Helper()
	mustInvariants(t, tbl)
	if err := checkTwoPhaseIndex(tbl); err != nil {
		t.Fatalf("index: %v\nstate: %s", err, tbl.dump())
	}
}

// r9entry returns the index entry of (o, ns/name), or nil; and whether the
// key exists.
func r9entry(tbl *Table, o *Owner, ns Namespace, name string) *node {
	s := tbl.shardOf(ns, []byte(name))
	s.mu.Lock()
	defer s.mu.Unlock()
	k := s.c.table(ns)[name]
	if k == nil {
		return nil
	}
	return s.c.twoPhase[ownerKey{o, k}]
}

// A fast-path grant that expires uncollected becomes a tombstone still in
// the index; w answers error_lease_expired once and the entry goes.
func TestTwoPhaseExpireTombstone(t *testing.T) {
	now := int64(sec)
	tbl := fakeTable(Config{Shards: 1}, &now)
	o := NewOwner(1)
	require.Equal(t, codec.CodeAcquired, tbl.Enqueue(o, Locks, []byte("k"), 1, 1, now).Code)
	now += 2 * sec
	tbl.Advance(now)
	r9must(t, tbl)
	n := r9entry(tbl, o, Locks, "k")
	require.NotNil(t, n)
	require.Equal(t, stExpired, n.state)
	require.Equal(t, codec.CodeErrorLeaseExpired, tbl.Wait(o, Locks, []byte("k"), 0, nil, now).Code)
	r9must(t, tbl)
	require.Nil(t, r9entry(tbl, o, Locks, "k"))
	require.Equal(t, codec.CodeErrorNotEnqueued, tbl.Wait(o, Locks, []byte("k"), 0, nil, now).Code)
	r9must(t, tbl)
}

// Re-enqueue over an expired grant: timer fired (tombstone) or not yet
// (enqueue expires it itself). The index then points to the new node.
func TestTwoPhaseReenqueueAfterExpiry(t *testing.T) {
	for _, fired := range []bool{true, false} {
		now := int64(sec)
		tbl := fakeTable(Config{Shards: 1}, &now)
		o, other := NewOwner(1), NewOwner(2)
		require.Equal(t, codec.CodeAcquired, tbl.Enqueue(o, Locks, []byte("k"), 1, 1, now).Code)
		require.Equal(t, codec.CodeQueued, tbl.Enqueue(other, Locks, []byte("k"), 1, 5, now).Code)
		old := r9entry(tbl, o, Locks, "k")
		now += sec // exactly the lease end
		if fired {
			tbl.Advance(now)
		}
		r9must(t, tbl)
		// other was granted (untold) by the expiry; o re-enqueues behind it.
		r := tbl.Enqueue(o, Locks, []byte("k"), 1, 1, now)
		require.Equal(t, codec.CodeQueued, r.Code, "fired=%v", fired)
		r9must(t, tbl)
		n := r9entry(tbl, o, Locks, "k")
		require.NotNil(t, n)
		require.Equal(t, stWaiting, n.state)
		_ = old // may be the same (reused) node object
		require.Equal(t, codec.CodeErrorAlreadyEnqueued, tbl.Enqueue(o, Locks, []byte("k"), 1, 1, now).Code)
		// other's untold grant is collected.
		w := tbl.Wait(other, Locks, []byte("k"), 0, nil, now)
		require.Equal(t, codec.CodeOK, w.Code)
		require.Nil(t, r9entry(tbl, other, Locks, "k"))
		r9must(t, tbl)
		require.Equal(t, codec.CodeOK, tbl.Release(Locks, []byte("k"), w.Token, now))
		r9must(t, tbl)
		// o's entry was granted from the queue: untold, still indexed.
		n = r9entry(tbl, o, Locks, "k")
		require.NotNil(t, n)
		require.Equal(t, stHolding, n.state)
		require.True(t, n.untold)
		require.Equal(t, codec.CodeOK, tbl.Wait(o, Locks, []byte("k"), 0, nil, now).Code)
		require.Nil(t, r9entry(tbl, o, Locks, "k"))
		r9must(t, tbl)
	}
}

// A parked w granted by a release clears its entry; a parked w cancelled
// (CancelParked) or timed out frees the node and its entry.
func TestTwoPhaseParkedWaitPaths(t *testing.T) {
	now := int64(sec)
	tbl := fakeTable(Config{Shards: 1}, &now)
	h, o := NewOwner(1), NewOwner(2)
	tok := tbl.Acquire(h, Semaphores, []byte("s"), 0, 2, 30, nil, now).Token
	tok2 := tbl.Acquire(h, Semaphores, []byte("s"), 0, 2, 30, nil, now).Token
	for i, end := range []string{"grant", "cancel", "timeout"} {
		require.Equal(t, codec.CodeQueued, tbl.Enqueue(o, Semaphores, []byte("s"), 2, 0, now).Code, end)
		c := &rec{tbl: tbl}
		require.True(t, tbl.Wait(o, Semaphores, []byte("s"), 2, c, now).Parked)
		r9must(t, tbl)
		switch end {
		case "grant":
			require.Equal(t, codec.CodeOK, tbl.Release(Semaphores, []byte("s"), tok, now))
			require.Len(t, c.results, 1)
			require.Equal(t, codec.CodeOK, c.results[0].Code)
			// hold it again from o's side: give the slot back to h
			require.Equal(t, codec.CodeOK, tbl.Release(Semaphores, []byte("s"), c.results[0].Token, now))
			tok = tbl.Acquire(h, Semaphores, []byte("s"), 0, 2, 30, nil, now).Token
		case "cancel":
			require.True(t, tbl.CancelParked(o, now))
		case "timeout":
			now += 3 * sec
			tbl.Advance(now)
			require.Len(t, c.results, 1)
			require.Equal(t, codec.CodeTimeout, c.results[0].Code)
		}
		require.Nil(t, r9entry(tbl, o, Semaphores, "s"), "%d %s", i, end)
		r9must(t, tbl)
		require.Equal(t, codec.CodeErrorNotEnqueued, tbl.Wait(o, Semaphores, []byte("s"), 0, nil, now).Code)
	}
	_ = tok2
}

// Close with auto-release on and off: every kind of two-phase entry
// (told fast-path grant, untold grant, queued, tombstone) leaves the
// index; the same Owner object, re-initialised for a new connection, has
// no two-phase state on any key.
func TestTwoPhaseCloseOwnerClearsIndex(t *testing.T) {
	for _, auto := range []bool{true, false} {
		now := int64(sec)
		tbl := fakeTable(Config{Shards: 1, AutoRelease: auto}, &now)
		h, o := NewOwner(1), NewOwner(2)
		// told: fast-path acquired
		require.Equal(t, codec.CodeAcquired, tbl.Enqueue(o, Locks, []byte("told"), 1, 30, now).Code)
		// untold: queued then granted
		tok := tbl.Acquire(h, Locks, []byte("untold"), 0, 1, 30, nil, now).Token
		require.Equal(t, codec.CodeQueued, tbl.Enqueue(o, Locks, []byte("untold"), 1, 30, now).Code)
		require.Equal(t, codec.CodeOK, tbl.Release(Locks, []byte("untold"), tok, now))
		// queued
		tbl.Acquire(h, Locks, []byte("queued"), 0, 1, 30, nil, now)
		require.Equal(t, codec.CodeQueued, tbl.Enqueue(o, Locks, []byte("queued"), 1, 30, now).Code)
		// tombstone
		require.Equal(t, codec.CodeAcquired, tbl.Enqueue(o, Semaphores, []byte("tomb"), 3, 1, now).Code)
		now += 2 * sec
		tbl.Advance(now)
		r9must(t, tbl)
		require.Equal(t, 4, twoPhaseIndexLen(tbl))
		tbl.CloseOwner(o, now)
		r9must(t, tbl)
		require.Zero(t, twoPhaseIndexLen(tbl), "auto=%v", auto)
		o.Init(3)
		for _, k := range []struct {
			ns   Namespace
			name string
		}{{Locks, "told"}, {Locks, "untold"}, {Locks, "queued"}, {Semaphores, "tomb"}} {
			require.Equal(t, codec.CodeErrorNotEnqueued, tbl.Wait(o, k.ns, []byte(k.name), 0, nil, now).Code, "%v %s", auto, k.name)
		}
		// and it may e again where the orphan (auto off) still holds
		r := tbl.Enqueue(o, Locks, []byte("told"), 1, 30, now)
		if auto {
			require.Equal(t, codec.CodeAcquired, r.Code)
		} else {
			require.Equal(t, codec.CodeQueued, r.Code)
		}
		r9must(t, tbl)
	}
}

// A key with a tombstone goes (reclaimed at --max-locks, or pruned by GC)
// while the owner has not collected it: the entry goes with it (a lapsed
// grant remembers it), and a new key with the same name starts with no
// entry for the owner: e answers acquired, not already_enqueued.
func TestTwoPhaseKeyGoesWithTombstone(t *testing.T) {
	for _, how := range []string{"reclaim", "gc", "reclaim-elsewhere"} {
		now := int64(sec)
		cfg := Config{Shards: 1, MaxLocks: 2, GCMaxIdle: durationOf(2 * sec)}
		if how == "reclaim-elsewhere" {
			cfg.Shards = 64
		}
		tbl := fakeTable(cfg, &now)
		o, p := NewOwner(1), NewOwner(2)
		require.Equal(t, codec.CodeAcquired, tbl.Enqueue(o, Locks, []byte("k"), 1, 1, now).Code)
		now += 2 * sec
		tbl.Advance(now)
		r9must(t, tbl)
		require.Equal(t, 1, twoPhaseIndexLen(tbl))
		switch how {
		case "reclaim", "reclaim-elsewhere":
			// two other keys at MaxLocks 2: the second reclaims k
			require.Equal(t, codec.CodeOK, tbl.Acquire(p, Locks, []byte("x"), 0, 1, 30, nil, now).Code)
			require.Equal(t, codec.CodeOK, tbl.Acquire(p, Locks, []byte("y"), 0, 1, 30, nil, now).Code)
		case "gc":
			now += 3 * sec
			require.Equal(t, 1, tbl.GC(now))
		}
		r9must(t, tbl)
		require.Nil(t, tbl.findKey(Locks, "k"), how)
		require.Zero(t, twoPhaseIndexLen(tbl), how)
		if how == "gc" {
			// the new k: acquired (and it may not be refused)
			require.Equal(t, codec.CodeAcquired, tbl.Enqueue(o, Locks, []byte("k"), 1, 1, now).Code, how)
			r9must(t, tbl)
			require.NotNil(t, r9entry(tbl, o, Locks, "k"))
			require.Equal(t, codec.CodeOK, tbl.Wait(o, Locks, []byte("k"), 0, nil, now).Code)
		} else {
			require.Equal(t, codec.CodeErrorLeaseExpired, tbl.Wait(o, Locks, []byte("k"), 0, nil, now).Code, how)
			require.Equal(t, codec.CodeErrorNotEnqueued, tbl.Wait(o, Locks, []byte("k"), 0, nil, now).Code, how)
		}
		r9must(t, tbl)
	}
}

// A refused e (max waiters, max locks, limit mismatch, over the semaphore
// cap) adds nothing to the index.
func TestTwoPhaseRefusalsAddNothing(t *testing.T) {
	now := int64(sec)
	tbl := fakeTable(Config{Shards: 1, MaxWaiters: 1, MaxLocks: 1, MaxSemaphoreLimit: 2}, &now)
	h, a, b := NewOwner(1), NewOwner(2), NewOwner(3)
	tbl.Acquire(h, Semaphores, []byte("s"), 0, 1, 30, nil, now)
	require.Equal(t, codec.CodeQueued, tbl.Enqueue(a, Semaphores, []byte("s"), 1, 0, now).Code)
	require.Equal(t, codec.CodeErrorMaxWaiters, tbl.Enqueue(b, Semaphores, []byte("s"), 1, 0, now).Code)
	require.Equal(t, codec.CodeErrorLimitMismatch, tbl.Enqueue(b, Semaphores, []byte("s"), 2, 0, now).Code)
	require.Equal(t, codec.CodeError, tbl.Enqueue(b, Semaphores, []byte("s"), 3, 0, now).Code)
	require.Equal(t, codec.CodeErrorMaxLocks, tbl.Enqueue(b, Locks, []byte("other"), 1, 0, now).Code)
	r9must(t, tbl)
	require.Equal(t, 1, twoPhaseIndexLen(tbl))
	// a's re-e while queued: already enqueued, entry unchanged.
	n := r9entry(tbl, a, Semaphores, "s")
	require.Equal(t, codec.CodeErrorAlreadyEnqueued, tbl.Enqueue(a, Semaphores, []byte("s"), 1, 0, now).Code)
	require.Same(t, n, r9entry(tbl, a, Semaphores, "s"))
	r9must(t, tbl)
}

// One owner, one key: e, w ok, e again (queues behind its own hold): the
// held node is no longer two-phase, the new waiter is the entry; both in
// the owner's list. Releasing the first grants the second (untold).
func TestTwoPhaseReenqueueBehindOwnHold(t *testing.T) {
	now := int64(sec)
	tbl := fakeTable(Config{Shards: 1}, &now)
	o := NewOwner(1)
	require.Equal(t, codec.CodeAcquired, tbl.Enqueue(o, Locks, []byte("k"), 1, 30, now).Code)
	w := tbl.Wait(o, Locks, []byte("k"), 0, nil, now)
	require.Equal(t, codec.CodeOK, w.Code)
	require.Equal(t, codec.CodeQueued, tbl.Enqueue(o, Locks, []byte("k"), 1, 30, now).Code)
	r9must(t, tbl)
	n := r9entry(tbl, o, Locks, "k")
	require.Equal(t, stWaiting, n.state)
	require.Equal(t, codec.CodeOK, tbl.Release(Locks, []byte("k"), w.Token, now))
	r9must(t, tbl)
	require.Same(t, n, r9entry(tbl, o, Locks, "k"))
	require.Equal(t, stHolding, n.state)
	w2 := tbl.Wait(o, Locks, []byte("k"), 0, nil, now)
	require.Equal(t, codec.CodeOK, w2.Code)
	require.Zero(t, twoPhaseIndexLen(tbl))
	r9must(t, tbl)
}

// The index is per shard and keyed by the key object: the same owner with
// entries on a lock and a semaphore of the same name, in one shard.
func TestTwoPhaseSameNameBothNamespaces(t *testing.T) {
	now := int64(sec)
	tbl := fakeTable(Config{Shards: 1}, &now)
	o := NewOwner(1)
	require.Equal(t, codec.CodeAcquired, tbl.Enqueue(o, Locks, []byte("k"), 1, 30, now).Code)
	require.Equal(t, codec.CodeAcquired, tbl.Enqueue(o, Semaphores, []byte("k"), 2, 30, now).Code)
	r9must(t, tbl)
	require.Equal(t, 2, twoPhaseIndexLen(tbl))
	require.Equal(t, codec.CodeOK, tbl.Wait(o, Semaphores, []byte("k"), 0, nil, now).Code)
	require.Equal(t, 1, twoPhaseIndexLen(tbl))
	require.Equal(t, codec.CodeOK, tbl.Wait(o, Locks, []byte("k"), 0, nil, now).Code)
	require.Zero(t, twoPhaseIndexLen(tbl))
	r9must(t, tbl)
}
