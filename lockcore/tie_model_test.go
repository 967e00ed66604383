package lockcore

import (
	"fmt"
	"slices"
	"sort"
	"testing"

	"github.com/lockreactor/dflockd/codec"
)

// A variant of TestModel that does NOT avoid same-tick ties
// between lease ends and timeouts (TestModel's generator never produces
// them), adds CancelParked, long idle jumps, and checks the event counters
// (Grants, Handoffs, Expiries, DisconnectReleases, WaiterTimeouts) against
// what the model did, step by step.
//
// Reference semantics for Advance (the one fire documents): for each key,
// all lease ends and timeouts whose deadline tick has come are applied in
// the order of their nanosecond deadlines, a tie going to the lease end.
// It reuses TestModel's model and harness (modelRun, align, expected).

// r21Advance resolves every due lease end and timeout, per key, in
// nanosecond deadline order (ties: lease end first).
func r21Advance(m *model, ctr *r21ctr) {
	nowTick := m.now / m.tick
	type ev struct {
		n       *mNode
		at      int64
		timeout bool
	}
	for _, k := range m.sortedKeys() {
		var evs []ev
		for _, n := range k.holders {
			if ceilDiv(n.expires, m.tick) <= nowTick {
				evs = append(evs, ev{n, n.expires, false})
			}
		}
		for _, n := range k.waiters {
			if n.req != nil && ceilDiv(n.timeoutAt, m.tick) <= nowTick {
				evs = append(evs, ev{n, n.timeoutAt, true})
			}
		}
		sort.SliceStable(evs, func(i, j int) bool {
			if evs[i].at != evs[j].at {
				return evs[i].at < evs[j].at
			}
			return !evs[i].timeout && evs[j].timeout
		})
		for _, e := range evs {
			n := e.n
			if !e.timeout {
				if n.st == stHolding && slices.Contains(k.holders, n) && n.expires == e.at {
					m.expire(n)
				}
				continue
			}
			if n.st == stWaiting && n.req != nil && slices.Contains(k.waiters, n) {
				k.waiters = del(k.waiters, n, m.fail)
				m.fired[n.req] = mRes{code: codec.CodeTimeout}
				n.req = nil
				m.unown(n)
				ctr.timeouts[k.id.ns]++
			}
		}
	}
}

// r21Cancel is the model of CancelParked.
func r21Cancel(m *model, o *mOwner) bool {
	for _, n := range o.nodes {
		if n.st == stWaiting && n.req != nil {
			n.key.waiters = del(n.key.waiters, n, m.fail)
			n.req = nil
			m.unown(n)
			return true
		}
	}
	return false
}

type r21ctr struct {
	grants, handoffs, expiries, disc, timeouts [2]uint64
}

// r21NextTime moves the clock so that deadlines often share a tick (and
// sometimes a nanosecond) with earlier ones.
func (h *modelRun) r21NextTime() {
	tk := h.tick
	steps := []int64{0, 1, tk / 2, tk - 1, tk, 2*tk + 1, sec, sec + 1, sec - tk/2, 2*sec - 1, 300 * msec, 7 * msec}
	dt := steps[h.r.IntN(len(steps))]
	if h.r.IntN(40) == 0 {
		dt = 5*sec + h.r.Int64N(40*sec) // long idle jump
	}
	h.now += dt
	h.m.now = h.now
}

func (h *modelRun) r21Step(ctr *r21ctr) {
	h.step++
	h.fired = h.fired[:0]
	m := h.m
	m.op = h.step
	m.fired = map[*rec]mRes{}
	m.fresh = m.fresh[:0]
	fenceBefore := m.fence

	// Who held and who waited before the step.
	wasHolder := map[*mNode]bool{}
	wasWaiter := map[*mNode]bool{}
	for _, k := range m.keys {
		for _, n := range k.holders {
			wasHolder[n] = true
		}
		for _, n := range k.waiters {
			wasWaiter[n] = true
		}
	}
	var released *mNode // the holder a successful release removed
	closedID := uint64(0)

	kind := h.r.IntN(100)
	fromTimer := false
	sl := h.freeSlot()
	if sl == nil && kind < 48 {
		kind = 85
	}
	var (
		got   Result
		want  mRes
		hasRe bool
		req   *rec
		grant mKeyID
	)
	newRec := func() *rec {
		return &rec{name: fmt.Sprintf("r%d", h.step), tbl: h.tbl, sink: &h.fired}
	}
	h.r21NextTime()
	switch {
	case kind < 22:
		id := h.randKey()
		limit := h.limitFor(id)
		timeout := []int64{0, 1, 1, 2, 3}[h.r.IntN(5)]
		lease := h.r.Int64N(4)
		req = newRec()
		h.logf("owner %d acquire %v timeout=%d limit=%d lease=%d", sl.mo.id, id, timeout, limit, lease)
		got = h.tbl.Acquire(sl.o, id.ns, []byte(id.name), timeout, limit, lease, req, h.now)
		want = m.acquire(sl.mo, id, timeout, limit, lease, req)
		hasRe, grant = true, id
	case kind < 34:
		id := h.randKey()
		limit := h.limitFor(id)
		lease := h.r.Int64N(4)
		h.logf("owner %d enqueue %v limit=%d lease=%d", sl.mo.id, id, limit, lease)
		got = h.tbl.Enqueue(sl.o, id.ns, []byte(id.name), limit, lease, h.now)
		want = m.enqueue(sl.mo, id, limit, lease)
		hasRe, grant = true, id
	case kind < 48:
		for _, i := range h.r.Perm(len(h.slots)) {
			if c := h.slots[i]; c.parked == nil && slices.ContainsFunc(c.mo.nodes, func(n *mNode) bool { return n.twoPhase }) {
				sl = c
				break
			}
		}
		id := h.randKey()
		for _, n := range sl.mo.nodes {
			if n.twoPhase && h.r.IntN(3) > 0 {
				id = n.key.id
				break
			}
		}
		timeout := []int64{0, 1, 2, 3}[h.r.IntN(4)]
		req = newRec()
		h.logf("owner %d wait %v timeout=%d", sl.mo.id, id, timeout)
		got = h.tbl.Wait(sl.o, id.ns, []byte(id.name), timeout, req, h.now)
		want = m.wait(sl.mo, id, timeout, req)
		hasRe, grant = true, id
	case kind < 60:
		id, tok := h.pickToken()
		var cand *mNode
		if k := m.keys[id]; k != nil {
			for _, n := range k.holders {
				if !n.fresh && n.tok == tok {
					cand = n
				}
			}
		}
		h.logf("release %v fence=%d", id, tok.Fence)
		got = Result{Code: h.tbl.Release(id.ns, []byte(id.name), tok, h.now)}
		want = mRes{code: m.release(id, tok)}
		if want.code == codec.CodeOK {
			released = cand
		}
		hasRe = true
	case kind < 66:
		id, tok := h.pickToken()
		lease := h.r.Int64N(4)
		h.logf("renew %v fence=%d lease=%d", id, tok.Fence, lease)
		got = h.tbl.Renew(id.ns, []byte(id.name), tok, lease, h.now)
		want = m.renew(id, tok, lease)
		hasRe = true
	case kind < 70:
		i := h.r.IntN(len(h.slots))
		old := h.slots[i]
		h.logf("close owner %d (parked=%v)", old.mo.id, old.parked != nil)
		closedID = old.mo.id
		h.tbl.CloseOwner(old.o, h.now)
		m.close(old.mo)
		h.slots[i] = h.newSlot(nil)
	case kind < 74:
		i := h.r.IntN(len(h.slots))
		s := h.slots[i]
		h.logf("cancel parked of owner %d (parked=%v)", s.mo.id, s.parked != nil)
		g, w := h.tbl.CancelParked(s.o, h.now), r21Cancel(m, s.mo)
		if g != w {
			h.fail("CancelParked %v, model %v", g, w)
		}
		if g {
			s.parked = nil
		}
	case kind < 97:
		h.logf("advance")
		h.tbl.Advance(h.now)
		r21Advance(m, ctr)
		fromTimer = true
	default:
		h.logf("gc")
		n1, n2 := h.tbl.GC(h.now), m.gc()
		if n1 != n2 {
			h.fail("GC pruned %d keys, model %d", n1, n2)
		}
	}
	m.settle()
	h.align(fenceBefore)

	if hasRe {
		w := expected(want)
		if got != w {
			h.fail("reply %v, model %v", fmtFull(got), fmtFull(w))
		}
		if got.Parked {
			sl.parked = req
		}
		if !got.Token.IsZero() {
			h.addPool(grant, got.Token)
		}
	}
	h.checkStep(fromTimer, 5)

	// ---- counters from the model's transitions ----
	isHolder := map[*mNode]bool{}
	for _, k := range m.keys {
		for _, n := range k.holders {
			isHolder[n] = true
		}
	}
	for _, n := range m.fresh {
		ns := n.key.id.ns
		ctr.grants[ns]++
		if wasWaiter[n] {
			ctr.handoffs[ns]++
		}
	}
	for n := range wasHolder {
		if isHolder[n] {
			continue
		}
		ns := n.key.id.ns
		switch {
		case n == released:
		case closedID != 0 && n.ownerID == closedID && n.owner != nil && n.st != stExpired:
			ctr.disc[ns]++
		default:
			ctr.expiries[ns]++
		}
	}
	got2 := h.tbl.Counters()
	if got2.Grants != ctr.grants || got2.Handoffs != ctr.handoffs || got2.Expiries != ctr.expiries || got2.DisconnectReleases != ctr.disc || got2.WaiterTimeouts != ctr.timeouts {
		h.fail("counters: grants %v handoffs %v expiries %v disconnects %v timeouts %v; model %v %v %v %v %v",
			got2.Grants, got2.Handoffs, got2.Expiries, got2.DisconnectReleases, got2.WaiterTimeouts, ctr.grants, ctr.handoffs, ctr.expiries, ctr.disc, ctr.timeouts)
	}
	if got2.Timers != int64(h.tbl.wheelLen()) {
		h.fail("Timers %d, wheel %d", got2.Timers, h.tbl.wheelLen())
	}
}

func TestTieModel(t *testing.T) {
	seeds, steps := 60, 400
	for _, shards := range []int{1, 4} {
		t.Run(fmt.Sprintf("shards=%d", shards), func(t *testing.T) {
			for i := range seeds {
				seed := uint64(21)<<40 | uint64(shards)<<32 | uint64(i)
				h := newModelRun(t, seed, shards)
				var ctr r21ctr
				for range steps {
					h.r21Step(&ctr)
				}
			}
		})
	}
}
