package wheel

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Starting ticks chosen to sit just before level boundaries, where a
// cascading bug would show.
var starts = []uint64{
	0,
	1,
	63,
	4095 - 3,
	1<<36 - 2,
	1<<42 - 5,
	12_345_678_901,
	math.MaxUint64 - 1<<45,
}

func TestFiresExactlyAtDeadline(t *testing.T) {
	deltas := []uint64{
		1, 2, 62, 63, 64, 65, 100, 4095, 4096, 4097, 1 << 18, 1<<24 + 7,
		1<<30 - 1, 1 << 36, 1<<36 + 1, 1 << 40, 1<<41 + 12345,
		MaxRange - 1, MaxRange, MaxRange + 1, 3*MaxRange + 17,
	}
	for _, start := range starts {
		for _, delta := range deltas {
			d := start + delta
			if d < start {
				continue // would overflow uint64
			}
			r := rand.New(rand.NewPCG(start, delta))

			// One jump to just before the deadline, then onto it.
			w := New(start)
			n := newNodes(1)[0]
			w.Add(&n.Timer, d)
			require.Equal(t, d, n.Deadline())
			fired, done := advanceRec(t, w, d-1, 0)
			require.True(t, done)
			require.Empty(t, fired, "start %d delta %d: fired early", start, delta)
			checkInvariants(t, w)
			fired, _ = advanceRec(t, w, d, 0)
			require.Equal(t, []*node{n}, fired, "start %d delta %d", start, delta)
			require.Zero(t, w.Len())

			// Random-sized jumps, many of them ending just short of a
			// level boundary, then onto the deadline.
			w = New(start)
			w.Add(&n.Timer, d)
			for w.Now() < d-1 {
				left := d - 1 - w.Now()
				step := 1 + logUniform(r, 64)%left
				fired, _ = advanceRec(t, w, w.Now()+step, 0)
				require.Empty(t, fired, "start %d delta %d: fired early at %d", start, delta, w.Now())
				checkInvariants(t, w)
			}
			fired, _ = advanceRec(t, w, d, 0)
			require.Equal(t, []*node{n}, fired)

			// One tick at a time, where that is affordable.
			if delta <= 5000 {
				w = New(start)
				w.Add(&n.Timer, d)
				for now := start + 1; now <= d; now++ {
					fired, _ = advanceRec(t, w, now, 0)
					if now < d {
						require.Empty(t, fired)
					} else {
						require.Equal(t, []*node{n}, fired)
					}
				}
			}
		}
	}
}

// fireWindow checks the contract on many timers: each fires in the first
// Advance whose now is at or after its deadline, exactly once, and fires are
// in deadline order.
func fireWindow(t *testing.T, w *Wheel, ns []*node, next func(now uint64) uint64) {
	t.Helper()
	firedAt := map[*node]uint64{}
	var last uint64
	prev := w.Now()
	for w.Len() > 0 {
		now := next(w.Now())
		fired, done := advanceRec(t, w, now, 0)
		require.True(t, done)
		for _, n := range fired {
			d := n.Deadline()
			if _, dup := firedAt[n]; dup {
				t.Fatalf("timer %d fired twice", n.id)
			}
			if d <= prev || d > now {
				t.Fatalf("deadline %d fired by Advance(%d) after Advance(%d)", d, now, prev)
			}
			if d < last {
				t.Fatalf("deadline %d fired after %d", d, last)
			}
			last = d
			firedAt[n] = now
		}
		prev = now
	}
	require.Len(t, firedAt, len(ns))
}

func TestRandomDeadlinesBigJumps(t *testing.T) {
	for seed := range uint64(20) {
		r := rand.New(rand.NewPCG(seed, 1))
		start := starts[seed%uint64(len(starts))]
		w := New(start)
		ns := newNodes(500)
		var deadlines []uint64
		for _, n := range ns {
			d := start + 1 + logUniform(r, 44)
			if d < start {
				d = math.MaxUint64
			}
			w.Add(&n.Timer, d)
			deadlines = append(deadlines, d)
		}
		checkInvariants(t, w)
		fireWindow(t, w, ns, func(now uint64) uint64 {
			// Land on a deadline or just before one now and then, to
			// hit the edges; otherwise jump a random distance.
			switch d := deadlines[r.IntN(len(deadlines))]; {
			case d > now && r.IntN(3) == 0:
				return d - uint64(r.IntN(2))
			default:
				next := now + 1 + logUniform(r, 44)
				if next < now {
					return math.MaxUint64
				}
				return next
			}
		})
		checkInvariants(t, w)
	}
}

func TestRandomDeadlinesOneTickAtATime(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	start := uint64(1<<18 - 1000) // crosses a level-3 boundary on the way
	w := New(start)
	ns := newNodes(2000)
	for _, n := range ns {
		w.Add(&n.Timer, start+1+logUniform(r, 17))
	}
	fireWindow(t, w, ns, func(now uint64) uint64 { return now + 1 })
}

func TestRemoveBeforeFire(t *testing.T) {
	w := New(100)
	ns := newNodes(10)
	for i, n := range ns {
		w.Add(&n.Timer, 100+uint64(i)*1000)
	}
	require.Equal(t, 10, w.Len())
	for i, n := range ns {
		if i%2 == 1 {
			require.True(t, w.Remove(&n.Timer))
			require.False(t, n.Pending())
			require.False(t, w.Remove(&n.Timer), "second Remove is a no-op")
		}
	}
	require.Equal(t, 5, w.Len())
	checkInvariants(t, w)
	fired, done := advanceRec(t, w, 1<<20, 0)
	require.True(t, done)
	require.Len(t, fired, 5)
	for _, n := range fired {
		require.Zero(t, n.id%2, "removed timer fired")
	}
	var zero Timer
	require.False(t, w.Remove(&zero))
	require.False(t, zero.Pending())
}

func TestAddMovesPendingTimer(t *testing.T) {
	w := New(0)
	n := newNodes(1)[0]
	w.Add(&n.Timer, 5000)
	w.Add(&n.Timer, 10)
	require.Equal(t, 1, w.Len())
	checkInvariants(t, w)
	fired, _ := advanceRec(t, w, 10, 0)
	require.Equal(t, []*node{n}, fired)
	fired, _ = advanceRec(t, w, 10000, 0)
	require.Empty(t, fired)
}

func TestReAddFromFire(t *testing.T) {
	t.Run("periodic within one big jump", func(t *testing.T) {
		const period = 7
		w := New(0)
		var tm Timer
		var at []uint64
		w.Add(&tm, period)
		w.Advance(1000, 0, func(t *Timer) {
			// Inside fire, Now() is the deadline being fired, even
			// in the middle of a jump.
			at = append(at, w.Now())
			w.Add(t, w.Now()+period)
		})
		require.Len(t, at, 1000/period)
		for i, a := range at {
			require.Equal(t, uint64(i+1)*period, a)
		}
		require.True(t, tm.Pending())
		require.Equal(t, uint64(1001), tm.Deadline())
	})

	t.Run("already due fires again in the same call", func(t *testing.T) {
		w := New(0)
		var tm Timer
		w.Add(&tm, 3)
		fires := 0
		done := w.Advance(3, 10, func(t *Timer) {
			fires++
			w.Add(t, w.Now()) // due again at once
		})
		require.False(t, done, "budget must stop a fire that keeps re-adding")
		require.Equal(t, 10, fires)
	})

	t.Run("fire removes and adds others", func(t *testing.T) {
		w := New(0)
		ns := newNodes(4)
		for _, n := range ns[:3] {
			w.Add(&n.Timer, 50) // all in one slot
		}
		var got []int
		w.Advance(50, 0, func(t *Timer) {
			n := t.Owner.(*node)
			got = append(got, n.id)
			if len(got) == 1 {
				// Cancel whichever sibling is still pending and
				// add a new timer that is already due.
				for _, o := range ns[:3] {
					if w.Remove(&o.Timer) {
						break
					}
				}
				w.Add(&ns[3].Timer, 40)
			}
		})
		require.Len(t, got, 3)
		require.Contains(t, got, 3)
		require.Zero(t, w.Len())
	})
}

func TestPastDeadline(t *testing.T) {
	w := New(100)
	ns := newNodes(3)
	w.Add(&ns[0].Timer, 50)
	w.Add(&ns[1].Timer, 100)
	w.Add(&ns[2].Timer, 0)
	nd, ok := w.NextDeadline()
	require.True(t, ok)
	require.Equal(t, uint64(0), nd)
	checkInvariants(t, w)

	// The same now still fires them: they must never be lost.
	fired, done := advanceRec(t, w, 100, 0)
	require.True(t, done)
	require.ElementsMatch(t, ns, fired)
	require.Equal(t, uint64(100), w.Now())

	// A now behind the wheel does not move time back but still fires
	// what is due.
	w.Add(&ns[0].Timer, 7)
	fired, done = advanceRec(t, w, 5, 0)
	require.True(t, done)
	require.Equal(t, []*node{ns[0]}, fired)
	require.Equal(t, uint64(100), w.Now())
}

func TestFarDeadlines(t *testing.T) {
	for _, start := range starts {
		w := New(start)
		ns := newNodes(3)
		far := start + 3*MaxRange + 17 // parked and re-parked 3 times
		if far < start {
			far = math.MaxUint64
		}
		w.Add(&ns[0].Timer, far)
		w.Add(&ns[1].Timer, math.MaxUint64)
		w.Add(&ns[2].Timer, start+MaxRange)
		require.Equal(t, uint64(math.MaxUint64), ns[1].Deadline(), "deadline is kept, not clamped")
		checkInvariants(t, w)

		nd, ok := w.NextDeadline()
		require.True(t, ok)
		require.LessOrEqual(t, nd, start+MaxRange)

		fired, _ := advanceRec(t, w, start+MaxRange-1, 0)
		require.Empty(t, fired)
		fired, _ = advanceRec(t, w, start+MaxRange, 0)
		require.Equal(t, []*node{ns[2]}, fired)
		checkInvariants(t, w)

		fired, _ = advanceRec(t, w, far-1, 0)
		require.Empty(t, fired, "start %d: far timer fired early", start)
		checkInvariants(t, w)
		fired, _ = advanceRec(t, w, far, 0)
		if far == math.MaxUint64 {
			require.ElementsMatch(t, ns[:2], fired)
		} else {
			require.Equal(t, []*node{ns[0]}, fired)
			require.True(t, w.Remove(&ns[1].Timer))
		}
		require.Zero(t, w.Len())
	}
}

func TestIdleJumpIsCheap(t *testing.T) {
	// Tick by tick this would never finish.
	w := New(0)
	require.True(t, w.Advance(math.MaxUint64-1, 1, func(*Timer) { t.Fatal("nothing to fire") }))
	require.Equal(t, uint64(math.MaxUint64-1), w.Now())

	// A sparse wheel: each of these needs a handful of cascades, not a
	// visit to every slot in between.
	w = New(5)
	ns := newNodes(64)
	for i, n := range ns {
		w.Add(&n.Timer, 5+uint64(i+1)<<35)
	}
	steps := 0
	for {
		steps++
		if w.Advance(1<<42, 1, func(*Timer) {}) {
			break
		}
	}
	require.LessOrEqual(t, steps, len(ns)*(numLevels+1)+1)
	require.Zero(t, w.Len())
}

func TestBudget(t *testing.T) {
	for _, budget := range []int{1, 2, 7, 100} {
		r := rand.New(rand.NewPCG(uint64(budget), 3))
		w := New(1000)
		ns := newNodes(1000)
		for _, n := range ns {
			w.Add(&n.Timer, 1000+logUniform(r, 17)) // some already due
		}
		const target = 1000 + 1<<17
		fired := map[*node]int{}
		calls := 0
		for done := false; !done; {
			calls++
			var got []*node
			got, done = advanceRec(t, w, target, budget)
			require.LessOrEqual(t, len(got), budget)
			if !done {
				require.LessOrEqual(t, w.Now(), uint64(target))
			}
			for _, n := range got {
				fired[n]++
			}
			checkInvariants(t, w)

			// The wheel stays usable between calls.
			if calls == 3 {
				late := newNodes(2)
				w.Add(&late[0].Timer, w.Now()) // due: must fire in this run
				w.Add(&late[1].Timer, target+1)
				ns = append(ns, late...)
				for _, n := range ns[:10] {
					w.Remove(&n.Timer)
				}
			}
		}
		require.Equal(t, uint64(target), w.Now())
		require.Equal(t, 1, w.Len(), "only the timer after target is left")
		for _, n := range ns[10:] {
			if n.Deadline() <= target {
				require.Equal(t, 1, fired[n], "budget %d: timer %d", budget, n.id)
			} else {
				require.Zero(t, fired[n])
			}
		}
		require.GreaterOrEqual(t, calls, len(fired)/budget)
	}
}

func TestNextDeadline(t *testing.T) {
	w := New(10)
	_, ok := w.NextDeadline()
	require.False(t, ok)

	// Exact inside the current 64-tick window.
	var tm Timer
	w.Add(&tm, 15)
	nd, ok := w.NextDeadline()
	require.True(t, ok)
	require.Equal(t, uint64(15), nd)
	w.Remove(&tm)

	for seed := range uint64(20) {
		r := rand.New(rand.NewPCG(seed, 9))
		start := starts[seed%uint64(len(starts))]
		w := New(start)
		ns := newNodes(200)
		for _, n := range ns {
			d := start + 1 + logUniform(r, 42)
			if d < start {
				d = math.MaxUint64
			}
			w.Add(&n.Timer, d)
		}
		// A driver loop: sleep until NextDeadline, Advance to it.
		wakeups := 0
		for w.Len() > 0 {
			nd, ok := w.NextDeadline()
			require.True(t, ok)
			m, _ := trueMin(ns)
			require.LessOrEqual(t, nd, m, "NextDeadline after the earliest deadline")
			require.Greater(t, nd, w.Now())
			fired, _ := advanceRec(t, w, nd-1, 0)
			require.Empty(t, fired, "fired before NextDeadline")
			fired, _ = advanceRec(t, w, nd, 0)
			if nd == m {
				require.NotEmpty(t, fired)
			}
			wakeups++
		}
		// Spurious wakeups are bounded by the cascades.
		require.LessOrEqual(t, wakeups, len(ns)*numLevels)
	}
}

func TestForeignWheelPanics(t *testing.T) {
	a, b := New(0), New(0)
	var tm Timer
	a.Add(&tm, 10)
	require.Panics(t, func() { b.Remove(&tm) })
	require.Panics(t, func() { b.Add(&tm, 20) })
	require.True(t, a.Remove(&tm))
	b.Add(&tm, 20) // fine once it has left a
	require.Equal(t, 1, b.Len())
}

func TestTickConversion(t *testing.T) {
	const tick = 10 * time.Millisecond
	require.Equal(t, uint64(0), TickOf(-time.Second, tick))
	require.Equal(t, uint64(0), TickOf(9*time.Millisecond, tick))
	require.Equal(t, uint64(1), TickOf(10*time.Millisecond, tick))
	require.Equal(t, uint64(12), TickOf(129*time.Millisecond, tick))
	require.Equal(t, uint64(0), DeadlineOf(-time.Second, tick))
	require.Equal(t, uint64(1), DeadlineOf(time.Nanosecond, tick))
	require.Equal(t, uint64(1), DeadlineOf(10*time.Millisecond, tick))
	require.Equal(t, uint64(13), DeadlineOf(121*time.Millisecond, tick))
	// 100 years fits with room to spare.
	require.Less(t, DeadlineOf(100*365*24*time.Hour, DefaultTick), uint64(MaxRange))
	require.Equal(t, uint64(math.MaxInt64)/uint64(tick)+1, DeadlineOf(math.MaxInt64, tick))
}

// TestModel runs random Add/Remove/Advance mixes, including calls from inside
// fire and budget-limited Advances left unfinished, against a map of what
// should be pending.
func TestModel(t *testing.T) {
	seeds := uint64(300)
	if testing.Short() {
		seeds = 30
	}
	for seed := range seeds {
		runModel(t, seed)
	}
}

func runModel(t *testing.T, seed uint64) {
	r := rand.New(rand.NewPCG(seed, 42))
	start := starts[seed%uint64(len(starts))] + uint64(r.IntN(100))
	w := New(start)
	ns := newNodes(48)
	model := map[*node]uint64{}

	deadline := func() uint64 {
		now := w.Now()
		var d uint64
		switch r.IntN(10) {
		case 0: // in the past
			return now - min(now, uint64(r.IntN(50)))
		case 1: // beyond the range
			d = now + MaxRange + logUniform(r, 40)
		default:
			d = now + logUniform(r, 44)
		}
		if d < now {
			d = math.MaxUint64 // overflowed
		}
		return d
	}
	add := func(n *node) {
		d := deadline()
		w.Add(&n.Timer, d)
		model[n] = d
	}
	remove := func(n *node) {
		_, want := model[n]
		require.Equal(t, want, w.Remove(&n.Timer), "seed %d", seed)
		delete(model, n)
	}

	for op := range 400 {
		switch k := r.IntN(10); {
		case k < 4:
			add(ns[r.IntN(len(ns))])
		case k < 6:
			remove(ns[r.IntN(len(ns))])
		default:
			target := w.Now() + logUniform(r, 44)
			if target < w.Now() || r.IntN(20) == 0 {
				target = w.Now() - min(w.Now(), 10) // behind: must not go back
			}
			if m, ok := trueMin(ns); ok && r.IntN(4) == 0 && m >= w.Now() {
				target = m - uint64(r.IntN(2)) // on an edge
			}
			budget := 0
			if r.IntN(2) == 0 {
				budget = 1 + r.IntN(20)
			}
			before := w.Now()
			fired := 0
			done := w.Advance(target, budget, func(tm *Timer) {
				n := tm.Owner.(*node)
				d, ok := model[n]
				require.True(t, ok, "seed %d op %d: fired a timer that is not pending", seed, op)
				require.Equal(t, d, tm.Deadline())
				require.LessOrEqual(t, d, max(target, before), "seed %d op %d: fired past target", seed, op)
				require.LessOrEqual(t, d, w.Now(), "seed %d op %d: fired early", seed, op)
				require.False(t, tm.Pending())
				delete(model, n)
				fired++
				switch r.IntN(8) {
				case 0:
					add(n)
				case 1:
					add(ns[r.IntN(len(ns))])
				case 2:
					remove(ns[r.IntN(len(ns))])
				}
			})
			if budget > 0 {
				require.LessOrEqual(t, fired, budget)
			}
			if done {
				require.Equal(t, max(target, before), w.Now())
				for n, d := range model {
					require.Greater(t, d, w.Now(), "seed %d op %d: timer %d due but not fired", seed, op, n.id)
				}
			} else {
				require.Positive(t, budget)
			}
		}

		checkInvariants(t, w)
		require.Equal(t, len(model), w.Len())
		nd, ok := w.NextDeadline()
		m, mok := trueMin(ns)
		require.Equal(t, mok, ok)
		if ok {
			require.LessOrEqual(t, nd, m, "seed %d op %d: NextDeadline too late", seed, op)
		}
	}

	// Drain: everything left fires exactly once, and in deadline order
	// once past what was already due.
	var ds []uint64
	due := w.Now()
	for w.Len() > 0 {
		m, _ := trueMin(ns)
		w.Advance(max(m, w.Now()), 0, func(tm *Timer) {
			require.Equal(t, model[tm.Owner.(*node)], tm.Deadline())
			delete(model, tm.Owner.(*node))
			if tm.Deadline() > due {
				ds = append(ds, tm.Deadline())
			}
		})
	}
	require.Empty(t, model)
	require.True(t, slices.IsSorted(ds))
}
