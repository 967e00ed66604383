package lockcore

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// CancelParked takes a still-waiting parked request out of its queue with
// no answer; once the request is decided (granted, timed out) it finds
// nothing and the result stands, so that a half-closed connection can be
// told of a grant instead of losing it.
func TestCancelParked(t *testing.T) {
	now := int64(1000 * sec)
	tbl := fakeTable(Config{AutoRelease: false}, &now)
	holder, waiter, other := NewOwner(1), NewOwner(2), NewOwner(3)
	require.False(t, tbl.CancelParked(waiter, now), "nothing parked")

	res := tbl.Acquire(holder, Locks, []byte("k"), 0, 0, 30, nil, now)
	require.Equal(t, "ok", res.Code.String())
	tok := res.Token

	// Still waiting: cancelled without an answer; the queue is empty.
	w := &rec{name: "w", tbl: tbl}
	require.True(t, tbl.Acquire(waiter, Locks, []byte("k"), 10, 0, 30, w, now).Parked)
	require.True(t, tbl.Acquire(other, Locks, []byte("k2"), 0, 0, 30, nil, now).Code.String() == "ok")
	require.True(t, tbl.CancelParked(waiter, now))
	require.Empty(t, w.results)
	require.Zero(t, tbl.Stats(now).Locks[indexOf(t, tbl, "k")].Waiters)
	require.False(t, tbl.CancelParked(waiter, now), "cancelled once")
	require.NoError(t, tbl.CheckInvariants())

	// Granted already: CancelParked finds nothing, the grant stands and
	// was delivered; a close with auto-release off then keeps it as told.
	w2 := &rec{name: "w2", tbl: tbl}
	require.True(t, tbl.Acquire(waiter, Locks, []byte("k"), 10, 0, 30, w2, now).Parked)
	require.Equal(t, "ok", tbl.Release(Locks, []byte("k"), tok, now).String())
	require.Len(t, w2.results, 1)
	require.False(t, tbl.CancelParked(waiter, now))
	tbl.CloseOwner(waiter, now)
	require.Equal(t, "timeout", tbl.Acquire(other, Locks, []byte("k"), 0, 0, 30, nil, now).Code.String(), "kept (auto-release off)")
	require.Equal(t, "ok", tbl.Release(Locks, []byte("k"), w2.results[0].Token, now).String(),
		"the token the waiter was told still releases it")
	require.NoError(t, tbl.CheckInvariants())
}

func indexOf(t *testing.T, tbl *Table, key string) int {
	t.Helper()
	for i, l := range tbl.Stats(tbl.Now()).Locks {
		if l.Key == key {
			return i
		}
	}
	t.Fatalf("no lock %q in stats", key)
	return -1
}
