// Package wheel owns the lock server's timers: acquire timeouts and lease
// expiry are each a Timer in a Wheel, a hierarchical timing wheel with
// cascading (Varghese & Lauck, scheme 7).
//
// # Ownership
//
// A Wheel has a single owner. It has no mutex, starts no goroutine and never
// reads the clock: the caller holds whatever lock protects the wheel (the
// lock table's) around every call, including the fire callback, which runs
// inside Advance. Add, Remove, NextDeadline and Len are O(1) and never
// allocate, so they are cheap enough to call under that lock on every
// acquire and release.
//
// The caller embeds a Timer in the struct it times out and sets Timer.Owner
// to a pointer to that struct; the fire callback gets the *Timer and uses
// Owner to find its way back. Timers are linked in place: no node is
// allocated and Remove needs no search.
//
// # Ticks
//
// Time is an uint64 count of ticks, in whatever unit the caller picks
// (DefaultTick, 1 ms, for the lock server). The caller converts: TickOf for
// the current tick (rounds down) and DeadlineOf for a deadline (rounds up, so
// a timer never fires early in real time). Measure from a fixed epoch with
// time.Since, which uses the monotonic clock.
//
// The wheel's current tick starts at New's argument and moves only forward,
// in Advance. A timer fires in the first Advance whose now is at or after its
// deadline, never before: with Advance called every tick that is at most one
// tick late. A deadline at or before the current tick fires on the next
// Advance. Timers fire in deadline order, except that those already due when
// added fire first.
//
// # Range
//
// The wheel has 7 levels of 64 slots; level l's slots are 64^l ticks wide.
// It places timers up to MaxRange ticks (about 4.3e12: 137 years at 1 ms)
// ahead of the current tick. A deadline farther away is clamped for placement
// only: the timer is parked MaxRange ahead and placed again when that slot
// comes due, so it still fires exactly at its deadline. There is no overflow
// list.
//
// # Budget
//
// Advance takes a budget, the number of timers it may fire or cascade in one
// call, so that one call holds the caller's lock for a bounded time even when
// a million timers expire together or a coarse slot holding many timers comes
// due. Empty stretches cost nothing: the wheel jumps over them using a 64-bit
// occupancy bitmap per level, so advancing an idle wheel by any amount is
// O(levels). When the budget runs out, Advance returns false with the rest
// carried over: release the lock, reacquire it and call Advance again.
package wheel
