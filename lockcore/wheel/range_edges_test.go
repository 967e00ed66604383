package wheel

import (
	"testing"
)

// review13a: the wheel at the lock server's extremes.

// The largest deadline the server schedules: 100 years (codec.MaxSeconds)
// at the default 1 ms tick, from several starting ticks (including just
// below a top-level wrap): it fires exactly at its tick, never early, with
// a budget of 1 per call.
func TestHundredYearsAtOneMs(t *testing.T) {
	const hundredYears = uint64(3_155_760_000) * 1000 // ticks of 1 ms
	if hundredYears > MaxRange {
		t.Fatalf("100 years (%d ticks) beyond MaxRange %d: parked and re-parked", hundredYears, MaxRange)
	}
	for _, start := range []uint64{0, 1, 1<<36 - 1, 1<<42 - 1, 1<<42 - 5, 63 << 36, 1 << 50} {
		w := New(start)
		ns := newNodes(3)
		w.Add(&ns[0].Timer, start+hundredYears)
		w.Add(&ns[1].Timer, start+hundredYears+1)
		w.Add(&ns[2].Timer, start+hundredYears-1)
		// Walk there in big jumps with budget 1, as a starved driver would.
		var fired []*node
		step := hundredYears / 7
		for now := start; now < start+hundredYears-1; now += step {
			for {
				f, done := advanceRec(t, w, now, 1)
				fired = append(fired, f...)
				if done {
					break
				}
			}
			checkInvariants(t, w)
		}
		if len(fired) != 0 {
			t.Fatalf("start %d: fired early: %v", start, fired)
		}
		for _, c := range []struct {
			now  uint64
			want *node
		}{{start + hundredYears - 1, ns[2]}, {start + hundredYears, ns[0]}, {start + hundredYears + 1, ns[1]}} {
			var got []*node
			for {
				f, done := advanceRec(t, w, c.now, 1)
				got = append(got, f...)
				if done {
					break
				}
			}
			if len(got) != 1 || got[0] != c.want {
				t.Fatalf("start %d at %d: fired %v, want node %d", start, c.now, got, c.want.id)
			}
		}
		if w.Len() != 0 {
			t.Fatalf("len %d", w.Len())
		}
	}
}

// Many timers in one slot; fire removes other timers of the same slot
// (as lockcore's fire does with a key's same-tick events) and re-adds some
// for the same, already-due tick: each fires or is removed exactly once,
// across budget-limited calls.
func TestSameSlotRemoveAndReAddFromFire(t *testing.T) {
	w := New(100)
	const n = 2000
	ns := newNodes(n)
	for i, x := range ns {
		w.Add(&x.Timer, 5000+uint64(i%3)) // three ticks of one level-1 slot
	}
	count := make([]int, n)
	removed := make([]bool, n)
	readded := make([]bool, n)
	fire := func(tm *Timer) {
		x := tm.Owner.(*node)
		count[x.id]++
		if x.id%10 == 0 {
			// Remove the next nine: they must then never fire.
			for j := x.id + 1; j < x.id+10 && j < n; j++ {
				if w.Remove(&ns[j].Timer) {
					removed[j] = true
				}
			}
		}
		if x.id%7 == 3 && !readded[x.id] {
			readded[x.id] = true
			w.Add(tm, w.Now()) // due again at once
		}
	}
	for now := uint64(4990); now <= 5010; now++ {
		for !w.Advance(now, 3, fire) {
		}
	}
	for i := range ns {
		want := 1
		if readded[i] {
			want = 2
		}
		if removed[i] {
			if count[i] > want {
				t.Fatalf("removed timer %d fired %d times", i, count[i])
			}
			continue
		}
		if count[i] != want {
			t.Fatalf("timer %d fired %d times (removed %v readded %v)", i, count[i], removed[i], readded[i])
		}
	}
	if w.Len() != 0 {
		t.Fatalf("len %d", w.Len())
	}
}
