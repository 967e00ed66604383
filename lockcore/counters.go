package lockcore

// Counters are the lock table's event counts and gauges for monitoring.
// Each shard keeps its own, updated under the shard lock it already holds,
// so the request path pays a few integer increments and no extra
// synchronisation; Table.Counters sums them. Arrays are indexed by
// Namespace (Locks, Semaphores).
type Counters struct {
	// Grants counts every grant: at once, or handed to a queued waiter.
	Grants [2]uint64
	// Handoffs counts grants to a queued waiter, made when a slot freed up
	// (a release, a lease expiry or a disconnect).
	Handoffs [2]uint64
	// Expiries counts leases that ran out before a release.
	Expiries [2]uint64
	// DisconnectReleases counts holdings released because their owner
	// closed (auto-release on disconnect).
	DisconnectReleases [2]uint64
	// WaiterTimeouts counts queued waiters whose acquire timeout fired.
	WaiterTimeouts [2]uint64
	// Held is the number of holdings: held locks and semaphore slots in
	// use (a holding orphaned by its closed owner counts until its lease
	// ends).
	Held [2]int64
	// Waiting is the number of queued waiters, parked or two-phase.
	Waiting [2]int64
	// Timers is the number of timers pending in the shards' wheels
	// (acquire timeouts and leases).
	Timers int64
	// Keys is the number of keys tracked; MaxLocks is the budget for them
	// (0 = unlimited).
	Keys, MaxLocks int64
}

// add folds a shard's share into c.
func (c *Counters) add(s *Counters) {
	for ns := range 2 {
		c.Grants[ns] += s.Grants[ns]
		c.Handoffs[ns] += s.Handoffs[ns]
		c.Expiries[ns] += s.Expiries[ns]
		c.DisconnectReleases[ns] += s.DisconnectReleases[ns]
		c.WaiterTimeouts[ns] += s.WaiterTimeouts[ns]
		c.Held[ns] += s.Held[ns]
		c.Waiting[ns] += s.Waiting[ns]
	}
}

// Counters sums the shards' counters, taking each shard lock in turn (like
// Stats), so the totals are a consistent cut per shard, not across shards.
// It costs O(shards), whatever the number of keys.
func (t *Table) Counters() Counters {
	c := Counters{MaxLocks: t.cfg.MaxLocks}
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		c.add(&s.c.ctr)
		c.Timers += int64(s.c.wheel.Len())
		s.mu.Unlock()
	}
	c.Keys = t.lim.keys.Load()
	return c
}
