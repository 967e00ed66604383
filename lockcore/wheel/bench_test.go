package wheel

import (
	"container/heap"
	"fmt"
	"math/rand/v2"
	"testing"
)

// Deadlines up to 2^20 ticks (about 3 hours at 10 ms) ahead spread the timers
// over levels 0 to 3, like a mix of acquire timeouts and leases.
const benchSpan = 1 << 20

var benchSizes = []int{1_000, 100_000, 1_000_000}

// benchTable is precomputed randomness, so the benchmarks time the queues and
// not the generator: random deltas and random indices into the pending set.
type benchTable struct {
	delta []uint64
	index []int
}

const benchTableSize = 1 << 16 // a power of two, indexed with a mask

func newBenchTable(n int) benchTable {
	r := rand.New(rand.NewPCG(1, 2))
	bt := benchTable{make([]uint64, benchTableSize), make([]int, benchTableSize)}
	for i := range benchTableSize {
		bt.delta[i] = 1 + r.Uint64N(benchSpan)
		bt.index[i] = r.IntN(n)
	}
	return bt
}

func BenchmarkAddRemove(b *testing.B) {
	w := New(0)
	bt := newBenchTable(1)
	var tm Timer
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		w.Add(&tm, bt.delta[i&(benchTableSize-1)])
		w.Remove(&tm)
	}
}

// BenchmarkAddCancel is the lock server's common case: with n timers
// pending, cancel a random one (its waiter got the lock) and add a new one.
// The heap sub-benchmarks do the same with a container/heap timer queue.
func BenchmarkAddCancel(b *testing.B) {
	for _, n := range benchSizes {
		bt := newBenchTable(n)
		b.Run(fmt.Sprintf("wheel/%s", sizeName(n)), func(b *testing.B) {
			w := New(0)
			timers := make([]Timer, n)
			for i := range timers {
				w.Add(&timers[i], bt.delta[i&(benchTableSize-1)])
			}
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				k := i & (benchTableSize - 1)
				t := &timers[bt.index[k]]
				w.Remove(t)
				w.Add(t, bt.delta[k])
			}
		})
		b.Run(fmt.Sprintf("heap/%s", sizeName(n)), func(b *testing.B) {
			h := make(timerHeap, 0, n)
			items := make([]heapTimer, n)
			for i := range items {
				items[i].deadline = bt.delta[i&(benchTableSize-1)]
				heap.Push(&h, &items[i])
			}
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				k := i & (benchTableSize - 1)
				t := &items[bt.index[k]]
				heap.Remove(&h, t.index)
				t.deadline = bt.delta[k]
				heap.Push(&h, t)
			}
		})
	}
}

// BenchmarkAdvance moves time one tick per op with n timers pending; each
// timer that fires is re-added up to 2^12 ticks (about 40 s) ahead, so about
// n/2048 timers fire per tick. fires/op and ns/fire are reported alongside.
func BenchmarkAdvance(b *testing.B) {
	const span = 1 << 12
	for _, n := range benchSizes {
		b.Run(sizeName(n), func(b *testing.B) {
			bt := newBenchTable(n)
			w := New(0)
			timers := make([]Timer, n)
			for i := range timers {
				w.Add(&timers[i], 1+bt.delta[i&(benchTableSize-1)]%span)
			}
			fired := 0
			fire := func(t *Timer) {
				fired++
				w.Add(t, w.Now()+1+bt.delta[fired&(benchTableSize-1)]%span)
			}
			// Reach the steady state, where the deadlines are spread
			// evenly, before timing.
			for range 2 * span {
				w.Advance(w.Now()+1, 0, fire)
			}
			fired = 0
			b.ReportAllocs()
			for b.Loop() {
				w.Advance(w.Now()+1, 0, fire)
			}
			b.ReportMetric(float64(fired)/float64(b.N), "fires/op")
			if fired > 0 {
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(fired), "ns/fire")
			}
		})
	}
}

// BenchmarkAdvanceIdleJump is a driver waking after a long idle period on a
// wheel with a few far timers: the jump must not cost per tick skipped.
func BenchmarkAdvanceIdleJump(b *testing.B) {
	w := New(0)
	var far [8]Timer
	b.ReportAllocs()
	for b.Loop() {
		for i := range far {
			w.Add(&far[i], w.Now()+MaxRange-uint64(i))
		}
		w.Advance(w.Now()+1<<36, 0, nil) // nothing due: fire is never called
	}
}

func sizeName(n int) string {
	switch {
	case n >= 1_000_000:
		return fmt.Sprintf("%dM", n/1_000_000)
	case n >= 1_000:
		return fmt.Sprintf("%dk", n/1_000)
	}
	return fmt.Sprint(n)
}

// heapTimer and timerHeap are the baseline: the usual container/heap timer
// queue, with each item tracking its index so it can be cancelled.
type heapTimer struct {
	deadline uint64
	index    int
}

type timerHeap []*heapTimer

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].deadline < h[j].deadline }
func (h timerHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}
func (h *timerHeap) Push(x any) {
	t := x.(*heapTimer)
	t.index = len(*h)
	*h = append(*h, t)
}
func (h *timerHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return t
}
