package lockcore

import (
	"errors"
	"fmt"
)

// This file holds the invariant walker: a full, O(state) check of every
// structure the core keeps. The core's tests run it after every step of
// the scenario and model tests and at quiescence in the concurrent tests;
// tests of other packages (fuzzing the reactor's sessions over a Table with
// a fake clock) call CheckInvariants.

// CheckInvariants walks the lock state and returns the first broken
// invariant, or nil. It takes each shard lock in turn: call it while no
// other goroutine uses the Table, or the cross-shard totals may not add up.
func (t *Table) CheckInvariants() error { return t.checkInvariants(false) }

// ceilDiv is the deadline rounding of the core: the first tick at or after
// ns.
func ceilDiv(ns, tick int64) int64 { return (ns + tick - 1) / tick }

// checkInvariants walks every shard (taking each shard lock in turn, so it
// must not be called while the Table is in use by other goroutines if the
// cross-shard totals are to be meaningful) and returns the first violation.
// monotonic additionally checks that the idle list is ordered by idleSince,
// which holds whenever callers pass non-decreasing times.
func (t *Table) checkInvariants(monotonic bool) error {
	var total int64
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		err := s.c.checkInvariants(monotonic)
		total += int64(len(s.c.locks) + len(s.c.sems))
		s.mu.Unlock()
		if err != nil {
			return fmt.Errorf("shard %d: %w", i, err)
		}
	}
	if got := t.lim.keys.Load(); got != total {
		return fmt.Errorf("global key counter %d, keys in shard maps %d", got, total)
	}
	if max := t.lim.maxLocks; max > 0 && total > max {
		return fmt.Errorf("%d keys tracked, MaxLocks %d", total, max)
	}
	return nil
}

// checkQueue checks the links and count of an intrusive key queue.
func checkQueue(q *queue, what string) error {
	var prev *node
	var n int64
	for x := q.head; x != nil; x = x.knext {
		if x.kprev != prev {
			return fmt.Errorf("%s: broken kprev link at position %d", what, n)
		}
		prev = x
		n++
		if n > 1<<24 {
			return fmt.Errorf("%s: cycle", what)
		}
	}
	if q.tail != prev {
		return fmt.Errorf("%s: tail does not match the last node", what)
	}
	if q.n != n {
		return fmt.Errorf("%s: count %d, %d linked", what, q.n, n)
	}
	return nil
}

func (c *core) checkInvariants(monotonic bool) error {
	tick := c.lim.tickNs
	queued := make(map[*node]bool) // holders and waiters, reached from keys
	graves := make(map[*node]bool) // tombstones, reached from keys
	pendingTimers := 0
	idleKeys := 0
	tombs := make(map[*key]int64)
	shardBit := uint64(1) << (uint(c.index) & 63)

	for nsi, m := range []map[string]*key{c.locks, c.sems} {
		ns := Namespace(nsi)
		for name, k := range m {
			kn := fmt.Sprintf("key %d/%q", ns, name)
			if k.name != name || k.ns != ns {
				return fmt.Errorf("%s: stored as %d/%q", kn, k.ns, k.name)
			}
			if k.limit <= 0 || (ns == Locks && k.limit != 1) {
				return fmt.Errorf("%s: limit %d", kn, k.limit)
			}
			if err := checkQueue(&k.holders, kn+" holders"); err != nil {
				return err
			}
			if err := checkQueue(&k.waiters, kn+" waiters"); err != nil {
				return err
			}
			if k.holders.n > k.limit {
				return fmt.Errorf("%s: %d holders, limit %d", kn, k.holders.n, k.limit)
			}
			if k.waiters.n > 0 && k.holders.n != k.limit {
				return fmt.Errorf("%s: %d waiters but only %d of %d slots held", kn, k.waiters.n, k.holders.n, k.limit)
			}
			if max := c.lim.maxWaiters; max > 0 && k.waiters.n > max {
				return fmt.Errorf("%s: %d waiters, MaxWaiters %d", kn, k.waiters.n, max)
			}
			var lastFence uint64
			for n := k.holders.head; n != nil; n = n.knext {
				if queued[n] {
					return fmt.Errorf("%s: holder node in two queues", kn)
				}
				queued[n] = true
				switch {
				case n.state != stHolding:
					return fmt.Errorf("%s: holder in state %d", kn, n.state)
				case n.key != k:
					return fmt.Errorf("%s: holder points to another key", kn)
				case n.cont != nil:
					return fmt.Errorf("%s: holder keeps a continuation", kn)
				case n.lease <= 0:
					return fmt.Errorf("%s: holder lease %d", kn, n.lease)
				case !n.timer.Pending():
					return fmt.Errorf("%s: holder without a pending lease timer", kn)
				case int64(n.timer.Deadline()) != ceilDiv(n.expires, tick):
					return fmt.Errorf("%s: lease timer at tick %d, expires %d (tick %d)", kn, n.timer.Deadline(), n.expires, ceilDiv(n.expires, tick))
				case n.token.Fence <= lastFence:
					return fmt.Errorf("%s: holder fences not increasing in grant order (%d after %d)", kn, n.token.Fence, lastFence)
				case n.owner == nil && (n.oprev != nil || n.onext != nil || n.twoPhase):
					return fmt.Errorf("%s: orphaned holder still linked or two-phase", kn)
				case n.owner != nil && n.owner.id != n.ownerID:
					return fmt.Errorf("%s: holder ownerID %d, owner %d", kn, n.ownerID, n.owner.id)
				case n.timer.Owner != n:
					return fmt.Errorf("%s: timer.Owner does not point back", kn)
				}
				lastFence = n.token.Fence
				pendingTimers++
			}
			for n := k.waiters.head; n != nil; n = n.knext {
				if queued[n] {
					return fmt.Errorf("%s: waiter node in two queues", kn)
				}
				queued[n] = true
				switch {
				case n.state != stWaiting:
					return fmt.Errorf("%s: waiter in state %d", kn, n.state)
				case n.key != k:
					return fmt.Errorf("%s: waiter points to another key", kn)
				case n.owner == nil:
					return fmt.Errorf("%s: waiter without owner", kn)
				case n.owner.id != n.ownerID:
					return fmt.Errorf("%s: waiter ownerID %d, owner %d", kn, n.ownerID, n.owner.id)
				case (n.cont != nil) != n.timer.Pending():
					return fmt.Errorf("%s: waiter parked=%v but timer pending=%v", kn, n.cont != nil, n.timer.Pending())
				case n.cont == nil && !n.twoPhase:
					return fmt.Errorf("%s: unparked waiter that is not a two-phase entry", kn)
				case !n.token.IsZero():
					return fmt.Errorf("%s: waiter has a token", kn)
				case n.lease <= 0:
					return fmt.Errorf("%s: waiter lease %d", kn, n.lease)
				case n.timer.Owner != n:
					return fmt.Errorf("%s: timer.Owner does not point back", kn)
				}
				if n.timer.Pending() {
					pendingTimers++
				}
			}
			if k.idle() != k.inIdle {
				return fmt.Errorf("%s: idle=%v but inIdle=%v", kn, k.idle(), k.inIdle)
			}
			if k.inIdle {
				idleKeys++
			}
			if err := checkQueue(&k.graves, kn+" graves"); err != nil {
				return err
			}
			for n := k.graves.head; n != nil; n = n.knext {
				if queued[n] || graves[n] {
					return fmt.Errorf("%s: tombstone in two queues", kn)
				}
				graves[n] = true
				switch {
				case n.state != stExpired:
					return fmt.Errorf("%s: node in state %d among the tombstones", kn, n.state)
				case n.key != k:
					return fmt.Errorf("%s: tombstone points to another key", kn)
				case n.owner == nil:
					return fmt.Errorf("%s: tombstone without owner", kn)
				}
			}
		}
	}

	// Owner lists.
	owned := make(map[*node]bool)
	nTwoPhase := 0
	for o, head := range c.owners {
		if o.touched.Load()&shardBit == 0 {
			return fmt.Errorf("owner %d in owners map but touched bit %d clear", o.id, c.index&63)
		}
		var prev *node
		twoPhase := make(map[*key]bool)
		for n := head; n != nil; n = n.onext {
			on := fmt.Sprintf("owner %d node on %d/%q", o.id, n.key.ns, n.key.name)
			if owned[n] {
				return fmt.Errorf("%s: in two owner lists (or a cycle)", on)
			}
			owned[n] = true
			switch {
			case n.oprev != prev:
				return fmt.Errorf("%s: broken oprev link", on)
			case n.owner != o:
				return fmt.Errorf("%s: in the list of another owner", on)
			case n.key == nil || c.table(n.key.ns)[n.key.name] != n.key:
				return fmt.Errorf("%s: key not in the shard's maps", on)
			}
			switch n.state {
			case stWaiting, stHolding:
				if !queued[n] {
					return fmt.Errorf("%s: state %d but not in its key's queues", on, n.state)
				}
			case stExpired:
				switch {
				case queued[n]:
					return fmt.Errorf("%s: tombstone in a key queue", on)
				case !graves[n]:
					return fmt.Errorf("%s: tombstone not among its key's graves", on)
				case n.timer.Pending():
					return fmt.Errorf("%s: tombstone with a pending timer", on)
				case !n.twoPhase:
					return fmt.Errorf("%s: tombstone not two-phase", on)
				case n.cont != nil:
					return fmt.Errorf("%s: tombstone keeps a continuation", on)
				}
				tombs[n.key]++
			default:
				return fmt.Errorf("%s: state %d in an owner list", on, n.state)
			}
			if n.twoPhase {
				if twoPhase[n.key] {
					return fmt.Errorf("%s: two two-phase entries on one key", on)
				}
				twoPhase[n.key] = true
				nTwoPhase++
				if c.twoPhase[ownerKey{o, n.key}] != n {
					return fmt.Errorf("%s: two-phase entry missing from the two-phase index", on)
				}
			}
			prev = n
		}
	}
	if len(c.twoPhase) != nTwoPhase {
		return fmt.Errorf("two-phase index has %d entries for %d two-phase nodes", len(c.twoPhase), nTwoPhase)
	}
	for n := range queued {
		if n.owner != nil && !owned[n] {
			return fmt.Errorf("node of owner %d on %d/%q (state %d) missing from its owner list", n.owner.id, n.key.ns, n.key.name, n.state)
		}
	}
	for n := range graves {
		if !owned[n] {
			return fmt.Errorf("tombstone of owner %d on %d/%q missing from its owner list", n.owner.id, n.key.ns, n.key.name)
		}
	}
	for _, m := range []map[string]*key{c.locks, c.sems} {
		for _, k := range m {
			if k.graves.n != tombs[k] {
				return fmt.Errorf("key %d/%q: %d graves, %d tombstones in owner lists", k.ns, k.name, k.graves.n, tombs[k])
			}
		}
	}

	if got := c.wheel.Len(); got != pendingTimers {
		return fmt.Errorf("wheel holds %d timers, %d node timers pending", got, pendingTimers)
	}

	// Idle list: exactly the idle keys, oldest first.
	var prevK *key
	count := 0
	for k := c.idleHead; k != nil; k = k.idleNext {
		switch {
		case k.idlePrev != prevK:
			return errors.New("idle list: broken idlePrev link")
		case !k.inIdle || !k.idle():
			return fmt.Errorf("idle list holds busy key %d/%q", k.ns, k.name)
		case c.table(k.ns)[k.name] != k:
			return fmt.Errorf("idle list holds removed key %d/%q", k.ns, k.name)
		case monotonic && prevK != nil && k.idleSince < prevK.idleSince:
			return fmt.Errorf("idle list out of order at %q", k.name)
		}
		prevK = k
		count++
		if count > 1<<24 {
			return errors.New("idle list: cycle")
		}
	}
	if c.idleTail != prevK {
		return errors.New("idle list: tail does not match the last key")
	}
	if count != idleKeys {
		return fmt.Errorf("idle list holds %d keys, %d keys are idle", count, idleKeys)
	}

	// Free list: clean nodes, no timers (no timer left for a resolved
	// waiter), no continuation kept alive.
	free := 0
	for n := c.free; n != nil; n = n.knext {
		switch {
		case queued[n] || owned[n]:
			return errors.New("free node still in use")
		case n.state != stFree || n.key != nil || n.owner != nil || n.cont != nil || n.kprev != nil || n.oprev != nil || n.onext != nil:
			return errors.New("free node not cleared")
		case n.timer.Pending():
			return errors.New("free node with a pending timer")
		case n.timer.Owner != n:
			return errors.New("free node lost its timer.Owner")
		}
		free++
		if free > 1<<24 {
			return errors.New("free list: cycle")
		}
	}
	if len(c.out) != 0 {
		return fmt.Errorf("%d completions left undelivered", len(c.out))
	}
	return c.checkGauges()
}

// checkGauges is part of the invariant walker: the Held and Waiting
// gauges kept by increments must equal what the keys' queues hold.
func (c *core) checkGauges() error {
	var held, waiting [2]int64
	for nsi, m := range []map[string]*key{c.locks, c.sems} {
		for _, k := range m {
			held[nsi] += k.holders.n
			waiting[nsi] += k.waiters.n
		}
	}
	if held != c.ctr.Held || waiting != c.ctr.Waiting {
		return fmt.Errorf("gauges held %v waiting %v, queues hold %v and %v", c.ctr.Held, c.ctr.Waiting, held, waiting)
	}
	return nil
}
