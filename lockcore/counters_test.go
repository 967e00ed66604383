package lockcore

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/codec"
)

// TestCounters drives each event the counters report once and checks the
// right counter moved.
func TestCounters(t *testing.T) {
	now := int64(0)
	tbl := fakeTable(Config{MaxLocks: 10, AutoRelease: true}, &now)
	a, b, c := NewOwner(1), NewOwner(2), NewOwner(3)
	L, S := Locks, Semaphores

	r := tbl.Acquire(a, L, []byte("k"), 0, 1, 1, nil, now) // grant, lease 1 s
	require.Equal(t, codec.CodeOK, r.Code)
	wb := &rec{name: "b", tbl: tbl}
	require.True(t, tbl.Acquire(b, L, []byte("k"), 10, 1, 5, wb, now).Parked)
	got := tbl.Counters()
	assert.Equal(t, [2]uint64{1, 0}, got.Grants)
	assert.Equal(t, [2]int64{1, 0}, got.Held)
	assert.Equal(t, [2]int64{1, 0}, got.Waiting)
	assert.Equal(t, int64(2), got.Timers, "a's lease and b's timeout")
	assert.Equal(t, int64(1), got.Keys)
	assert.Equal(t, int64(10), got.MaxLocks)

	// a's lease runs out: an expiry and a hand-off to b.
	now += 1 * sec
	tbl.Advance(now)
	require.Len(t, wb.results, 1)
	got = tbl.Counters()
	assert.Equal(t, [2]uint64{1, 0}, got.Expiries)
	assert.Equal(t, [2]uint64{1, 0}, got.Handoffs)
	assert.Equal(t, [2]uint64{2, 0}, got.Grants)
	assert.Equal(t, [2]int64{1, 0}, got.Held)
	assert.Equal(t, [2]int64{0, 0}, got.Waiting)

	// c waits on the held key and times out.
	wc := &rec{name: "c", tbl: tbl}
	require.True(t, tbl.Acquire(c, L, []byte("k"), 1, 1, 0, wc, now).Parked)
	now += 1 * sec
	tbl.Advance(now)
	require.Equal(t, []Result{{Code: codec.CodeTimeout, Timer: true}}, wc.results)
	assert.Equal(t, [2]uint64{1, 0}, tbl.Counters().WaiterTimeouts)

	// b holds a semaphore slot too, then disconnects: both released.
	require.Equal(t, codec.CodeOK, tbl.Acquire(b, S, []byte("s"), 0, 2, 0, nil, now).Code)
	got = tbl.Counters()
	assert.Equal(t, [2]int64{1, 1}, got.Held)
	tbl.CloseOwner(b, now)
	got = tbl.Counters()
	assert.Equal(t, [2]uint64{1, 1}, got.DisconnectReleases)
	assert.Equal(t, [2]int64{0, 0}, got.Held)
	assert.Equal(t, int64(0), got.Timers)
	require.NoError(t, tbl.checkInvariants(true))
}

func BenchmarkCounters(b *testing.B) {
	tbl := New(Config{})
	o := NewOwner(1)
	for i := range 10000 {
		tbl.Acquire(o, Locks, fmt.Appendf(nil, "k%d", i), 0, 1, 0, nil, 0)
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = tbl.Counters()
	}
}
