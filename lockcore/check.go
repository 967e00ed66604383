package lockcore

import "fmt"

// CheckInvariants walks the lock state and returns the first broken
// invariant, or nil. It is for tests of other packages (fuzzing the
// reactor's sessions over a Table with a fake clock): the shape every
// caller relies on — per key at most limit holders, waiters only behind a
// full key, well-linked FIFO queues, holder fences increasing in grant
// order, every holder and parked waiter timed, the key budget exact. The
// core's own tests use the complete walker in invariants_test.go.
//
// It takes each shard lock in turn: call it while no other goroutine uses
// the Table, or the cross-shard totals may not add up.
func (t *Table) CheckInvariants() error {
	var total int64
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		err := s.c.verify()
		total += int64(len(s.c.locks) + len(s.c.sems))
		s.mu.Unlock()
		if err != nil {
			return fmt.Errorf("lockcore: shard %d: %w", i, err)
		}
	}
	if got := t.lim.keys.Load(); got != total {
		return fmt.Errorf("lockcore: key budget counts %d keys, the shards hold %d", got, total)
	}
	if m := t.cfg.MaxLocks; m > 0 && total > m {
		return fmt.Errorf("lockcore: %d keys tracked, MaxLocks %d", total, m)
	}
	return nil
}

// verifyQueue checks a key queue's links and count.
func verifyQueue(q *queue, what string) error {
	var prev *node
	var n int64
	for x := q.head; x != nil; x = x.knext {
		if x.kprev != prev {
			return fmt.Errorf("%s: broken link at position %d", what, n)
		}
		prev = x
		if n++; n > 1<<24 {
			return fmt.Errorf("%s: cycle", what)
		}
	}
	if q.tail != prev || q.n != n {
		return fmt.Errorf("%s: tail or count (%d) does not match the %d linked", what, q.n, n)
	}
	return nil
}

func (c *core) verify() error {
	timers := 0
	for nsi, m := range []map[string]*key{c.locks, c.sems} {
		for name, k := range m {
			kn := fmt.Sprintf("key %d/%q", nsi, name)
			switch {
			case k.name != name || k.ns != Namespace(nsi):
				return fmt.Errorf("%s: stored as %d/%q", kn, k.ns, k.name)
			case k.limit <= 0 || k.ns == Locks && k.limit != 1:
				return fmt.Errorf("%s: limit %d", kn, k.limit)
			case k.holders.n > k.limit:
				return fmt.Errorf("%s: %d holders, limit %d", kn, k.holders.n, k.limit)
			case k.waiters.n > 0 && k.holders.n != k.limit:
				return fmt.Errorf("%s: %d waiters behind %d of %d slots held", kn, k.waiters.n, k.holders.n, k.limit)
			case k.idle() != k.inIdle:
				return fmt.Errorf("%s: idle %v, on the idle list %v", kn, k.idle(), k.inIdle)
			}
			if err := verifyQueue(&k.holders, kn+" holders"); err != nil {
				return err
			}
			if err := verifyQueue(&k.waiters, kn+" waiters"); err != nil {
				return err
			}
			var fence uint64
			for n := k.holders.head; n != nil; n = n.knext {
				switch {
				case n.state != stHolding || n.key != k:
					return fmt.Errorf("%s: holder in state %d or of another key", kn, n.state)
				case !n.timer.Pending():
					return fmt.Errorf("%s: holder without a lease timer", kn)
				case n.token.Fence <= fence:
					return fmt.Errorf("%s: holder fence %d after %d", kn, n.token.Fence, fence)
				}
				fence = n.token.Fence
				timers++
			}
			for n := k.waiters.head; n != nil; n = n.knext {
				switch {
				case n.state != stWaiting || n.key != k:
					return fmt.Errorf("%s: waiter in state %d or of another key", kn, n.state)
				case !n.token.IsZero():
					return fmt.Errorf("%s: waiter with a token", kn)
				case (n.cont != nil) != n.timer.Pending():
					return fmt.Errorf("%s: waiter parked %v, timer pending %v", kn, n.cont != nil, n.timer.Pending())
				}
				if n.timer.Pending() {
					timers++
				}
			}
		}
	}
	if got := c.wheel.Len(); got != timers {
		return fmt.Errorf("wheel holds %d timers, holders and parked waiters %d", got, timers)
	}
	if len(c.out) != 0 {
		return fmt.Errorf("%d completions undelivered", len(c.out))
	}
	return nil
}
