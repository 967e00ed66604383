package lockcore

import (
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/lockreactor/dflockd/codec"
)

// Model-based randomized test: random operation sequences run against the
// sharded Table and against a tiny model (plain slices, O(n) everything,
// no wheel: deadlines are resolved by scanning, rounded to the tick exactly
// as the core promises). Replies, continuation results and the whole state
// (queues, owners, leases, expiry times, tokens, idle keys) must match
// after every step, and the invariant walker runs after every step.
//
// Two things are only determined by the core up to an order it does not
// promise, and the model handles both explicitly:
//   - Fences of grants made by one operation on different keys (a close
//     or an Advance can grant on many keys): the model checks that the
//     operation used exactly the next k fences, that each key's holders
//     have increasing fences in FIFO order, and then adopts the tokens (and
//     their random salts) the core issued. Every later reply is compared
//     exactly.
//   - Keys that went idle in the same operation and the same shard are
//     equally old; when one of them is reclaimed for max-locks, the model
//     accepts whichever the core chose (and checks it was one of them).
//
// A holder's lease end and a waiter's timeout on the same key falling due
// in the same tick may be resolved in either order (both are within the
// one-tick promise, with different outcomes), so the generator never
// produces that tie: every operation happens at a time whose deadline tick
// class (ceil(t/tick) mod ticks-per-second) no other operation used in the
// last few seconds, and all leases and timeouts are whole seconds. The
// model fails loudly if such a tie ever comes up anyway.
//
// Reproduce a failure with: go test ./lockcore -run TestModel -lockcore.seed=N
// Run much longer with -lockcore.long.

var (
	flagLong = flag.Bool("lockcore.long", false, "run the randomized model and race tests much longer")
	flagSeed = flag.Uint64("lockcore.seed", 0, "run the randomized model test for this seed only")
)

// ---- the model ----

type mKeyID struct {
	ns   Namespace
	name string
}

func (id mKeyID) String() string { return nsPrefix(id.ns) + id.name }

type mNode struct {
	owner     *mOwner // nil once orphaned by a close without auto-release
	ownerID   uint64
	key       *mKey
	st        uint8 // stWaiting, stHolding, stExpired
	twoPhase  bool
	untold    bool  // a two-phase entry granted from the queue before its w
	req       *rec  // the parked request
	timeoutAt int64 // its deadline (ns)
	lease     int64
	expires   int64
	tok       codec.Token
	fresh     bool // granted in this step; token to be learnt from the core
}

type mKey struct {
	id        mKeyID
	limit     int64
	shard     int
	holders   []*mNode
	waiters   []*mNode
	tombs     []*mNode // two-phase tombstones; dropped with the key
	idle      bool
	idleSince int64
	idleOp    int
}

type mOwner struct {
	id    uint64
	o     *Owner
	nodes []*mNode // waiting, holding and tombstones, not orphans
}

// mLapsed is a tombstone that went with its key: its owner's next w on
// the key answers error_lease_expired.
type mLapsed struct {
	o  *mOwner
	id mKeyID
}

// takeLapsed forgets o's lapsed grant of id and reports whether there was
// one.
func (m *model) takeLapsed(o *mOwner, id mKeyID) bool {
	shard := m.shardOf(id)
	i := slices.Index(m.lapsed[shard], mLapsed{o, id})
	if i < 0 {
		return false
	}
	m.lapsed[shard] = slices.Delete(m.lapsed[shard], i, i+1)
	return true
}

// mRes is a model reply; a grant refers to its node, whose token is known
// only after alignment with the core.
type mRes struct {
	code   codec.Code
	node   *mNode
	lease  int64
	parked bool
}

type model struct {
	maxLocks, maxWaiters, defLease int64
	autoRelease                    bool
	tick, gcMaxIdle                int64
	nShards                        int

	keys  map[mKeyID]*mKey
	fence uint64
	// lapsed: per shard, at most maxLapsed, oldest first.
	lapsed map[int][]mLapsed
	now    int64
	op     int

	// per step
	fired map[*rec]mRes
	fresh []*mNode

	shardOf func(mKeyID) int
	gone    func(mKeyID) bool // the key is absent from the core
	fail    func(string, ...any)
}

func del(list []*mNode, n *mNode, fail func(string, ...any)) []*mNode {
	i := slices.Index(list, n)
	if i < 0 {
		fail("model: node not in list")
		return list
	}
	return slices.Delete(list, i, i+1)
}

func (m *model) leaseOr(l int64) int64 {
	if l <= 0 {
		return m.defLease
	}
	return l
}

func (m *model) lookupOrCreate(id mKeyID, limit int64) (*mKey, codec.Code) {
	if k := m.keys[id]; k != nil {
		if k.limit != limit {
			return nil, codec.CodeErrorLimitMismatch
		}
		return k, codec.CodeOK
	}
	if m.maxLocks > 0 && int64(len(m.keys)) >= m.maxLocks && !m.reclaim(m.shardOf(id)) {
		return nil, codec.CodeErrorMaxLocks
	}
	k := &mKey{id: id, limit: limit, shard: m.shardOf(id)}
	m.keys[id] = k
	return k, codec.CodeOK
}

// reclaim drops the oldest idle key of shard home, else of the first other
// shard (in index order) that has one.
func (m *model) reclaim(home int) bool {
	order := []int{home}
	for i := range m.nShards {
		if i != home {
			order = append(order, i)
		}
	}
	for _, sh := range order {
		var cands []*mKey
		for _, k := range m.keys {
			if k.shard != sh || !k.idle {
				continue
			}
			switch {
			case len(cands) == 0 || k.idleOp < cands[0].idleOp:
				cands = []*mKey{k}
			case k.idleOp == cands[0].idleOp:
				cands = append(cands, k)
			}
		}
		if len(cands) == 0 {
			continue
		}
		sort.Slice(cands, func(i, j int) bool { return cands[i].id.String() < cands[j].id.String() })
		pick := cands[0]
		if len(cands) > 1 {
			pick = nil
			for _, k := range cands {
				if m.gone(k.id) {
					pick = k
					break
				}
			}
			if pick == nil {
				m.fail("max-locks reclaim: none of the equally old idle keys %v was reclaimed", cands)
				return true
			}
		}
		m.dropKey(pick)
		return true
	}
	return false
}

func (k *mKey) grantable() bool { return int64(len(k.holders)) < k.limit && len(k.waiters) == 0 }

func (m *model) grant(n *mNode) {
	n.st = stHolding
	n.key.holders = append(n.key.holders, n)
	m.fence++
	n.fresh = true
	n.tok = codec.Token{}
	n.expires = m.now + n.lease*sec
	m.fresh = append(m.fresh, n)
}

func (m *model) grantWaiters(k *mKey) {
	for int64(len(k.holders)) < k.limit && len(k.waiters) > 0 {
		n := k.waiters[0]
		k.waiters = slices.Delete(k.waiters, 0, 1)
		m.grant(n)
		if n.req != nil {
			m.fired[n.req] = mRes{code: codec.CodeOK, node: n, lease: n.lease}
			n.req = nil
			n.twoPhase = false
		} else if n.twoPhase {
			n.untold = true
		}
	}
}

func (m *model) unown(n *mNode) {
	if n.owner != nil {
		n.owner.nodes = del(n.owner.nodes, n, m.fail)
	}
}

func (m *model) expire(n *mNode) {
	k := n.key
	k.holders = del(k.holders, n, m.fail)
	if n.twoPhase && n.owner != nil {
		n.st = stExpired
		k.tombs = append(k.tombs, n)
	} else {
		m.unown(n)
	}
	m.grantWaiters(k)
}

func (m *model) dropTomb(n *mNode) {
	n.key.tombs = del(n.key.tombs, n, m.fail)
	m.unown(n)
}

// dropKey removes an idle key (reclaimed or pruned) and its tombstones;
// each tombstone's owner remembers the key as lapsed: its next w on it
// answers error_lease_expired all the same.
func (m *model) dropKey(k *mKey) {
	for len(k.tombs) > 0 {
		n := k.tombs[0]
		if o := n.owner; o != nil {
			if m.lapsed == nil {
				m.lapsed = make(map[int][]mLapsed)
			}
			l := slices.Clone(m.lapsed[k.shard])
			var mine []int
			for i, e := range l {
				if e.o == o {
					mine = append(mine, i)
				}
			}
			switch {
			case len(mine) >= maxLapsedOwn:
				l = slices.Delete(l, mine[0], mine[0]+1)
			case len(l) >= maxLapsed:
				l = l[1:]
			}
			m.lapsed[k.shard] = append(l, mLapsed{o, k.id})
		}
		m.dropTomb(n)
	}
	delete(m.keys, k.id)
}

func (m *model) findHolder(k *mKey, tok codec.Token) *mNode {
	for _, n := range k.holders {
		if !n.fresh && n.tok == tok {
			if n.expires <= m.now {
				m.expire(n)
				return nil
			}
			return n
		}
	}
	return nil
}

func (o *mOwner) twoPhaseOn(k *mKey) *mNode {
	for _, n := range o.nodes {
		if n.key == k && n.twoPhase {
			return n
		}
	}
	return nil
}

func (m *model) acquire(o *mOwner, id mKeyID, timeout, limit, lease int64, req *rec) mRes {
	k, code := m.lookupOrCreate(id, limit)
	if k == nil {
		return mRes{code: code}
	}
	n := &mNode{owner: o, ownerID: o.id, key: k, lease: m.leaseOr(lease)}
	if k.grantable() {
		o.nodes = append(o.nodes, n)
		m.grant(n)
		return mRes{code: codec.CodeOK, node: n, lease: n.lease}
	}
	if m.maxWaiters > 0 && int64(len(k.waiters)) >= m.maxWaiters {
		return mRes{code: codec.CodeErrorMaxWaiters}
	}
	if timeout == 0 {
		return mRes{code: codec.CodeTimeout}
	}
	n.st, n.req, n.timeoutAt = stWaiting, req, m.now+timeout*sec
	k.waiters = append(k.waiters, n)
	o.nodes = append(o.nodes, n)
	return mRes{parked: true}
}

func (m *model) release(id mKeyID, tok codec.Token) codec.Code {
	k := m.keys[id]
	if k == nil {
		return codec.CodeError
	}
	n := m.findHolder(k, tok)
	if n == nil {
		return codec.CodeError
	}
	k.holders = del(k.holders, n, m.fail)
	m.unown(n)
	m.grantWaiters(k)
	return codec.CodeOK
}

func (m *model) renew(id mKeyID, tok codec.Token, lease int64) mRes {
	k := m.keys[id]
	if k == nil {
		return mRes{code: codec.CodeError}
	}
	n := m.findHolder(k, tok)
	if n == nil {
		return mRes{code: codec.CodeError}
	}
	n.lease = m.leaseOr(lease)
	n.expires = m.now + n.lease*sec
	return mRes{code: codec.CodeOK, lease: n.lease}
}

func (m *model) enqueue(o *mOwner, id mKeyID, limit, lease int64) mRes {
	k, code := m.lookupOrCreate(id, limit)
	if k == nil {
		return mRes{code: code}
	}
	if n := o.twoPhaseOn(k); n != nil {
		if n.st == stHolding && n.expires <= m.now {
			m.expire(n)
		}
		if n.st != stExpired {
			return mRes{code: codec.CodeErrorAlreadyEnqueued}
		}
		m.dropTomb(n)
	} else {
		m.takeLapsed(o, id)
	}
	n := &mNode{owner: o, ownerID: o.id, key: k, lease: m.leaseOr(lease), twoPhase: true}
	if k.grantable() {
		o.nodes = append(o.nodes, n)
		m.grant(n)
		return mRes{code: codec.CodeAcquired, node: n, lease: n.lease}
	}
	if m.maxWaiters > 0 && int64(len(k.waiters)) >= m.maxWaiters {
		return mRes{code: codec.CodeErrorMaxWaiters}
	}
	n.st = stWaiting
	k.waiters = append(k.waiters, n)
	o.nodes = append(o.nodes, n)
	return mRes{code: codec.CodeQueued}
}

func (m *model) wait(o *mOwner, id mKeyID, timeout int64, req *rec) mRes {
	var n *mNode
	k := m.keys[id]
	if k != nil {
		n = o.twoPhaseOn(k)
	}
	if n == nil {
		if m.takeLapsed(o, id) {
			return mRes{code: codec.CodeErrorLeaseExpired}
		}
		return mRes{code: codec.CodeErrorNotEnqueued}
	}
	switch n.st {
	case stExpired:
		m.dropTomb(n)
		return mRes{code: codec.CodeErrorLeaseExpired}
	case stHolding:
		if n.expires <= m.now {
			m.expire(n)
			m.dropTomb(n)
			return mRes{code: codec.CodeErrorLeaseExpired}
		}
		n.twoPhase, n.untold = false, false
		n.expires = m.now + n.lease*sec
		return mRes{code: codec.CodeOK, node: n, lease: n.lease}
	}
	if timeout == 0 {
		k.waiters = del(k.waiters, n, m.fail)
		m.unown(n)
		return mRes{code: codec.CodeTimeout}
	}
	n.req, n.timeoutAt = req, m.now+timeout*sec
	return mRes{parked: true}
}

func (m *model) close(o *mOwner) {
	for _, n := range slices.Clone(o.nodes) {
		switch n.st {
		case stWaiting:
			n.key.waiters = del(n.key.waiters, n, m.fail)
			n.req = nil
			m.unown(n)
		case stExpired:
			m.dropTomb(n)
		}
	}
	// A grant the owner was never told of is two-phase state: released
	// even with auto-release off.
	for _, n := range slices.Clone(o.nodes) {
		if m.autoRelease || n.untold {
			n.key.holders = del(n.key.holders, n, m.fail)
			m.unown(n)
			m.grantWaiters(n.key)
		} else {
			n.owner, n.twoPhase = nil, false
		}
	}
	o.nodes = nil
	for shard, l := range m.lapsed {
		m.lapsed[shard] = slices.DeleteFunc(slices.Clone(l), func(e mLapsed) bool { return e.o == o })
	}
}

func (m *model) sortedKeys() []*mKey {
	ks := make([]*mKey, 0, len(m.keys))
	for _, k := range m.keys {
		ks = append(ks, k)
	}
	sort.Slice(ks, func(i, j int) bool { return ks[i].id.String() < ks[j].id.String() })
	return ks
}

// advance resolves, in deadline-tick order, every lease end and timeout
// whose tick ceil(D/tick) is at or before floor(now/tick).
func (m *model) advance() {
	nowTick := m.now / m.tick
	for {
		next := int64(math.MaxInt64)
		for _, k := range m.keys {
			for _, n := range k.holders {
				next = min(next, ceilDiv(n.expires, m.tick))
			}
			for _, n := range k.waiters {
				if n.req != nil {
					next = min(next, ceilDiv(n.timeoutAt, m.tick))
				}
			}
		}
		if next > nowTick {
			return
		}
		for _, k := range m.sortedKeys() {
			var dueH, dueW []*mNode
			for _, n := range k.holders {
				if ceilDiv(n.expires, m.tick) == next {
					dueH = append(dueH, n)
				}
			}
			for _, n := range k.waiters {
				if n.req != nil && ceilDiv(n.timeoutAt, m.tick) == next {
					dueW = append(dueW, n)
				}
			}
			if len(dueH) > 0 && len(dueW) > 0 {
				m.fail("generator bug: a lease end and a timeout on %v fall due in the same tick %d", k.id, next)
			}
			for _, n := range dueH {
				m.expire(n)
			}
			for _, n := range dueW {
				k.waiters = del(k.waiters, n, m.fail)
				m.fired[n.req] = mRes{code: codec.CodeTimeout}
				n.req = nil
				m.unown(n)
			}
		}
	}
}

func (m *model) gc() int {
	n := 0
	for _, k := range m.keys {
		if k.idle && m.now-k.idleSince >= m.gcMaxIdle {
			m.dropKey(k)
			n++
		}
	}
	return n
}

// settle records the keys that became idle in this step.
func (m *model) settle() {
	for _, k := range m.keys {
		idle := len(k.holders) == 0 && len(k.waiters) == 0
		switch {
		case idle && !k.idle:
			k.idle, k.idleSince, k.idleOp = true, m.now, m.op
		case !idle:
			k.idle = false
		}
	}
}

func (m *model) snapshot() Snapshot {
	snap := Snapshot{Locks: []LockStat{}, Semaphores: []SemStat{}, IdleLocks: []IdleStat{}, IdleSemaphores: []IdleStat{}}
	for _, k := range m.sortedKeys() {
		switch {
		case k.idle && k.id.ns == Locks:
			snap.IdleLocks = append(snap.IdleLocks, IdleStat{Key: k.id.name, IdleS: secondsOf(m.now - k.idleSince)})
		case k.idle:
			snap.IdleSemaphores = append(snap.IdleSemaphores, IdleStat{Key: k.id.name, IdleS: secondsOf(m.now - k.idleSince)})
		case len(k.holders) == 0 && len(k.waiters) == 0:
			// Emptied in this step, idle from the next settle.
		case k.id.ns == Locks:
			ls := LockStat{Key: k.id.name, Waiters: int64(len(k.waiters))}
			if len(k.holders) > 0 {
				h := k.holders[0]
				ls.OwnerConnID = h.ownerID
				ls.LeaseExpiresInS = secondsOf(max(h.expires-m.now, 0))
			}
			snap.Locks = append(snap.Locks, ls)
		default:
			snap.Semaphores = append(snap.Semaphores, SemStat{Key: k.id.name, Limit: k.limit, Holders: int64(len(k.holders)), Waiters: int64(len(k.waiters))})
		}
	}
	return snap
}

// ---- the harness ----

type mslot struct {
	o      *Owner
	mo     *mOwner
	parked *rec
}

type poolTok struct {
	id  mKeyID
	tok codec.Token
}

type modelRun struct {
	t      *testing.T
	r      *rand.Rand
	seed   uint64
	shards int
	cfg    Config
	tick   int64
	now    int64
	tbl    *Table
	m      *model
	slots  []*mslot
	nextID uint64
	pool   []poolTok
	log    []string
	step   int
	fired  []*rec
	failed bool

	lastUse map[int64]int64 // tick class → last tick used
	classes int64
	window  int64

	semLimit map[string]int64
	stats    struct{ ops, grants, parked, fired int }
	replies  map[string]int // reply histogram, by operation
}

var modelNames = []string{"a", "b", "c", "d"}

func newModelRun(t *testing.T, seed uint64, shards int) *modelRun {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	h := &modelRun{t: t, r: r, seed: seed, shards: shards, lastUse: map[int64]int64{}, replies: map[string]int{}}
	ticks := []int64{10 * msec, 10 * msec, 5 * msec, 2 * msec, 20 * msec}
	h.tick = ticks[r.IntN(len(ticks))]
	h.classes = sec / h.tick
	// Deadlines are t+n s with n in 1..4, so two deadlines of operations
	// in distinct tick classes, or in one class but more than 4 s apart,
	// never share a tick.
	h.window = 4*h.classes + 1
	var seedBytes [32]byte
	for i := range seedBytes {
		seedBytes[i] = byte(r.Uint32())
	}
	seedBytes[31] |= 1
	h.cfg = Config{
		Shards:       shards,
		MaxLocks:     []int64{0, 0, 3, 5}[r.IntN(4)],
		MaxWaiters:   []int64{0, 0, 1, 2}[r.IntN(4)],
		DefaultLease: 2 + r.Int64N(2),
		AutoRelease:  r.IntN(2) == 0,
		Tick:         durationOf(h.tick),
		GCMaxIdle:    durationOf(3 * sec),
		FenceStart:   r.Uint64N(1 << 50),
		SaltSeed:     seedBytes,
	}
	h.now = r.Int64N(100 * sec)
	h.tbl = fakeTable(h.cfg, &h.now)
	h.semLimit = map[string]int64{"a": 1, "b": 2, "c": 3, "d": 2}
	h.m = &model{
		maxLocks: h.cfg.MaxLocks, maxWaiters: h.cfg.MaxWaiters, defLease: h.cfg.DefaultLease,
		autoRelease: h.cfg.AutoRelease, tick: h.tick, gcMaxIdle: 3 * sec, nShards: len(h.tbl.shards),
		keys: map[mKeyID]*mKey{}, fence: h.cfg.FenceStart,
		shardOf: func(id mKeyID) int { return h.tbl.shardIndex(id.ns, id.name) },
		gone:    func(id mKeyID) bool { return h.tbl.findKey(id.ns, id.name) == nil },
		fail:    h.fail,
	}
	for range 5 {
		h.slots = append(h.slots, h.newSlot(nil))
	}
	return h
}

func (h *modelRun) newSlot(reuse *Owner) *mslot {
	h.nextID++
	id := h.nextID
	o := reuse
	if o == nil {
		o = NewOwner(id)
	} else {
		o.Init(id)
	}
	return &mslot{o: o, mo: &mOwner{id: id, o: o}}
}

func (h *modelRun) fail(format string, args ...any) {
	if h.failed {
		return
	}
	h.failed = true
	h.t.Helper()
	start := max(0, len(h.log)-25)
	h.t.Fatalf("model mismatch: seed %d, shards %d, step %d: %s\nconfig: %+v\nlast operations:\n  %s\ncore state: %s\nrerun: go test ./lockcore -run 'TestModel' -lockcore.seed=%d",
		h.seed, h.shards, h.step, fmt.Sprintf(format, args...),
		h.cfgString(), strings.Join(h.log[start:], "\n  "), h.tbl.dump(), h.seed)
}

func (h *modelRun) cfgString() string {
	c := h.cfg
	return fmt.Sprintf("shards=%d maxLocks=%d maxWaiters=%d defaultLease=%d autoRelease=%v tick=%v fenceStart=%d",
		c.Shards, c.MaxLocks, c.MaxWaiters, c.DefaultLease, c.AutoRelease, c.Tick, c.FenceStart)
}

// nextTime moves the clock forward to a time whose deadline tick class no
// operation used within the window.
func (h *modelRun) nextTime(big bool) {
	var dt int64
	switch x := h.r.IntN(100); {
	case big && x < 50:
		dt = h.r.Int64N(4 * sec)
	case x < 60:
		dt = h.r.Int64N(40 * msec)
	case x < 92:
		dt = h.r.Int64N(400 * msec)
	default:
		dt = h.r.Int64N(2000 * msec)
	}
	t := h.now + 1 + dt
	for {
		tk := ceilDiv(t, h.tick)
		cls := tk % h.classes
		if last, used := h.lastUse[cls]; !used || tk-last > h.window {
			h.lastUse[cls] = tk
			break
		}
		t += h.tick
	}
	h.now = t
}

// exactTime sometimes moves the clock exactly onto a pending deadline, or
// onto (or just before) the tick boundary at which it fires, to probe the
// <= of lease checks and the tick rounding. It is used only by operations
// that cannot park (and so create no timeout timer): the instant then lies
// in the tick class of the operation that created the deadline, which
// created only lease timers (or is the parked request whose own deadline
// it is), so no lease end can come to share a tick with a timeout.
// It reports whether it moved the clock.
func (h *modelRun) exactTime(withTimeouts bool) bool {
	if h.r.IntN(100) >= 15 {
		return false
	}
	var ds []int64
	for _, k := range h.m.keys {
		for _, n := range k.holders {
			ds = append(ds, n.expires)
		}
		if withTimeouts {
			for _, n := range k.waiters {
				if n.req != nil {
					ds = append(ds, n.timeoutAt)
				}
			}
		}
	}
	if len(ds) == 0 {
		return false
	}
	d := ds[h.r.IntN(len(ds))]
	switch h.r.IntN(3) {
	case 1:
		d = ceilDiv(d, h.tick) * h.tick
	case 2:
		d = ceilDiv(d, h.tick)*h.tick - 1
	}
	if d <= h.now {
		return false
	}
	h.now = d
	tk := ceilDiv(d, h.tick)
	h.lastUse[tk%h.classes] = max(h.lastUse[tk%h.classes], tk)
	return true
}

func (h *modelRun) randKey() mKeyID {
	ns := Namespace(h.r.IntN(2))
	i := h.r.IntN(len(modelNames) + 2)
	if i >= len(modelNames) {
		i = 0 // "a" is the hot key
	}
	return mKeyID{ns: ns, name: modelNames[i]}
}

func (h *modelRun) limitFor(id mKeyID) int64 {
	if id.ns == Locks {
		return 1
	}
	if h.r.IntN(100) < 12 {
		return 1 + h.r.Int64N(3)
	}
	return h.semLimit[id.name]
}

func (h *modelRun) freeSlot() *mslot {
	var free []*mslot
	for _, sl := range h.slots {
		if sl.parked == nil {
			free = append(free, sl)
		}
	}
	if len(free) == 0 {
		return nil
	}
	return free[h.r.IntN(len(free))]
}

func (h *modelRun) holders() []*mNode {
	var out []*mNode
	for _, k := range h.m.sortedKeys() {
		out = append(out, k.holders...)
	}
	return out
}

// pickToken chooses the token (and key) of a release or renew.
func (h *modelRun) pickToken() (mKeyID, codec.Token) {
	hs := h.holders()
	x := h.r.IntN(100)
	switch {
	case x < 55 && len(hs) > 0:
		n := hs[h.r.IntN(len(hs))]
		return n.key.id, n.tok
	case x < 65 && len(hs) > 0:
		n := hs[h.r.IntN(len(hs))]
		tok := n.tok
		tok.Salt ^= 1 << h.r.IntN(64) // right fence, wrong salt
		return n.key.id, tok
	case x < 85 && len(h.pool) > 0:
		p := h.pool[h.r.IntN(len(h.pool))]
		return p.id, p.tok
	case x < 95 && len(h.pool) > 0:
		p := h.pool[h.r.IntN(len(h.pool))]
		return h.randKey(), p.tok // probably the wrong key or namespace
	}
	return h.randKey(), codec.Token{Fence: h.r.Uint64N(1 << 50), Salt: h.r.Uint64()}
}

func (h *modelRun) addPool(id mKeyID, tok codec.Token) {
	if tok.IsZero() {
		return
	}
	if len(h.pool) >= 48 {
		h.pool = slices.Delete(h.pool, 0, 1)
	}
	h.pool = append(h.pool, poolTok{id, tok})
}

func (h *modelRun) logf(format string, args ...any) {
	if len(h.log) >= 64 {
		h.log = slices.Delete(h.log, 0, 32)
	}
	h.log = append(h.log, fmt.Sprintf("#%d t=%d ", h.step, h.now)+fmt.Sprintf(format, args...))
}

// expected turns a model reply into the core's Result.
func expected(mr mRes) Result {
	if mr.parked {
		return Result{Parked: true}
	}
	r := Result{Code: mr.code, Lease: mr.lease}
	if mr.node != nil {
		r.Token = mr.node.tok
	}
	return r
}

func (h *modelRun) runStep() {
	h.step++
	h.fired = h.fired[:0]
	m := h.m
	m.op = h.step
	m.fired = map[*rec]mRes{}
	m.fresh = m.fresh[:0]
	fenceBefore := m.fence

	kind := h.r.IntN(100)
	fromTimer := false // completions of this step come from Advance
	sl := h.freeSlot()
	if sl == nil && kind < 48 {
		kind = 80 // everybody is parked: let time pass
	}
	var (
		got   Result
		want  mRes
		hasRe bool
		req   *rec
		grant mKeyID
		what  string
	)
	newRec := func() *rec {
		return &rec{name: fmt.Sprintf("r%d", h.step), tbl: h.tbl, sink: &h.fired}
	}
	switch {
	case kind < 22: // l / sl
		h.nextTime(false)
		m.now = h.now
		id := h.randKey()
		limit := h.limitFor(id)
		timeout := []int64{0, 0, 1, 2, 3}[h.r.IntN(5)]
		lease := h.r.Int64N(5)
		req = newRec()
		h.logf("owner %d acquire %v timeout=%d limit=%d lease=%d", sl.mo.id, id, timeout, limit, lease)
		got = h.tbl.Acquire(sl.o, id.ns, []byte(id.name), timeout, limit, lease, req, h.now)
		want = m.acquire(sl.mo, id, timeout, limit, lease, req)
		hasRe, grant, what = true, id, "acquire"
	case kind < 34: // e / se
		if !h.exactTime(false) {
			h.nextTime(false)
		}
		m.now = h.now
		id := h.randKey()
		limit := h.limitFor(id)
		lease := h.r.Int64N(5)
		h.logf("owner %d enqueue %v limit=%d lease=%d", sl.mo.id, id, limit, lease)
		got = h.tbl.Enqueue(sl.o, id.ns, []byte(id.name), limit, lease, h.now)
		want = m.enqueue(sl.mo, id, limit, lease)
		hasRe, grant, what = true, id, "enqueue"
	case kind < 48: // w / sw
		if h.r.IntN(100) < 70 {
			// Prefer an owner with a pending two-phase entry.
			for _, i := range h.r.Perm(len(h.slots)) {
				if c := h.slots[i]; c.parked == nil && slices.ContainsFunc(c.mo.nodes, func(n *mNode) bool { return n.twoPhase }) {
					sl = c
					break
				}
			}
		}
		id := h.randKey()
		var mine []*mNode
		for _, n := range sl.mo.nodes {
			if n.twoPhase {
				mine = append(mine, n)
			}
		}
		var target *mNode
		if len(mine) > 0 && h.r.IntN(100) < 80 {
			target = mine[h.r.IntN(len(mine))]
			id = target.key.id
		}
		if target != nil && target.st == stHolding && target.expires > h.now && h.r.IntN(100) < 20 {
			// Collect a grant exactly when its lease ends: this w cannot
			// park, so the instant is safe (see exactTime).
			h.now = target.expires
			tk := ceilDiv(h.now, h.tick)
			h.lastUse[tk%h.classes] = max(h.lastUse[tk%h.classes], tk)
		} else {
			h.nextTime(false)
		}
		m.now = h.now
		timeout := []int64{0, 1, 2, 3}[h.r.IntN(4)]
		req = newRec()
		h.logf("owner %d wait %v timeout=%d", sl.mo.id, id, timeout)
		got = h.tbl.Wait(sl.o, id.ns, []byte(id.name), timeout, req, h.now)
		want = m.wait(sl.mo, id, timeout, req)
		hasRe, grant, what = true, id, "wait"
	case kind < 62: // r / sr
		if !h.exactTime(false) {
			h.nextTime(false)
		}
		m.now = h.now
		id, tok := h.pickToken()
		h.logf("release %v fence=%d salt=%x", id, tok.Fence, tok.Salt)
		got = Result{Code: h.tbl.Release(id.ns, []byte(id.name), tok, h.now)}
		want = mRes{code: m.release(id, tok)}
		hasRe, what = true, "release"
	case kind < 69: // n / sn
		if !h.exactTime(false) {
			h.nextTime(false)
		}
		m.now = h.now
		id, tok := h.pickToken()
		lease := h.r.Int64N(5)
		h.logf("renew %v fence=%d salt=%x lease=%d", id, tok.Fence, tok.Salt, lease)
		got = h.tbl.Renew(id.ns, []byte(id.name), tok, lease, h.now)
		want = m.renew(id, tok, lease)
		hasRe, what = true, "renew"
	case kind < 73: // close an owner (maybe one with a parked request)
		h.nextTime(false)
		m.now = h.now
		i := h.r.IntN(len(h.slots))
		old := h.slots[i]
		h.logf("close owner %d (parked=%v)", old.mo.id, old.parked != nil)
		h.tbl.CloseOwner(old.o, h.now)
		m.close(old.mo)
		var reuse *Owner
		if h.r.IntN(2) == 0 {
			reuse = old.o // a pooled connection object, re-initialised
		}
		h.slots[i] = h.newSlot(reuse)
	case kind < 97: // let time pass
		if !h.exactTime(true) {
			h.nextTime(true)
		}
		m.now = h.now
		h.logf("advance")
		h.tbl.Advance(h.now)
		m.advance()
		fromTimer = true
	default:
		h.nextTime(false)
		m.now = h.now
		h.logf("gc")
		n1, n2 := h.tbl.GC(h.now), m.gc()
		if n1 != n2 {
			h.fail("GC pruned %d keys, model %d", n1, n2)
		}
	}
	m.settle()
	h.align(fenceBefore)

	// The reply.
	if hasRe {
		w := expected(want)
		if got != w {
			h.fail("reply %v, model %v", fmtFull(got), fmtFull(w))
		}
		if got.Parked {
			h.replies[what+" parked"]++
		} else {
			h.replies[what+" "+got.Code.String()]++
		}
		if got.Parked {
			sl.parked = req
			h.stats.parked++
		}
		if !got.Token.IsZero() {
			h.addPool(grant, got.Token)
		}
	}
	h.checkStep(fromTimer, 8)
	h.stats.ops++
	h.stats.grants += int(m.fence - fenceBefore)
}

// checkStep checks a step's outcome against the model: the completions are
// exactly the model's, each once (marked Timer when Advance delivered
// them); no parked request is lost; the invariants hold; and every
// statsEvery steps Stats equals the model's snapshot.
func (h *modelRun) checkStep(fromTimer bool, statsEvery int) {
	m := h.m
	seen := map[*rec]bool{}
	for _, r := range h.fired {
		if seen[r] || len(r.results) != 1 {
			h.fail("request %s completed %d times", r.name, len(r.results))
		}
		seen[r] = true
		mr, ok := m.fired[r]
		if !ok {
			h.fail("unexpected completion of %s: %v", r.name, fmtFull(r.results[0]))
		}
		h.replies["completion "+r.results[0].Code.String()]++
		w := expected(mr)
		w.Timer = fromTimer // Advance marks what it delivers
		if r.results[0] != w {
			h.fail("completion of %s: %v, model %v", r.name, fmtFull(r.results[0]), fmtFull(w))
		}
		for _, sl := range h.slots {
			if sl.parked == r {
				sl.parked = nil
			}
		}
		if mr.node != nil {
			h.addPool(mr.node.key.id, mr.node.tok)
		}
		h.stats.fired++
	}
	for r := range m.fired {
		if !seen[r] {
			h.fail("request %s did not complete; model: %v", r.name, fmtFull(expected(m.fired[r])))
		}
	}
	for _, sl := range h.slots {
		if sl.parked != nil && !sl.mo.parkedIn(sl.parked) {
			h.fail("owner %d: parked request %s lost by the model", sl.mo.id, sl.parked.name)
		}
	}
	if err := h.tbl.checkInvariants(true); err != nil {
		h.fail("invariant violated: %v", err)
	}
	if h.step%statsEvery == 0 {
		if got, want := h.tbl.Stats(h.now), m.snapshot(); !reflect.DeepEqual(got, want) {
			h.fail("stats\n got %+v\nwant %+v", got, want)
		}
	}
}

func (o *mOwner) parkedIn(r *rec) bool {
	for _, n := range o.nodes {
		if n.req == r {
			return true
		}
	}
	return false
}

func fmtFull(r Result) string {
	if r.Parked {
		return "parked"
	}
	return fmt.Sprintf("%v token=%x/%x lease=%d", r.Code, r.Token.Fence, r.Token.Salt, r.Lease)
}

// align compares the core's state with the model's, key by key and node by
// node, and teaches the model the tokens of this step's grants.
func (h *modelRun) align(fenceBefore uint64) {
	m := h.m
	core := map[mKeyID]*key{}
	for i := range h.tbl.shards {
		c := h.tbl.shards[i].c
		for _, mp := range []map[string]*key{c.locks, c.sems} {
			for name, k := range mp {
				core[mKeyID{k.ns, name}] = k
			}
		}
	}
	if len(core) != len(m.keys) {
		var a, b []string
		for id := range core {
			a = append(a, id.String())
		}
		for id := range m.keys {
			b = append(b, id.String())
		}
		sort.Strings(a)
		sort.Strings(b)
		h.fail("keys: core %v, model %v", a, b)
	}
	var fences []uint64
	for _, mk := range m.sortedKeys() {
		k := core[mk.id]
		switch {
		case k == nil:
			h.fail("key %v missing from the core", mk.id)
		case k.limit != mk.limit:
			h.fail("key %v: limit %d, model %d", mk.id, k.limit, mk.limit)
		case k.holders.n != int64(len(mk.holders)) || k.waiters.n != int64(len(mk.waiters)) || k.graves.n != int64(len(mk.tombs)):
			h.fail("key %v: holders/waiters/tombs %d/%d/%d, model %d/%d/%d", mk.id,
				k.holders.n, k.waiters.n, k.graves.n, len(mk.holders), len(mk.waiters), len(mk.tombs))
		case k.inIdle != mk.idle:
			h.fail("key %v: idle %v, model %v", mk.id, k.inIdle, mk.idle)
		case mk.idle && k.idleSince != mk.idleSince:
			h.fail("key %v: idle since %d, model %d", mk.id, k.idleSince, mk.idleSince)
		}
		same := func(n *node, mn *mNode, what string, i int) {
			switch {
			case n.ownerID != mn.ownerID:
				h.fail("key %v %s %d: owner %d, model %d", mk.id, what, i, n.ownerID, mn.ownerID)
			case (n.owner == nil) != (mn.owner == nil) || (n.owner != nil && n.owner != mn.owner.o):
				h.fail("key %v %s %d: orphaned %v, model %v", mk.id, what, i, n.owner == nil, mn.owner == nil)
			case n.twoPhase != mn.twoPhase:
				h.fail("key %v %s %d: two-phase %v, model %v", mk.id, what, i, n.twoPhase, mn.twoPhase)
			case n.lease != mn.lease:
				h.fail("key %v %s %d: lease %d, model %d", mk.id, what, i, n.lease, mn.lease)
			}
		}
		i := 0
		for n := k.holders.head; n != nil; n = n.knext {
			mn := mk.holders[i]
			same(n, mn, "holder", i)
			if n.expires != mn.expires {
				h.fail("key %v holder %d: expires %d, model %d", mk.id, i, n.expires, mn.expires)
			}
			if mn.fresh {
				mn.fresh = false
				mn.tok = n.token
				fences = append(fences, n.token.Fence)
			} else if mn.tok != n.token {
				h.fail("key %v holder %d: token %v, model %v", mk.id, i, n.token, mn.tok)
			}
			i++
		}
		i = 0
		for n := k.waiters.head; n != nil; n = n.knext {
			mn := mk.waiters[i]
			same(n, mn, "waiter", i)
			switch {
			case mn.req == nil && n.cont != nil:
				h.fail("key %v waiter %d: parked in the core only", mk.id, i)
			case mn.req != nil && n.cont != Continuation(mn.req):
				h.fail("key %v waiter %d: parked request differs", mk.id, i)
			case mn.req != nil && int64(n.timer.Deadline()) != ceilDiv(mn.timeoutAt, m.tick):
				h.fail("key %v waiter %d: timeout tick %d, model %d", mk.id, i, n.timer.Deadline(), ceilDiv(mn.timeoutAt, m.tick))
			}
			i++
		}
	}
	for _, n := range m.fresh {
		if n.fresh {
			h.fail("model: a grant of this step on %v is no longer held", n.key.id)
		}
	}
	// This step's grants used exactly the next fences.
	sort.Slice(fences, func(i, j int) bool { return fences[i] < fences[j] })
	if uint64(len(fences)) != m.fence-fenceBefore {
		h.fail("%d grants in the core, %d in the model", len(fences), m.fence-fenceBefore)
	}
	for i, f := range fences {
		if f != fenceBefore+uint64(i)+1 {
			h.fail("grant fences %v, want %d..%d", fences, fenceBefore+1, m.fence)
		}
	}
	if got := h.tbl.Fence(); got != m.fence {
		h.fail("Fence() %d, model %d", got, m.fence)
	}
}

func TestModel(t *testing.T) {
	seeds, steps := 110, 480
	if *flagLong {
		seeds, steps = 3000, 3000
	}
	var total, grants, parked, fired int
	replies := map[string]int{}
	for _, shards := range []int{2, 128} {
		t.Run(fmt.Sprintf("shards=%d", shards), func(t *testing.T) {
			for i := range seeds {
				seed := uint64(shards)<<32 | uint64(i)
				if *flagSeed != 0 {
					if shards != int(*flagSeed>>32) {
						t.Skip("other shard count")
					}
					seed = *flagSeed
				}
				h := newModelRun(t, seed, shards)
				for range steps {
					h.runStep()
				}
				total += h.stats.ops
				grants += h.stats.grants
				parked += h.stats.parked
				fired += h.stats.fired
				for k, v := range h.replies {
					replies[k] += v
				}
				if *flagSeed != 0 {
					break
				}
			}
		})
	}
	t.Logf("%d steps, %d grants, %d parked requests, %d completions", total, grants, parked, fired)
	var hist []string
	for k, v := range replies {
		hist = append(hist, fmt.Sprintf("%s: %d", k, v))
	}
	sort.Strings(hist)
	t.Logf("replies:\n  %s", strings.Join(hist, "\n  "))
}
