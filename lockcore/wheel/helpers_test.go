package wheel

import (
	"math/rand/v2"
	"testing"
)

// node stands for the caller's struct that embeds a Timer.
type node struct {
	Timer
	id int
}

func newNodes(n int) []*node {
	ns := make([]*node, n)
	for i := range ns {
		ns[i] = &node{id: i}
		ns[i].Owner = ns[i]
	}
	return ns
}

// logUniform returns a value whose bit length is uniform in [0, maxBits], so
// that small and huge values (and so every level) are equally exercised.
func logUniform(r *rand.Rand, maxBits int) uint64 {
	b := r.IntN(maxBits + 1)
	if b == 0 {
		return 0
	}
	return 1<<(b-1) | r.Uint64()&(1<<(b-1)-1)
}

// advanceRec is Advance with bookkeeping: it checks in fire that the timer
// was due and the wheel's time was not behind it, and returns what fired.
func advanceRec(tb testing.TB, w *Wheel, now uint64, budget int) (fired []*node, done bool) {
	tb.Helper()
	done = w.Advance(now, budget, func(t *Timer) {
		if t.Pending() {
			tb.Fatal("fired timer must be unlinked")
		}
		if t.Deadline() > w.Now() {
			tb.Fatalf("deadline %d fired early, at %d", t.Deadline(), w.Now())
		}
		fired = append(fired, t.Owner.(*node))
	})
	return fired, done
}

// checkInvariants walks every list of w and checks links, bitmaps, the count
// and that every timer sits in a slot that comes due at or before its
// deadline (and, below the top level, no later than its deadline's slot).
// It runs after every step of the model test, so it uses plain comparisons
// rather than testify's reflection-based ones.
func checkInvariants(tb testing.TB, w *Wheel) {
	tb.Helper()
	n := 0
	walk := func(head *Timer, level, slot uint8, each func(*Timer) string) {
		var prev *Timer
		for t := head; t != nil; t = t.next {
			switch {
			case t.w != w:
				tb.Fatalf("timer in %d/%d has the wrong wheel", level, slot)
			case t.prev != prev:
				tb.Fatalf("broken prev link in %d/%d", level, slot)
			case t.level != level || t.slot != slot:
				tb.Fatalf("timer in %d/%d says it is in %d/%d", level, slot, t.level, t.slot)
			}
			if msg := each(t); msg != "" {
				tb.Fatalf("timer in %d/%d, deadline %d, now %d: %s", level, slot, t.deadline, w.now, msg)
			}
			prev = t
			n++
		}
	}
	walk(w.due, dueLevel, 0, func(t *Timer) string {
		if t.deadline < w.dueMin || t.deadline > w.now {
			return "due timer out of [dueMin, now]"
		}
		return ""
	})
	partial := 0
	for l := range numLevels {
		shift := uint(l) * slotBits
		pos := w.now >> shift
		for s := range numSlots {
			head := w.slots[l][s]
			if (head != nil) != (w.occupied[l]&(1<<s) != 0) {
				tb.Fatalf("bitmap out of sync at %d/%d", l, s)
			}
			if head == nil {
				continue
			}
			ahead := (uint64(s) - pos) & slotMask
			if ahead == 0 {
				partial++
			}
			if l < numLevels-1 && uint64(s) < pos&slotMask {
				tb.Fatalf("slot %d/%d is behind now %d", l, s, w.now)
			}
			start := (pos + ahead) << shift
			walk(head, uint8(l), uint8(s), func(t *Timer) string {
				if t.deadline < start {
					return "slot comes due after its timer"
				}
				if l < numLevels-1 && t.deadline-start >= 1<<shift {
					return "timer beyond its slot"
				}
				return ""
			})
		}
	}
	if partial > 1 {
		tb.Fatalf("%d half-drained slots", partial)
	}
	if n != w.count {
		tb.Fatalf("count %d, found %d timers", w.count, n)
	}
}

// trueMin is the earliest deadline among pending nodes.
func trueMin(ns []*node) (uint64, bool) {
	var m uint64
	ok := false
	for _, n := range ns {
		if n.Pending() && (!ok || n.Deadline() < m) {
			m, ok = n.Deadline(), true
		}
	}
	return m, ok
}
