package lockcore

import "fmt"

// checkTwoPhaseIndex checks the two-phase index entries themselves, apart
// from check(): every entry names a live, two-phase, owned node of that
// owner and key; the key is the one the shard's maps hold under its name
// (not a reclaimed key object); and the node is in a state that belongs
// to a live key (holder, waiter, or tombstone among the key's graves).
func checkTwoPhaseIndex(t *Table) error {
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		err := checkTwoPhaseEntries(s.c)
		s.mu.Unlock()
		if err != nil {
			return fmt.Errorf("shard %d: %w", i, err)
		}
	}
	return nil
}

func checkTwoPhaseEntries(c *core) error {
	for ok, n := range c.twoPhase {
		switch {
		case n == nil:
			return fmt.Errorf("nil node for owner %d", ok.o.id)
		case !n.twoPhase:
			return fmt.Errorf("entry (owner %d, %q) points to a node without twoPhase (state %d)", ok.o.id, ok.k.name, n.state)
		case n.state == stFree:
			return fmt.Errorf("entry (owner %d, %q) points to a freed node", ok.o.id, ok.k.name)
		case n.owner != ok.o:
			return fmt.Errorf("entry (owner %d, %q) points to a node of another owner", ok.o.id, ok.k.name)
		case n.key != ok.k:
			return fmt.Errorf("entry (owner %d, %q) points to a node of another key", ok.o.id, ok.k.name)
		case c.table(ok.k.ns)[ok.k.name] != ok.k:
			return fmt.Errorf("entry (owner %d, %q) names a key no longer in the shard's maps", ok.o.id, ok.k.name)
		}
		found := false
		q := &ok.k.holders
		switch n.state {
		case stWaiting:
			q = &ok.k.waiters
		case stExpired:
			q = &ok.k.graves
		}
		for m := q.head; m != nil; m = m.knext {
			if m == n {
				found = true
			}
		}
		if !found {
			return fmt.Errorf("entry (owner %d, %q) state %d not in its key's queue", ok.o.id, ok.k.name, n.state)
		}
	}
	return nil
}

func twoPhaseIndexLen(t *Table) int {
	n := 0
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		n += len(s.c.twoPhase)
		s.mu.Unlock()
	}
	return n
}
