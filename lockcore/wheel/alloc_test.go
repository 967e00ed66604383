//go:build !race

// The race detector allocates on its own, so this only runs without it.

package wheel

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestZeroAllocs(t *testing.T) {
	w := New(0)
	ns := newNodes(1000)
	for i, n := range ns {
		w.Add(&n.Timer, uint64(1+i*37))
	}
	var tm Timer
	k := uint64(0)
	allocs := testing.AllocsPerRun(1000, func() {
		k++
		w.Add(&tm, w.Now()+k*k) // walks up the levels
		w.Remove(&tm)
	})
	require.Zero(t, allocs, "Add+Remove")

	fired := 0
	fire := func(t *Timer) {
		fired++
		w.Add(t, w.Now()+uint64(1+fired%5000))
	}
	allocs = testing.AllocsPerRun(1000, func() {
		w.Advance(w.Now()+7, 0, fire)
		w.NextDeadline()
	})
	require.Zero(t, allocs, "Advance")
	require.Positive(t, fired)
}
