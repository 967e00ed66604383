package lockcore

import (
	crand "crypto/rand"
	"math/bits"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lockreactor/dflockd/codec"
	"github.com/lockreactor/dflockd/lockcore/wheel"
)

// Config configures a Table. Zero fields take the documented defaults.
type Config struct {
	// Shards is the number of independent shards, rounded up to a power of
	// two (default 64).
	Shards int
	// MaxLocks bounds the keys tracked, locks and semaphores together,
	// across all shards (0 = unlimited).
	MaxLocks int64
	// MaxWaiters bounds each key's queue (0 = unlimited).
	MaxWaiters int64
	// MaxSemaphoreLimit bounds a semaphore's limit, and so the slots one
	// key can hand out (0 = unlimited). A client picks the limit, and one
	// connection can take every slot with timeout-0 tries: without a
	// bound, one client grows the table without end, and a release,
	// which finds its holder by a walk of the key's holders, costs
	// O(limit). A request over it answers CodeError.
	MaxSemaphoreLimit int64
	// DefaultLease is the lease in seconds when a request gives none
	// (default 33).
	DefaultLease int64
	// AutoRelease releases an owner's holdings when it closes; otherwise
	// they stay until their lease runs out.
	AutoRelease bool
	// Tick is the timer resolution (default 1ms): timeouts and leases
	// fire at most one tick late, never early.
	Tick time.Duration
	// GCInterval and GCMaxIdle control the pruning of idle keys by the
	// driver (defaults 5s and 60s).
	GCInterval time.Duration
	GCMaxIdle  time.Duration
	// FenceStart seeds the fence counter: every grant's fence is strictly
	// greater than it.
	FenceStart uint64
	// SaltSeed seeds the shards' ChaCha8 salt generators. Zero means a
	// seed from crypto/rand (what servers want); tests pass a fixed seed.
	SaltSeed [32]byte
	// Clock returns the current time in nanoseconds on a monotonic scale.
	// Default: time since the Table was created.
	Clock func() int64
}

// shard is one core behind its own mutex, padded against false sharing.
type shard struct {
	mu sync.Mutex
	c  *core
	_  [48]byte
}

// Table is the concurrent lock table: the sharded wrapper around core. All
// methods are safe for concurrent use. Results of parked requests are
// delivered to their Continuation after the shard lock is released.
type Table struct {
	lim    limits
	shards []shard
	mask   uint64
	clock  func() int64
	cfg    Config

	// driver
	sleepUntil atomic.Uint64 // tick the driver sleeps until (MaxUint64 = indefinitely)
	kickCh     chan struct{}
	stopCh     chan struct{}
	doneCh     chan struct{}
	startOnce  sync.Once
	stopOnce   sync.Once
}

// New creates a Table. Call Start to run its timer driver (tests may drive
// time with Advance instead).
func New(cfg Config) *Table {
	if cfg.Shards <= 0 {
		cfg.Shards = 64
	}
	cfg.Shards = 1 << bits.Len(uint(cfg.Shards-1))
	if cfg.DefaultLease <= 0 {
		cfg.DefaultLease = 33
	}
	if cfg.Tick <= 0 {
		cfg.Tick = wheel.DefaultTick
	}
	if cfg.GCInterval <= 0 {
		cfg.GCInterval = 5 * time.Second
	}
	if cfg.GCMaxIdle <= 0 {
		cfg.GCMaxIdle = 60 * time.Second
	}
	if cfg.SaltSeed == [32]byte{} {
		if _, err := crand.Read(cfg.SaltSeed[:]); err != nil {
			panic("lockcore: crypto/rand: " + err.Error())
		}
	}
	t := &Table{
		shards: make([]shard, cfg.Shards),
		mask:   uint64(cfg.Shards - 1),
		cfg:    cfg,
		kickCh: make(chan struct{}, 1),
		stopCh: make(chan struct{}),
		doneCh: make(chan struct{}),
	}
	if cfg.Clock != nil {
		t.clock = cfg.Clock
	} else {
		base := time.Now()
		t.clock = func() int64 { return int64(time.Since(base)) }
	}
	t.lim = limits{
		maxLocks:     cfg.MaxLocks,
		maxWaiters:   cfg.MaxWaiters,
		defaultLease: cfg.DefaultLease,
		autoRelease:  cfg.AutoRelease,
		tickNs:       int64(cfg.Tick),
		kick:         t.kick,
	}
	t.lim.fence.Store(cfg.FenceStart)
	t.sleepUntil.Store(^uint64(0))
	nowTick := uint64(t.clock() / t.lim.tickNs)
	for i := range t.shards {
		seed := cfg.SaltSeed
		seed[0] ^= byte(i)
		seed[1] ^= byte(i >> 8)
		t.shards[i].c = newCore(&t.lim, i, rand.NewChaCha8(seed), nowTick)
	}
	return t
}

// Now returns the Table's clock reading, the now every request should use.
func (t *Table) Now() int64 { return t.clock() }

// Fence returns the last fence issued.
func (t *Table) Fence() uint64 { return t.lim.fence.Load() }

// Keys returns the number of keys tracked (locks and semaphores).
func (t *Table) Keys() int64 { return t.lim.keys.Load() }

func (t *Table) shardOf(ns Namespace, name []byte) *shard {
	// FNV-1a over the namespace and key.
	h := uint64(14695981039346656037)
	h ^= uint64(ns)
	h *= 1099511628211
	for _, b := range name {
		h ^= uint64(b)
		h *= 1099511628211
	}
	return &t.shards[h&t.mask]
}

// unlockAndDeliver releases s and hands out the results its operation
// produced. Completions are copied to the stack first, so delivery runs
// without the lock.
func (s *shard) unlockAndDeliver() { s.unlockAndDeliverFrom(false) }

// unlockAndDeliverFrom is unlockAndDeliver, marking the results Timer when
// the timer driver delivers them.
func (s *shard) unlockAndDeliverFrom(timer bool) {
	if len(s.c.out) == 0 {
		s.mu.Unlock()
		return
	}
	var local [8]Completion
	out := append(local[:0], s.c.out...)
	clear(s.c.out)
	s.c.out = s.c.out[:0]
	s.mu.Unlock()
	for _, cp := range out {
		cp.Result.Timer = timer
		cp.Cont.Complete(cp.Result)
	}
}

// takeIdleElsewhere drops the oldest idle key of the first other shard (in
// index order) that has one, for a request refused by the max-locks budget,
// and keeps that key's budget slot for the request. It takes one shard lock
// at a time, so an idle key that moves between shards during the scan can
// be missed.
func (t *Table) takeIdleElsewhere(skip *shard) bool {
	for i := range t.shards {
		s := &t.shards[i]
		if s == skip {
			continue
		}
		s.mu.Lock()
		ok := s.c.takeOldestIdle()
		s.mu.Unlock()
		if ok {
			return true
		}
	}
	return false
}

// Acquire serves l (ns Locks, limit 1) and sl (ns Semaphores). timeout and
// lease are seconds (lease 0 = default); timeout 0 tries once. If the
// result is Parked, cont.Complete will receive the grant or the timeout.
func (t *Table) Acquire(o *Owner, ns Namespace, name []byte, timeout, limit, lease int64, cont Continuation, now int64) Result {
	if ns == Locks {
		limit = 1
	} else if t.overLimit(limit) {
		return Result{Code: codec.CodeError}
	}
	s := t.shardOf(ns, name)
	for reserved := false; ; reserved = true {
		s.mu.Lock()
		r := s.c.acquire(o, ns, name, timeout, limit, lease, cont, now, reserved)
		s.unlockAndDeliver()
		if r.Code != codec.CodeErrorMaxLocks || reserved || !t.takeIdleElsewhere(s) {
			return r
		}
	}
}

// overLimit reports whether a semaphore limit exceeds MaxSemaphoreLimit.
func (t *Table) overLimit(limit int64) bool {
	return t.cfg.MaxSemaphoreLimit > 0 && limit > t.cfg.MaxSemaphoreLimit
}

// Enqueue serves e and se: the first phase of a two-phase acquire.
func (t *Table) Enqueue(o *Owner, ns Namespace, name []byte, limit, lease int64, now int64) Result {
	if ns == Locks {
		limit = 1
	} else if t.overLimit(limit) {
		return Result{Code: codec.CodeError}
	}
	s := t.shardOf(ns, name)
	for reserved := false; ; reserved = true {
		s.mu.Lock()
		r := s.c.enqueue(o, ns, name, limit, lease, now, reserved)
		s.unlockAndDeliver()
		if r.Code != codec.CodeErrorMaxLocks || reserved || !t.takeIdleElsewhere(s) {
			return r
		}
	}
}

// Wait serves w and sw: the second phase. It may park. A Wait while an
// earlier Wait of o on the same key is still parked answers CodeError and
// leaves the parked one alone (a session never does that).
func (t *Table) Wait(o *Owner, ns Namespace, name []byte, timeout int64, cont Continuation, now int64) Result {
	s := t.shardOf(ns, name)
	s.mu.Lock()
	r := s.c.wait(o, ns, name, timeout, cont, now)
	s.unlockAndDeliver()
	return r
}

// Release serves r and sr. Any caller presenting the token may release.
func (t *Table) Release(ns Namespace, name []byte, tok codec.Token, now int64) codec.Code {
	s := t.shardOf(ns, name)
	s.mu.Lock()
	code := s.c.release(ns, name, tok, now)
	s.unlockAndDeliver()
	return code
}

// Renew serves n and sn; lease 0 means the default.
func (t *Table) Renew(ns Namespace, name []byte, tok codec.Token, lease int64, now int64) Result {
	s := t.shardOf(ns, name)
	s.mu.Lock()
	r := s.c.renew(ns, name, tok, lease, now)
	s.unlockAndDeliver()
	return r
}

// CloseOwner drops o's waiters and two-phase state at once and releases its
// holdings (auto-release) or leaves them to their leases. Its parked
// requests get no result. It visits only the shards o touched.
func (t *Table) CloseOwner(o *Owner, now int64) {
	t.ownerShards(o.touched.Swap(0), func(c *core) bool {
		c.closeOwner(o, now)
		return false
	})
}

// ownerShards runs fn under the lock of every shard in touched (an
// Owner's touched bits) until fn returns true, delivering what fn
// produced after each, and reports whether one did.
func (t *Table) ownerShards(touched uint64, fn func(*core) bool) bool {
	for touched != 0 {
		b := bits.TrailingZeros64(touched)
		touched &^= 1 << b
		for i := b; i < len(t.shards); i += 64 {
			s := &t.shards[i]
			s.mu.Lock()
			done := fn(s.c)
			s.unlockAndDeliver()
			if done {
				return true
			}
		}
	}
	return false
}

// CancelParked takes o's parked request (one blocked with a continuation)
// out of its queue without an answer, if it is still waiting, and reports
// whether it did. False means there was none, or it was decided already
// (granted or timed out): its result is then on its way to the
// continuation, if it has not arrived yet. A server that drops a parked
// request on a half-close calls it first, so that a grant decided at the
// same moment is written, not lost with the connection (with auto-release
// off, CloseOwner would keep such a grant held by nobody until its lease
// ends).
func (t *Table) CancelParked(o *Owner, now int64) bool {
	return t.ownerShards(o.touched.Load(), func(c *core) bool { return c.cancelParked(o, now) })
}

// advanceBudget bounds the timers fired per shard lock hold.
const advanceBudget = 256

// Advance fires every timer due at now in every shard, delivering results
// outside the locks. The driver calls it; tests with a fake clock call it
// directly.
func (t *Table) Advance(now int64) {
	for i := range t.shards {
		s := &t.shards[i]
		for {
			s.mu.Lock()
			done := s.c.advance(now, advanceBudget)
			s.unlockAndDeliverFrom(true)
			if done {
				break
			}
		}
	}
}

// GC prunes keys idle for at least the configured idle time.
func (t *Table) GC(now int64) int {
	n := 0
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		n += s.c.gc(now, int64(t.cfg.GCMaxIdle))
		s.mu.Unlock()
	}
	return n
}

// nextDeadlineTick is the earliest tick any shard's wheel may fire at.
func (t *Table) nextDeadlineTick() uint64 {
	next := ^uint64(0)
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		if d, ok := s.c.wheel.NextDeadline(); ok && d < next {
			next = d
		}
		s.mu.Unlock()
	}
	return next
}

// kick wakes the driver when a timer is due before the driver's planned
// wake-up. Called under a shard lock; it never blocks.
func (t *Table) kick(deadlineTick uint64) {
	if deadlineTick < t.sleepUntil.Load() {
		select {
		case t.kickCh <- struct{}{}:
		default:
		}
	}
}

// Start runs the driver goroutine: it advances the wheels on time and
// prunes idle keys every GC interval. Stop ends it.
func (t *Table) Start() {
	t.startOnce.Do(func() { go t.drive() })
}

// Stop ends the driver and waits for it. Safe to call more than once, and
// without Start (a later Start then does nothing).
func (t *Table) Stop() {
	t.stopOnce.Do(func() { close(t.stopCh) })
	// If the driver never started, no one else will close doneCh: close it
	// here, so that this and every later Stop returns.
	t.startOnce.Do(func() { close(t.doneCh) })
	<-t.doneCh
}

func (t *Table) drive() {
	defer close(t.doneCh)
	tick := t.lim.tickNs
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	nextGC := t.clock() + int64(t.cfg.GCInterval)
	for {
		now := t.clock()
		t.Advance(now)
		if now >= nextGC {
			t.GC(now)
			nextGC = now + int64(t.cfg.GCInterval)
		}
		// Publish the planned wake-up before reading the wheels, so an Add
		// racing with the read either is seen by it or kicks us. Round the
		// GC time up: waking in the tick before it would find the GC not
		// yet due and a negative sleep, and spin until it is.
		wakeTick := uint64((nextGC + tick - 1) / tick)
		t.sleepUntil.Store(wakeTick)
		if d := t.nextDeadlineTick(); d < wakeTick {
			wakeTick = d
			t.sleepUntil.Store(wakeTick)
		}
		sleep := time.Duration(int64(wakeTick)*tick - t.clock())
		if sleep < 0 {
			continue
		}
		timer.Reset(sleep)
		select {
		case <-timer.C:
		case <-t.kickCh:
			if !timer.Stop() {
				<-timer.C
			}
		case <-t.stopCh:
			return
		}
	}
}

// ---- stats ----

// LockStat describes one lock key with a holder or waiters.
type LockStat struct {
	Key             string  `json:"key"`
	OwnerConnID     uint64  `json:"owner_conn_id"`
	LeaseExpiresInS float64 `json:"lease_expires_in_s"`
	Waiters         int64   `json:"waiters"`
}

// SemStat describes one semaphore key with holders or waiters.
type SemStat struct {
	Key     string `json:"key"`
	Limit   int64  `json:"limit"`
	Holders int64  `json:"holders"`
	Waiters int64  `json:"waiters"`
}

// IdleStat describes an idle key awaiting pruning.
type IdleStat struct {
	Key   string  `json:"key"`
	IdleS float64 `json:"idle_s"`
}

// Snapshot is the lock state the stats command reports, each list sorted
// by key and never nil.
type Snapshot struct {
	Locks          []LockStat
	Semaphores     []SemStat
	IdleLocks      []IdleStat
	IdleSemaphores []IdleStat
}

// Stats takes a snapshot, one shard at a time.
func (t *Table) Stats(now int64) Snapshot {
	snap := Snapshot{Locks: []LockStat{}, Semaphores: []SemStat{}, IdleLocks: []IdleStat{}, IdleSemaphores: []IdleStat{}}
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		s.c.snapshot(now, &snap)
		s.mu.Unlock()
	}
	sort.Slice(snap.Locks, func(i, j int) bool { return snap.Locks[i].Key < snap.Locks[j].Key })
	sort.Slice(snap.Semaphores, func(i, j int) bool { return snap.Semaphores[i].Key < snap.Semaphores[j].Key })
	sort.Slice(snap.IdleLocks, func(i, j int) bool { return snap.IdleLocks[i].Key < snap.IdleLocks[j].Key })
	sort.Slice(snap.IdleSemaphores, func(i, j int) bool { return snap.IdleSemaphores[i].Key < snap.IdleSemaphores[j].Key })
	return snap
}

func secondsOf(ns int64) float64 { return float64(ns) / 1e9 }

// snapshot appends c's keys to snap. A key named only by a two-phase
// tombstone (an expired grant whose owner has yet to learn it with w) has
// no holder and no waiter: it is idle, and listed so.
func (c *core) snapshot(now int64, snap *Snapshot) {
	for _, k := range c.locks {
		if k.inIdle {
			snap.IdleLocks = append(snap.IdleLocks, IdleStat{Key: k.name, IdleS: secondsOf(now - k.idleSince)})
			continue
		}
		if k.holders.n == 0 && k.waiters.n == 0 {
			continue
		}
		ls := LockStat{Key: k.name, Waiters: k.waiters.n}
		if h := k.holders.head; h != nil {
			ls.OwnerConnID = h.ownerID
			ls.LeaseExpiresInS = secondsOf(max(h.expires-now, 0))
		}
		snap.Locks = append(snap.Locks, ls)
	}
	for _, k := range c.sems {
		if k.inIdle {
			snap.IdleSemaphores = append(snap.IdleSemaphores, IdleStat{Key: k.name, IdleS: secondsOf(now - k.idleSince)})
			continue
		}
		if k.holders.n == 0 && k.waiters.n == 0 {
			continue
		}
		snap.Semaphores = append(snap.Semaphores, SemStat{Key: k.name, Limit: k.limit, Holders: k.holders.n, Waiters: k.waiters.n})
	}
}
