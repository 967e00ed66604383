package lockcore

import (
	"cmp"
	"math/rand/v2"
	"slices"
	"sync/atomic"

	"github.com/lockreactor/dflockd/codec"
	"github.com/lockreactor/dflockd/lockcore/wheel"
)

// Namespace separates exclusive locks from semaphores: a lock "foo" and a
// semaphore "foo" are different resources.
type Namespace uint8

// The two namespaces.
const (
	Locks Namespace = iota
	Semaphores
)

// Result is the answer to one request. (Field order keeps it at 32 bytes:
// every connection's session holds one.)
type Result struct {
	// Token and Lease are set for grants (ok/acquired) and Lease for
	// renewals.
	Token codec.Token
	Lease int64
	// Code is the reply status; CodeInvalid when Parked.
	Code codec.Code
	// Parked means no answer yet: the request waits in its key's queue and
	// its result will be passed to the Continuation exactly once.
	Parked bool
	// Timer marks a result delivered by the timer driver (Advance): an
	// acquire timeout, or a grant after a lease ran out. The goroutine
	// delivering it fires every timer of the table, so a Continuation
	// should hand such a result on rather than do I/O with it there.
	Timer bool
}

// Continuation receives the result of a parked request. Complete is called
// exactly once per parked request, by whichever goroutine resolved it (a
// releaser, the timer driver, a closing connection), never while a shard
// lock is held. It is not called for requests dropped by CloseOwner.
type Continuation interface {
	Complete(Result)
}

// Owner identifies a connection (or any other party) that holds and waits
// for locks. Its holdings and waiters are reachable from it, so closing it
// costs O(what it holds). The zero Owner is not valid: use NewOwner.
type Owner struct {
	id uint64
	// touched has bit (shard index mod 64) set once the owner has linked a
	// node into that shard, so CloseOwner visits only those shards.
	touched atomic.Uint64
}

// NewOwner returns an owner with the given id (reported as owner_conn_id in
// stats).
func NewOwner(id uint64) *Owner { return &Owner{id: id} }

// ID returns the owner's id.
func (o *Owner) ID() uint64 { return o.id }

// Init initialises an Owner embedded in a caller's struct.
func (o *Owner) Init(id uint64) { o.id = id; o.touched.Store(0) }

// Node states.
const (
	stFree    uint8 = iota
	stWaiting       // in key.waiters
	stHolding       // in key.holders
	stExpired       // two-phase grant that expired before w: in key.graves
)

// node is a waiter, a holder, or a two-phase tombstone: one intrusive node
// that moves between states without reallocation. It is linked into its
// key's queue (kprev/knext), its owner's list in this shard (oprev/onext)
// and, while waiting with a timeout or holding, a wheel slot.
type node struct {
	timer        wheel.Timer
	key          *key
	owner        *Owner // nil once a holder outlives its closed owner
	ownerID      uint64
	kprev, knext *node
	oprev, onext *node
	cont         Continuation // set while a request is parked on the node
	token        codec.Token
	lease        int64 // seconds
	expires      int64 // lease deadline (ns) while holding; while waiting, when it joined the queue
	timeoutAt    int64 // while a request waits on it: its timeout (ns)
	state        uint8
	twoPhase     bool // created by e and not yet consumed by a successful w
	// untold: a two-phase entry granted from the queue before its w. Its
	// owner was only told "queued" and knows no token, so the grant is
	// two-phase state, dropped when the owner closes even with
	// auto-release off.
	untold bool
}

// queue is an intrusive FIFO of nodes through kprev/knext.
type queue struct {
	head, tail *node
	n          int64
}

func (q *queue) pushBack(n *node) {
	n.kprev, n.knext = q.tail, nil
	if q.tail != nil {
		q.tail.knext = n
	} else {
		q.head = n
	}
	q.tail = n
	q.n++
}

func (q *queue) remove(n *node) {
	if n.kprev != nil {
		n.kprev.knext = n.knext
	} else {
		q.head = n.knext
	}
	if n.knext != nil {
		n.knext.kprev = n.kprev
	} else {
		q.tail = n.kprev
	}
	n.kprev, n.knext = nil, nil
	q.n--
}

// key is one lock or semaphore.
type key struct {
	name    string
	ns      Namespace
	limit   int64
	holders queue
	waiters queue
	// graves holds the two-phase tombstones that name this key, so that a
	// later w can answer error_lease_expired. They do not keep the key from
	// being idle (PROTOCOL.md: a key with no holder and no waiter is idle,
	// reclaimable at the --max-locks cap and pruned by GC): removing the
	// key drops them, and w then answers error_not_enqueued.
	graves queue
	// idle list (ordered by idleSince) while the key has no holder or
	// waiter.
	idleSince          int64
	idlePrev, idleNext *key
	inIdle             bool
}

func (k *key) idle() bool { return k.holders.n == 0 && k.waiters.n == 0 }

// grantable reports whether a newcomer is granted at once: a free slot and
// nobody queued ahead (strict FIFO).
func (k *key) grantable() bool { return k.holders.n < k.limit && k.waiters.n == 0 }

// Completion is a parked request's result waiting to be delivered once the
// shard lock is released.
type Completion struct {
	Cont   Continuation
	Result Result
}

// limits are the shared settings and global counters of all shards.
type limits struct {
	maxLocks     int64 // 0 = unlimited
	maxWaiters   int64 // 0 = unlimited
	defaultLease int64 // seconds
	autoRelease  bool
	tickNs       int64
	fence        atomic.Uint64 // last fence issued
	keys         atomic.Int64  // keys tracked, all shards
	// kick is called (outside nothing: under a shard lock, cheaply) when a
	// timer is added whose deadline may be earlier than the driver's sleep.
	kick func(deadlineTick uint64)
}

// core is one shard: the complete lock state for the keys that hash to it.
//
// A core has a single owner: it has no mutex and must be called by one
// goroutine at a time (Table holds the shard mutex around every call). It
// reads no clock and no global random source: now and the salt generator
// are inputs.
type core struct {
	lim    *limits
	index  int
	locks  map[string]*key
	sems   map[string]*key
	owners map[*Owner]*node // head of each owner's list in this shard
	// twoPhase indexes the nodes with twoPhase set (one per owner and key
	// at most), so that e and w find theirs in O(1) however much else the
	// owner holds or waits for here (a walk of the owner's list was
	// O(its nodes): 25 ms per request with 131,072 semaphore slots).
	twoPhase map[ownerKey]*node
	// twoPhasePeak is the most entries twoPhase held since it was made:
	// Go maps never shrink, so after a burst (connections × keys
	// entries) clearTwoPhase rebuilds it once it is down to a quarter.
	twoPhasePeak int
	wheel        *wheel.Wheel
	// idle keys, oldest first
	idleHead, idleTail *key
	free               *node // free list through knext
	nfree              int   // its length, at most maxFreeNodes
	salt               *rand.ChaCha8
	out                []Completion // results of parked requests, drained by Table
	fireNow            int64        // now of the Advance in progress
	events             []event      // fire's scratch
	fireFn             func(*wheel.Timer)
	ctr                Counters // this shard's share; Table.Counters sums them
	// lapsed: the two-phase grants that expired before their w and went
	// with their key (reclaimed at the max-locks cap, or pruned) rather
	// than with a w, oldest first: the owner's next w on such a key
	// answers error_lease_expired all the same, as PROTOCOL.md says. At
	// most maxLapsed per shard and maxLapsedOwn of one owner (see
	// addLapsed); closeOwner drops an owner's.
	lapsed []lapsedGrant
}

// lapsedGrant is an entry of core.lapsed.
type lapsedGrant struct {
	o    *Owner
	ns   Namespace
	name string
}

// maxLapsed bounds core.lapsed: the memory it keeps is bounded per shard
// (key names are at most a line long), not per connection; maxLapsedOwn
// bounds one owner's share. An older lapsed grant then answers
// error_not_enqueued.
const (
	maxLapsed    = 64
	maxLapsedOwn = 8
)

func newCore(lim *limits, index int, salt *rand.ChaCha8, nowTick uint64) *core {
	c := &core{
		lim:      lim,
		index:    index,
		locks:    make(map[string]*key),
		sems:     make(map[string]*key),
		owners:   make(map[*Owner]*node),
		twoPhase: make(map[ownerKey]*node),
		wheel:    wheel.New(nowTick),
		salt:     salt,
	}
	c.fireFn = c.fire
	return c
}

func (c *core) table(ns Namespace) map[string]*key {
	if ns == Semaphores {
		return c.sems
	}
	return c.locks
}

// ---- nodes ----

// maxFreeNodes bounds each shard's free list: steady traffic reuses nodes
// without allocating, and the nodes of a burst (a million waiters, or e on
// a million keys) go back to the garbage collector instead of staying
// pinned for the life of the process.
const maxFreeNodes = 1024

func (c *core) newNode(k *key, o *Owner) *node {
	n := c.free
	if n != nil {
		c.free = n.knext
		c.nfree--
		n.knext = nil
	} else {
		n = &node{}
		n.timer.Owner = n
	}
	n.key = k
	n.owner = o
	n.ownerID = o.id
	return n
}

func (c *core) freeNode(n *node) {
	c.clearTwoPhase(n)
	self := n.timer.Owner
	*n = node{}
	if c.nfree >= maxFreeNodes {
		return // unreachable now: the collector takes it
	}
	n.timer.Owner = self
	n.knext = c.free
	c.free = n
	c.nfree++
}

func (c *core) ownerLink(n *node) {
	o := n.owner
	head := c.owners[o]
	if head == nil {
		o.touched.Or(1 << (uint(c.index) & 63))
	}
	n.oprev, n.onext = nil, head
	if head != nil {
		head.oprev = n
	}
	c.owners[o] = n
}

func (c *core) ownerUnlink(n *node) {
	if n.owner == nil {
		return
	}
	if n.oprev != nil {
		n.oprev.onext = n.onext
	} else {
		// Keep the map entry (set to nil rather than deleted) so an owner
		// that locks and unlocks repeatedly costs no map churn; CloseOwner
		// deletes it.
		c.owners[n.owner] = n.onext
	}
	if n.onext != nil {
		n.onext.oprev = n.oprev
	}
	n.oprev, n.onext = nil, nil
}

// ownerKey is core.twoPhase's key.
type ownerKey struct {
	o *Owner
	k *key
}

// twoPhaseNode finds o's pending two-phase node on k.
func (c *core) twoPhaseNode(o *Owner, k *key) *node {
	return c.twoPhase[ownerKey{o, k}]
}

// setTwoPhase marks n, linked to its owner and key, as a pending two-phase
// entry.
func (c *core) setTwoPhase(n *node) {
	n.twoPhase = true
	c.twoPhase[ownerKey{n.owner, n.key}] = n
	c.twoPhasePeak = max(c.twoPhasePeak, len(c.twoPhase))
}

// minTwoPhaseShrink: an index that never held more entries than this is
// not worth rebuilding.
const minTwoPhaseShrink = 256

// clearTwoPhase ends n's two-phase state (a w collected it, its owner
// closed, or it is freed). Every path that ends it goes through here, so
// core.twoPhase holds exactly the nodes with twoPhase set (checked by
// check).
func (c *core) clearTwoPhase(n *node) {
	if !n.twoPhase {
		return
	}
	delete(c.twoPhase, ownerKey{n.owner, n.key})
	n.twoPhase = false
	if c.twoPhasePeak > minTwoPhaseShrink && len(c.twoPhase) < c.twoPhasePeak/4 {
		// Copying the rest costs less than the deletions since the peak.
		// (Not maps.Clone: it may keep the old table's size.)
		m := make(map[ownerKey]*node, len(c.twoPhase))
		for k, v := range c.twoPhase {
			m[k] = v
		}
		c.twoPhase = m
		c.twoPhasePeak = len(m)
	}
}

// ---- timers ----

func (c *core) deadlineTick(ns int64) uint64 {
	// Round up: a timer never fires before its deadline.
	return uint64((ns + c.lim.tickNs - 1) / c.lim.tickNs)
}

func (c *core) setTimer(n *node, deadlineNs int64) {
	t := c.deadlineTick(deadlineNs)
	c.wheel.Add(&n.timer, t)
	if c.lim.kick != nil {
		c.lim.kick(t)
	}
}

func seconds(s int64) int64 { return s * 1_000_000_000 }

// ---- keys ----

// lookup returns an existing key, or nil.
func (c *core) lookup(ns Namespace, name []byte) *key {
	return c.table(ns)[string(name)]
}

// lookupOrCreate returns the key, creating it within the global budget.
// limit is 1 for locks. A failure is error_limit_mismatch, or
// error_max_locks when the budget is spent and this shard has no idle key
// to reclaim (Table then takes one from another shard and calls again with
// reserved set). reserved means the caller already holds a budget slot for
// this key, taken over from an idle key of another shard: it is used to
// create the key, or given back if the key exists.
func (c *core) lookupOrCreate(ns Namespace, name []byte, limit int64, now int64, reserved bool) (*key, codec.Code) {
	if k := c.table(ns)[string(name)]; k != nil {
		if reserved {
			c.lim.keys.Add(-1)
		}
		if k.limit != limit {
			return nil, codec.CodeErrorLimitMismatch
		}
		return k, codec.CodeOK
	}
	if !reserved {
		if n := c.lim.keys.Add(1); c.lim.maxLocks > 0 && n > c.lim.maxLocks {
			if c.idleHead == nil {
				c.lim.keys.Add(-1)
				return nil, codec.CodeErrorMaxLocks
			}
			// Reclaim the oldest idle key: its slot becomes the new key's
			// (removeKey gives back one, we took one).
			c.removeKey(c.idleHead)
		}
	}
	k := &key{name: string(name), ns: ns, limit: limit}
	c.table(ns)[k.name] = k
	c.idleAppend(k, now)
	return k, codec.CodeOK
}

func (c *core) idleAppend(k *key, now int64) {
	k.inIdle = true
	k.idleSince = now
	k.idlePrev, k.idleNext = c.idleTail, nil
	if c.idleTail != nil {
		c.idleTail.idleNext = k
	} else {
		c.idleHead = k
	}
	c.idleTail = k
}

func (c *core) idleRemove(k *key) {
	if k.idlePrev != nil {
		k.idlePrev.idleNext = k.idleNext
	} else {
		c.idleHead = k.idleNext
	}
	if k.idleNext != nil {
		k.idleNext.idlePrev = k.idlePrev
	} else {
		c.idleTail = k.idlePrev
	}
	k.idlePrev, k.idleNext, k.inIdle = nil, nil, false
}

// settle keeps the idle list true after an operation on k.
func (c *core) settle(k *key, now int64) {
	switch idle := k.idle(); {
	case idle && !k.inIdle:
		c.idleAppend(k, now)
	case !idle && k.inIdle:
		c.idleRemove(k)
	}
}

// removeKey drops an idle key and gives its budget slot back.
func (c *core) removeKey(k *key) {
	c.unlinkKey(k)
	c.lim.keys.Add(-1)
}

func (c *core) unlinkKey(k *key) {
	for n := k.graves.head; n != nil; n = k.graves.head {
		if n.owner != nil {
			c.addLapsed(lapsedGrant{n.owner, k.ns, k.name})
		}
		c.dropTomb(n)
	}
	c.idleRemove(k)
	delete(c.table(k.ns), k.name)
}

// addLapsed remembers g (see core.lapsed). An owner with maxLapsedOwn
// entries loses its own oldest, so that one connection cannot push out
// the others'; only a full FIFO (maxLapsedOwn or more owners) loses its
// oldest.
func (c *core) addLapsed(g lapsedGrant) {
	own, first := 0, -1
	for i, e := range c.lapsed {
		if e.o == g.o {
			if first < 0 {
				first = i
			}
			own++
		}
	}
	switch {
	case own >= maxLapsedOwn:
		c.lapsed = slices.Delete(c.lapsed, first, first+1)
	case len(c.lapsed) >= maxLapsed:
		c.lapsed = slices.Delete(c.lapsed, 0, 1)
	}
	c.lapsed = append(c.lapsed, g)
}

// takeLapsed forgets o's lapsed grant of (ns, name) and reports whether
// there was one.
func (c *core) takeLapsed(o *Owner, ns Namespace, name []byte) bool {
	for i, g := range c.lapsed {
		if g.o == o && g.ns == ns && g.name == string(name) {
			c.lapsed = slices.Delete(c.lapsed, i, i+1)
			return true
		}
	}
	return false
}

// takeOldestIdle drops this shard's oldest idle key but keeps its budget
// slot, reserved for a key another shard is about to create. The slot is
// handed over directly rather than through the shared counter, where a
// concurrent creator could take it first and the request would then be
// refused although it had just freed a slot.
func (c *core) takeOldestIdle() bool {
	if c.idleHead == nil {
		return false
	}
	c.unlinkKey(c.idleHead)
	return true
}

// gc prunes keys idle for at least maxIdle; returns how many.
func (c *core) gc(now, maxIdle int64) int {
	n := 0
	for k := c.idleHead; k != nil && now-k.idleSince >= maxIdle; k = c.idleHead {
		c.removeKey(k)
		n++
	}
	return n
}

// ---- grants ----

func (c *core) leaseOrDefault(lease int64) int64 {
	if lease <= 0 {
		return c.lim.defaultLease
	}
	return lease
}

// grant makes n a holder with a fresh token and its lease running from now.
func (c *core) grant(n *node, now int64) {
	k := n.key
	n.state = stHolding
	k.holders.pushBack(n)
	c.ctr.Grants[k.ns]++
	c.ctr.Held[k.ns]++
	n.token = codec.Token{Fence: c.lim.fence.Add(1), Salt: c.salt.Uint64()}
	c.startLease(n, now)
}

func (c *core) startLease(n *node, now int64) {
	n.expires = now + seconds(n.lease)
	c.setTimer(n, n.expires)
}

// grantWaiters hands free slots of k to the head of its queue.
func (c *core) grantWaiters(k *key, now int64) {
	for k.holders.n < k.limit && k.waiters.head != nil {
		n := k.waiters.head
		k.waiters.remove(n)
		c.ctr.Waiting[k.ns]--
		c.ctr.Handoffs[k.ns]++
		c.wheel.Remove(&n.timer)
		// The lease starts no earlier than the waiter joined: a releaser's
		// now may be older than the waiter's request (read before another
		// goroutine parked it), and a lease must not end early.
		c.grant(n, max(now, n.expires))
		if n.cont != nil {
			// A parked l, or a parked w (which consumes the two-phase state).
			c.out = append(c.out, Completion{Cont: n.cont, Result: Result{Code: codec.CodeOK, Token: n.token, Lease: n.lease}})
			n.cont = nil
			c.clearTwoPhase(n)
		} else if n.twoPhase {
			n.untold = true
		}
	}
}

// dropHolder removes a holder and hands its slot on.
func (c *core) dropHolder(n *node, now int64) {
	k := n.key
	k.holders.remove(n)
	c.ctr.Held[k.ns]--
	c.wheel.Remove(&n.timer)
	c.ownerUnlink(n)
	c.freeNode(n)
	c.grantWaiters(k, now)
	c.settle(k, now)
}

// expire evicts a holder whose lease ran out. A two-phase grant not yet
// collected by w leaves a tombstone so that w answers error_lease_expired.
func (c *core) expire(n *node, now int64) {
	k := n.key
	c.ctr.Expiries[k.ns]++
	if !n.twoPhase || n.owner == nil {
		c.dropHolder(n, now)
		return
	}
	k.holders.remove(n)
	c.ctr.Held[k.ns]--
	c.wheel.Remove(&n.timer)
	n.state = stExpired
	k.graves.pushBack(n)
	c.grantWaiters(k, now)
	c.settle(k, now)
}

func (c *core) dropTomb(n *node) {
	n.key.graves.remove(n)
	c.ownerUnlink(n)
	c.freeNode(n)
}

// findHolder returns k's holder with token t, evicting it first (and
// returning nil) if its lease has run out but its timer has not fired yet:
// an expired lock is never resurrected.
func (c *core) findHolder(k *key, t codec.Token, now int64) *node {
	for n := k.holders.head; n != nil; n = n.knext {
		if n.token == t {
			if n.expires <= now {
				c.expire(n, now)
				return nil
			}
			return n
		}
	}
	return nil
}

// fire is the wheel callback: a waiter's timeout or a holder's lease end.
//
// Timers due in one Advance fire in no particular order (one tick holds a
// whole --tick of deadlines), so when a key has a lease that ran out, all
// of the key's due lease ends and timeouts are applied at once in the
// order of their nanosecond deadlines (a tie goes to the lease end, so to
// the grant): a waiter is not timed out after a slot came free for it, nor
// granted a slot that was not free before its timeout. With --tick 1s that
// difference was up to a second. Without a due lease end, timeouts do not
// interact and one is applied alone.
func (c *core) fire(t *wheel.Timer) {
	n := t.Owner.(*node)
	now := c.fireNow
	if n.state != stHolding && n.state != stWaiting {
		return
	}
	k := n.key
	// Due as the wheel counts it: its deadline's tick has come (the
	// wheel's tick, which an Advance with an older now does not move
	// back). The node that fired is due whatever its deadline says.
	nowTick := max(uint64(now/c.lim.tickNs), c.wheel.Now())
	isDue := func(m *node, at int64) bool { return m == n || c.deadlineTick(at) <= nowTick }
	due := n.state == stHolding
	for h := k.holders.head; h != nil && !due; h = h.knext {
		due = isDue(h, h.expires)
	}
	if !due {
		// n is a waiter: a holder's timer fires only once it is due.
		c.timeOut(n, now)
		return
	}
	evs := c.events[:0]
	for h := k.holders.head; h != nil; h = h.knext {
		if isDue(h, h.expires) {
			evs = append(evs, event{n: h, at: h.expires})
		}
	}
	for w := k.waiters.head; w != nil; w = w.knext {
		if w.cont != nil && isDue(w, w.timeoutAt) {
			evs = append(evs, event{n: w, at: w.timeoutAt, timeout: true})
		}
	}
	slices.SortFunc(evs, func(a, b event) int {
		if a.at != b.at {
			return cmp.Compare(a.at, b.at)
		}
		return cmp.Compare(boolInt(a.timeout), boolInt(b.timeout))
	})
	for _, e := range evs {
		// Each still as it was: an earlier event may have granted a
		// waiter (now a holder with a fresh lease) or freed a node.
		m := e.n
		switch {
		case m.key != k:
		case !e.timeout && m.state == stHolding && m.expires == e.at:
			c.expire(m, now) // removes its timer
		case e.timeout && m.state == stWaiting && m.cont != nil && m.timeoutAt == e.at:
			c.wheel.Remove(&m.timer)
			c.timeOut(m, now)
		}
	}
	clear(evs) // no node pinned until the next fire
	c.events = evs[:0]
}

// event is a due lease end or timeout, for fire.
type event struct {
	n       *node
	at      int64
	timeout bool
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// timeOut ends a waiting request whose timeout has passed.
func (c *core) timeOut(n *node, now int64) {
	k := n.key
	k.waiters.remove(n)
	c.ctr.Waiting[k.ns]--
	c.ctr.WaiterTimeouts[k.ns]++
	if n.cont != nil {
		c.out = append(c.out, Completion{Cont: n.cont, Result: Result{Code: codec.CodeTimeout}})
	}
	// A timed-out w leaves the queue: its two-phase state ends too.
	c.ownerUnlink(n)
	c.freeNode(n)
	c.settle(k, now)
}

// ---- operations ----

// acquire serves l and sl. reserved: see lookupOrCreate.
func (c *core) acquire(o *Owner, ns Namespace, name []byte, timeout, limit, lease int64, cont Continuation, now int64, reserved bool) Result {
	k, code := c.lookupOrCreate(ns, name, limit, now, reserved)
	if k == nil {
		return Result{Code: code}
	}
	lease = c.leaseOrDefault(lease)
	if k.grantable() {
		n := c.newNode(k, o)
		n.lease = lease
		c.ownerLink(n)
		c.grant(n, now)
		c.settle(k, now)
		return Result{Code: codec.CodeOK, Token: n.token, Lease: lease}
	}
	if max := c.lim.maxWaiters; max > 0 && k.waiters.n >= max {
		return Result{Code: codec.CodeErrorMaxWaiters}
	}
	if timeout == 0 {
		return Result{Code: codec.CodeTimeout}
	}
	n := c.newNode(k, o)
	n.lease = lease
	n.cont = cont
	n.state = stWaiting
	n.expires = now
	k.waiters.pushBack(n)
	c.ctr.Waiting[k.ns]++
	c.ownerLink(n)
	n.timeoutAt = now + seconds(timeout)
	c.setTimer(n, n.timeoutAt)
	c.settle(k, now)
	return Result{Parked: true}
}

// release serves r and sr.
func (c *core) release(ns Namespace, name []byte, t codec.Token, now int64) codec.Code {
	k := c.lookup(ns, name)
	if k == nil {
		return codec.CodeError
	}
	n := c.findHolder(k, t, now)
	if n == nil {
		return codec.CodeError
	}
	c.dropHolder(n, now)
	return codec.CodeOK
}

// renew serves n and sn: the lease restarts from now with the given TTL (or
// the default).
func (c *core) renew(ns Namespace, name []byte, t codec.Token, lease, now int64) Result {
	k := c.lookup(ns, name)
	if k == nil {
		return Result{Code: codec.CodeError}
	}
	n := c.findHolder(k, t, now)
	if n == nil {
		return Result{Code: codec.CodeError}
	}
	n.lease = c.leaseOrDefault(lease)
	c.startLease(n, now)
	return Result{Code: codec.CodeOK, Lease: n.lease}
}

// enqueue serves e and se: join the queue and answer at once. reserved:
// see lookupOrCreate.
func (c *core) enqueue(o *Owner, ns Namespace, name []byte, limit, lease, now int64, reserved bool) Result {
	k, code := c.lookupOrCreate(ns, name, limit, now, reserved)
	if k == nil {
		return Result{Code: code}
	}
	if n := c.twoPhaseNode(o, k); n != nil {
		if n.state == stHolding && n.expires <= now {
			// The grant's lease ran out but its timer has not fired yet:
			// evict it now (leaving a tombstone, dropped below) rather than
			// let the answer depend on when the driver last ran.
			c.expire(n, now)
		}
		if n.state != stExpired {
			return Result{Code: codec.CodeErrorAlreadyEnqueued}
		}
		// A stale expired grant the client never collected: start afresh.
		c.dropTomb(n)
	} else if len(c.lapsed) > 0 {
		c.takeLapsed(o, ns, name) // likewise
	}
	lease = c.leaseOrDefault(lease)
	if k.grantable() {
		n := c.newNode(k, o)
		n.lease = lease
		c.ownerLink(n)
		c.setTwoPhase(n)
		c.grant(n, now)
		c.settle(k, now)
		return Result{Code: codec.CodeAcquired, Token: n.token, Lease: lease}
	}
	if max := c.lim.maxWaiters; max > 0 && k.waiters.n >= max {
		c.settle(k, now)
		return Result{Code: codec.CodeErrorMaxWaiters}
	}
	n := c.newNode(k, o)
	n.lease = lease
	n.state = stWaiting
	n.expires = now
	k.waiters.pushBack(n)
	c.ctr.Waiting[k.ns]++
	c.ownerLink(n)
	c.setTwoPhase(n)
	c.settle(k, now)
	return Result{Code: codec.CodeQueued}
}

// wait serves w and sw: collect the grant of an earlier e.
func (c *core) wait(o *Owner, ns Namespace, name []byte, timeout int64, cont Continuation, now int64) Result {
	var n *node
	k := c.lookup(ns, name)
	if k != nil {
		n = c.twoPhaseNode(o, k)
	}
	if n == nil {
		if len(c.lapsed) > 0 && c.takeLapsed(o, ns, name) {
			return Result{Code: codec.CodeErrorLeaseExpired}
		}
		return Result{Code: codec.CodeErrorNotEnqueued}
	}
	switch n.state {
	case stExpired:
		c.dropTomb(n)
		return Result{Code: codec.CodeErrorLeaseExpired}
	case stHolding:
		if n.expires <= now {
			c.expire(n, now)
			c.dropTomb(n)
			return Result{Code: codec.CodeErrorLeaseExpired}
		}
		c.clearTwoPhase(n)
		n.untold = false
		c.startLease(n, now)
		return Result{Code: codec.CodeOK, Token: n.token, Lease: n.lease}
	}
	// Still queued.
	if n.cont != nil {
		// A w is already parked on this entry. A session never sends
		// another before that one is answered; refuse it rather than lose
		// the parked request's completion or free a node whose timer is
		// still in the wheel.
		return Result{Code: codec.CodeError}
	}
	if timeout == 0 {
		c.dropWaiter(n, now)
		return Result{Code: codec.CodeTimeout}
	}
	n.cont = cont
	// A grant's lease starts no earlier than this w (see grantWaiters):
	// it restarts from the w's moment, and the e's is older.
	n.expires = max(n.expires, now)
	n.timeoutAt = now + seconds(timeout)
	c.setTimer(n, n.timeoutAt)
	return Result{Parked: true}
}

// cancelParked removes o's parked waiter (an l, sl, w or sw blocked with a
// continuation) from its queue without an answer, if it is still waiting,
// and reports whether it found one. Removing a waiter never frees a slot,
// so nothing is granted here.
func (c *core) cancelParked(o *Owner, now int64) bool {
	head, ok := c.owners[o]
	if !ok {
		return false
	}
	for n := head; n != nil; n = n.onext {
		if n.state == stWaiting && n.cont != nil {
			c.dropWaiter(n, now)
			return true
		}
	}
	return false
}

// dropWaiter removes a waiter from its queue, unanswered.
func (c *core) dropWaiter(n *node, now int64) {
	k := n.key
	k.waiters.remove(n)
	c.ctr.Waiting[k.ns]--
	c.wheel.Remove(&n.timer)
	c.ownerUnlink(n)
	c.freeNode(n)
	c.settle(k, now)
}

// closeOwner drops o's waiters and two-phase state (including grants it
// was never told of) in this shard and releases (or, with auto-release
// off, orphans until lease end) its holdings.
func (c *core) closeOwner(o *Owner, now int64) {
	if len(c.lapsed) > 0 {
		c.lapsed = slices.DeleteFunc(c.lapsed, func(g lapsedGrant) bool { return g.o == o })
	}
	head, ok := c.owners[o]
	if !ok {
		return
	}
	// Pass 1: waiters and tombstones. Removing a waiter never frees a slot
	// (a non-empty queue means every slot is taken), so no grants happen
	// here, and none can go to o's own waiters in pass 2.
	for n := head; n != nil; {
		next := n.onext
		switch n.state {
		case stWaiting:
			c.dropWaiter(n, now)
		case stExpired:
			c.dropTomb(n)
		}
		n = next
	}
	// Pass 2: grants o was never told of are two-phase state, released
	// even with auto-release off: nobody knows their tokens. (Before pass
	// 3 orphans anything: dropHolder unlinks from o's list, which must
	// still be intact.)
	if !c.lim.autoRelease {
		for n := c.owners[o]; n != nil; {
			next := n.onext
			if n.untold {
				c.ctr.DisconnectReleases[n.key.ns]++
				c.dropHolder(n, now)
			}
			n = next
		}
	}
	// Pass 3: holdings.
	for n := c.owners[o]; n != nil; {
		next := n.onext
		if c.lim.autoRelease {
			c.ctr.DisconnectReleases[n.key.ns]++
			c.dropHolder(n, now)
		} else {
			c.clearTwoPhase(n)
			n.oprev, n.onext = nil, nil
			n.owner = nil
		}
		n = next
	}
	delete(c.owners, o)
}

// advance fires every timer due at now (bounded by budget); it reports
// whether it caught up.
func (c *core) advance(now int64, budget int) bool {
	c.fireNow = now
	return c.wheel.Advance(uint64(now/c.lim.tickNs), budget, c.fireFn)
}
