package wheel

import (
	"math"
	"math/bits"
	"time"
)

const (
	slotBits  = 6
	numSlots  = 1 << slotBits // slots per level
	slotMask  = numSlots - 1
	numLevels = 7 // 7 levels × 6 bits = 42 bits of deadline

	// topShift is the tick width, in bits, of one top-level slot.
	topShift = slotBits * (numLevels - 1)

	// dueLevel marks a timer that sits on the due list rather than in a
	// slot.
	dueLevel = numLevels
)

// MaxRange is how far ahead of Now, in ticks, the wheel can place a timer:
// 63 top-level slots of 2^36 ticks, about 4.3e12 ticks (137 years at
// 1 ms). A timer whose deadline is farther away is parked in the farthest
// slot and re-parked when that slot comes due; it keeps its real deadline
// and fires exactly at it. It is one slot short of the full top level so that
// the slot Now is in is never reused for a timer a full turn ahead. (So a
// single Advance spanning k×MaxRange ticks costs up to k extra cascades per
// parked timer; real clocks never get there.)
const MaxRange = (numSlots - 1) << topShift

// DefaultTick is the tick length the lock server is designed around.
const DefaultTick = time.Millisecond

// Timer is one pending deadline. Embed it in the struct it times out (a
// waiter, a lease) and set Owner to a pointer to that struct, so the fire
// callback can get back to it; storing a pointer in an interface does not
// allocate.
//
// The zero Timer is ready to use and not pending. A pending Timer is linked
// into its wheel by address: do not copy it, and do not let it be collected
// while pending (Remove it first).
type Timer struct {
	// Owner is never read by the wheel. It is for the caller, typically a
	// pointer to the struct that embeds the Timer.
	Owner any

	next, prev *Timer
	w          *Wheel // nil when not pending
	deadline   uint64
	level      uint8 // 0..numLevels-1, or dueLevel
	slot       uint8
}

// Pending reports whether t is in a wheel, i.e. added and not yet removed
// or fired.
func (t *Timer) Pending() bool { return t.w != nil }

// Deadline returns the tick t was last added with. It is unchanged by firing
// and by Remove, and is never clamped.
func (t *Timer) Deadline() uint64 { return t.deadline }

// Wheel is a hierarchical timing wheel. It is not safe for concurrent use;
// see the package documentation.
type Wheel struct {
	now   uint64
	count int

	// slots[l][s] heads a doubly linked list of timers; bit s of
	// occupied[l] is set exactly when that list is non-empty, which is
	// what lets Advance and NextDeadline skip empty slots.
	slots    [numLevels][numSlots]*Timer
	occupied [numLevels]uint64

	// due holds timers that were added with a deadline at or before now;
	// dueMin is a lower bound on their deadlines (it is not raised when one
	// is removed, which only makes it looser).
	due    *Timer
	dueMin uint64
}

// New returns an empty wheel whose current tick is start.
func New(start uint64) *Wheel {
	return &Wheel{now: start}
}

// Now returns the wheel's current tick: the largest tick Advance has reached.
func (w *Wheel) Now() uint64 { return w.now }

// Len returns the number of pending timers.
func (w *Wheel) Len() int { return w.count }

// Add schedules t to fire at tick deadline. If t is already pending in w it
// is moved. A deadline at or before Now fires on the next Advance, whatever
// its now. O(1), no allocation.
//
// Add panics if t is pending in another wheel.
func (w *Wheel) Add(t *Timer, deadline uint64) {
	if t.w != nil {
		w.Remove(t)
	}
	t.deadline = deadline
	w.place(t)
}

// Remove unschedules t and reports whether it was pending. Removing a timer
// that is not pending is a no-op. O(1), no allocation.
//
// Remove panics if t is pending in another wheel.
func (w *Wheel) Remove(t *Timer) bool {
	switch t.w {
	case nil:
		return false
	case w:
		w.unlink(t)
		return true
	default:
		panic("wheel: timer is pending in another wheel")
	}
}

// Advance moves the current tick forward to now and fires every timer whose
// deadline is at or before now, in deadline order (timers that were already
// due when added come first). A timer fires in the first Advance whose now is
// at or past its deadline, never earlier. A now before Now() does not move
// the wheel back; it only fires timers that are already due.
//
// fire is called with each expired timer after it has been unlinked, so
// t.Pending() is false and fire may Add or Remove any timer, t included. A
// timer that fire adds with a deadline at or before now fires later in the
// same call (subject to budget): a fire that keeps re-adding already-due
// timers with budget <= 0 never returns. fire must not call Advance.
//
// budget bounds the work of one call: it is the number of timers the call
// may touch, where firing a timer costs 1 and moving one from a coarse slot
// to a finer one (cascading) costs 1. Empty slots are skipped with the
// bitmaps, and every slot visited holds at least one timer, so a call does
// O(budget × levels) work however far now is and however many timers are
// pending. budget <= 0 means no limit.
//
// Advance returns true when it is done: Now() is now (or was already later)
// and no pending timer has a deadline at or before it. It returns false when
// the budget ran out first; Now() may then be short of now and some expired
// timers may not have fired yet. The caller may release its lock, then call
// Advance again (with the same or a later now) to carry on. Nothing is lost or
// fired twice across calls, and Add and Remove stay valid in between.
func (w *Wheel) Advance(now uint64, budget int, fire func(*Timer)) (done bool) {
	if budget <= 0 {
		budget = math.MaxInt
	}
	if now < w.now {
		now = w.now // time does not go back; just finish what is due
	}
	for {
		for w.due != nil {
			if budget == 0 {
				return false
			}
			budget--
			t := w.due
			w.unlink(t)
			fire(t)
		}

		level, start, ok := w.earliest()
		if !ok || start > now {
			w.now = now
			return true
		}
		// Every tick before start has an empty slot at every level, so
		// jump straight there. (start == w.now only for a slot that a
		// previous call left half drained; it is resumed in place.)
		w.now = start

		// Drain the slot that has come due: timers whose deadline is now
		// fire, the rest drop to a finer level relative to the new now.
		// A timer placed meanwhile, by fire or by cascading, never lands in
		// this slot (placement always picks a slot strictly ahead of now),
		// so the loop ends.
		slot := uint8(start>>(uint(level)*slotBits)) & slotMask
		for t := w.slots[level][slot]; t != nil; t = w.slots[level][slot] {
			if budget == 0 {
				return false
			}
			budget--
			w.unlink(t)
			if t.deadline <= w.now {
				fire(t)
			} else {
				w.place(t)
			}
		}
	}
}

// NextDeadline returns a tick T such that no pending timer has a deadline
// before T, so Advance(now) with now < T fires nothing; ok is false when
// nothing is pending. A driver can sleep until T and then call Advance(T).
//
// T is exact when the earliest timer is within the current 64-tick window or
// already due. Otherwise T is the first tick of the slot holding the earliest
// timer: Advance(T) then cascades that slot, and may fire nothing, after
// which NextDeadline is finer. T <= Now() means work is due now: timers added
// with a past deadline, or a slot a budget-limited Advance left half drained.
//
// Cost: a few bitmap operations per level, no timer is visited.
func (w *Wheel) NextDeadline() (tick uint64, ok bool) {
	if w.due != nil {
		return w.dueMin, true
	}
	_, start, ok := w.earliest()
	return start, ok
}

// earliest returns the level of the occupied slot that comes due first and
// the tick at which it does, its first tick.
//
// Placement keeps every occupied slot strictly ahead of the current one at
// its level (in circular order at the top level), so rotating the bitmap to
// put the current slot at bit 0 makes the trailing-zero count the number of
// slots to go. A count of 0 is a slot that a budget-limited Advance left half
// drained; its start is <= now, so it is resumed first.
func (w *Wheel) earliest() (level int, start uint64, ok bool) {
	for l := range numLevels {
		m := w.occupied[l]
		if m == 0 {
			continue
		}
		shift := uint(l) * slotBits
		pos := w.now >> shift // current slot, counted from tick 0
		ahead := bits.TrailingZeros64(bits.RotateLeft64(m, -int(pos&slotMask)))
		s := (pos + uint64(ahead)) << shift
		if !ok || s < start {
			level, start, ok = l, s, true
		}
	}
	return level, start, ok
}

// place links an unlinked t according to its deadline and the current tick.
//
// Below the top level a timer goes to the level of the highest bit in which
// its deadline differs from now, at the slot given by the deadline's bits
// for that level. The bits above that level then equal now's, and the
// deadline's slot is strictly ahead of now's, so the slot comes due (and is
// cascaded) exactly when now reaches its first tick, never earlier. The top
// level is circular instead, which is what MaxRange's clamp is for.
func (w *Wheel) place(t *Timer) {
	d := t.deadline
	if d <= w.now {
		if w.due == nil || d < w.dueMin {
			w.dueMin = d
		}
		w.link(t, &w.due, dueLevel, 0)
		return
	}
	if d-w.now > MaxRange {
		// Park it in the farthest slot; it will be placed again from
		// there, with its real deadline.
		d = w.now + MaxRange
	}
	level := (bits.Len64(d^w.now) - 1) / slotBits
	if level >= numLevels {
		level = numLevels - 1
	}
	slot := uint8(d>>(uint(level)*slotBits)) & slotMask
	w.occupied[level] |= 1 << slot
	w.link(t, &w.slots[level][slot], uint8(level), slot)
}

func (w *Wheel) link(t *Timer, head **Timer, level, slot uint8) {
	t.prev = nil
	t.next = *head
	if t.next != nil {
		t.next.prev = t
	}
	*head = t
	t.w = w
	t.level, t.slot = level, slot
	w.count++
}

func (w *Wheel) unlink(t *Timer) {
	if t.next != nil {
		t.next.prev = t.prev
	}
	if t.prev != nil {
		t.prev.next = t.next
	} else if t.level == dueLevel {
		w.due = t.next
	} else {
		w.slots[t.level][t.slot] = t.next
		if t.next == nil {
			w.occupied[t.level] &^= 1 << t.slot
		}
	}
	t.next, t.prev, t.w = nil, nil, nil
	w.count--
}

// TickOf returns the tick containing the instant elapsed after the caller's
// epoch, rounding down: use it for the current tick. Measure elapsed with
// time.Since(epoch), which uses the monotonic clock. A negative elapsed is
// tick 0; tick must be positive.
func TickOf(elapsed, tick time.Duration) uint64 {
	if elapsed <= 0 {
		return 0
	}
	return uint64(elapsed) / uint64(tick)
}

// DeadlineOf returns the first tick that starts at or after the instant
// elapsed after the caller's epoch, rounding up: use it for deadlines, so
// that a timer that fires at tick T fires no earlier in real time than asked.
// A negative elapsed is tick 0; tick must be positive.
func DeadlineOf(elapsed, tick time.Duration) uint64 {
	if elapsed <= 0 {
		return 0
	}
	return (uint64(elapsed) + uint64(tick) - 1) / uint64(tick)
}
