package chaos_test

import (
	"cmp"
	"context"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/codec"
	"github.com/lockreactor/dflockd/loadtest/chaos"
	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// The checkers' own tests: each must pass a correct history and catch a
// deliberately broken one.

const ms = int64(time.Millisecond)

// hist builds synthetic histories.
type hist struct{ h chaos.History }

func newHist() *hist {
	return &hist{h: chaos.History{DefaultLease: 33, Limits: map[string]int64{"s": 2}, Conns: map[int32]chaos.ConnEnd{}}}
}

func tok(fence uint64) codec.Token { return codec.Token{Fence: fence, Salt: 0xabc} }

// op appends a replied op; reply is the reply line.
func (b *hist) op(conn int32, cmd codec.Command, key, reply string, invoke, ret int64, set ...func(*chaos.Op)) *hist {
	o := chaos.Op{ID: len(b.h.Ops), Client: conn, Conn: conn, Cmd: cmd, Key: key, Invoke: invoke, Return: ret, Status: chaos.Replied}
	for _, f := range set {
		f(&o)
	}
	if reply == "" {
		o.Status, o.Return = chaos.Abandoned, 0
	} else if !codec.ParseReply([]byte(reply), &o.Reply) {
		o.Raw = reply
	}
	o.Reply.Body = nil
	b.h.Ops = append(b.h.Ops, o)
	return b
}

func grantLine(code string, fence uint64, lease int) string {
	return code + " " + tok(fence).String() + " " + itoa(lease)
}

func itoa(n int) string { return strconv.Itoa(n) }

func lease(l int64) func(*chaos.Op)         { return func(o *chaos.Op) { o.Lease = l } }
func timeout(t int64) func(*chaos.Op)       { return func(o *chaos.Op) { o.Timeout = t } }
func token(f uint64) func(*chaos.Op)        { return func(o *chaos.Op) { o.Token = tok(f) } }
func limit(l int64) func(*chaos.Op)         { return func(o *chaos.Op) { o.Limit = l } }
func status(s chaos.Status) func(*chaos.Op) { return func(o *chaos.Op) { o.Status = s } }

func checks(vs []chaos.Violation, check string) []chaos.Violation {
	var out []chaos.Violation
	for _, v := range vs {
		if v.Check == check {
			out = append(out, v)
		}
	}
	return out
}

func TestCheckExclusionLock(t *testing.T) {
	// Conn 1 holds k from t=0..10ms (released at 10ms); conn 2 is granted
	// with a reply at 12ms: fine. A release sent at 20ms instead (the
	// broken history) means both held k at 12ms.
	good := newHist().
		op(1, codec.CmdLock, "k", grantLine("ok", 10, 5), 0, 1*ms, lease(5), timeout(1)).
		op(2, codec.CmdLock, "k", grantLine("ok", 11, 5), 2*ms, 12*ms, lease(5), timeout(1)).
		op(1, codec.CmdRelease, "k", "ok", 10*ms, 11*ms, token(10))
	require.Empty(t, chaos.Check(&good.h))

	bad := newHist().
		op(1, codec.CmdLock, "k", grantLine("ok", 10, 5), 0, 1*ms, lease(5), timeout(1)).
		op(2, codec.CmdLock, "k", grantLine("ok", 11, 5), 2*ms, 12*ms, lease(5), timeout(1)).
		op(1, codec.CmdRelease, "k", "ok", 20*ms, 21*ms, token(10))
	vs := checks(chaos.Check(&bad.h), "exclusion")
	require.Len(t, vs, 1, "two overlapping holders not caught")
	require.ElementsMatch(t, []int{1, 0}, vs[0].Ops)

	// The lease bounds the hold: conn 1's 1-second lease, counted from its
	// send time, ran out before conn 2's grant at 1.5 s — no violation; a
	// grant at 0.5 s is one. A renewal (sent at 0.4 s) extends the lease.
	expired := newHist().
		op(1, codec.CmdLock, "k", grantLine("ok", 10, 1), 0, 1*ms, lease(1), timeout(0)).
		op(2, codec.CmdLock, "k", grantLine("ok", 11, 1), 1*ms, 1500*ms, lease(1), timeout(2))
	require.Empty(t, chaos.Check(&expired.h))
	early := newHist().
		op(1, codec.CmdLock, "k", grantLine("ok", 10, 1), 0, 1*ms, lease(1), timeout(0)).
		op(2, codec.CmdLock, "k", grantLine("ok", 11, 1), 1*ms, 500*ms, lease(1), timeout(2))
	require.Len(t, checks(chaos.Check(&early.h), "exclusion"), 1, "grant before the lease ran out not caught")
	renewed := newHist().
		op(1, codec.CmdLock, "k", grantLine("ok", 10, 1), 0, 1*ms, lease(1), timeout(0)).
		op(1, codec.CmdRenew, "k", "ok 1", 400*ms, 401*ms, token(10), lease(1)).
		op(2, codec.CmdLock, "k", grantLine("ok", 11, 1), 1*ms, 1300*ms, lease(1), timeout(2))
	require.Len(t, checks(chaos.Check(&renewed.h), "exclusion"), 1, "renewal not counted")
	// A disconnect (auto-release) ends the hold no earlier than the close.
	closed := newHist().
		op(1, codec.CmdLock, "k", grantLine("ok", 10, 5), 0, 1*ms, lease(5), timeout(0)).
		op(2, codec.CmdLock, "k", grantLine("ok", 11, 5), 1*ms, 30*ms, lease(5), timeout(2))
	closed.h.Conns[1] = chaos.ConnEnd{At: 20 * ms, ByClient: true}
	require.Empty(t, chaos.Check(&closed.h))
	closed.h.Conns[1] = chaos.ConnEnd{At: 40 * ms, ByClient: true}
	require.Len(t, checks(chaos.Check(&closed.h), "exclusion"), 1, "grant before the holder's close not caught")
}

func TestCheckExclusionSemaphore(t *testing.T) {
	// Limit 2: two concurrent holders are fine, a third is not.
	b := newHist().
		op(1, codec.CmdSemLock, "s", grantLine("ok", 10, 5), 0, 1*ms, lease(5), limit(2)).
		op(2, codec.CmdSemLock, "s", grantLine("ok", 11, 5), 0, 2*ms, lease(5), limit(2))
	require.Empty(t, chaos.Check(&b.h))
	b.op(3, codec.CmdSemLock, "s", grantLine("ok", 12, 5), 0, 3*ms, lease(5), limit(2))
	vs := checks(chaos.Check(&b.h), "exclusion")
	require.Len(t, vs, 1, "three holders of a limit-2 semaphore not caught")
	// After one of them released, the third grant is fine.
	b.op(1, codec.CmdSemRelease, "s", "ok", 2*ms, 3*ms, token(10))
	require.Empty(t, checks(chaos.Check(&b.h), "exclusion"))
	// A lock and a semaphore of the same name are different resources.
	ns := newHist().
		op(1, codec.CmdLock, "s", grantLine("ok", 10, 5), 0, 1*ms, lease(5)).
		op(2, codec.CmdSemLock, "s", grantLine("ok", 11, 5), 0, 2*ms, lease(5), limit(2))
	require.Empty(t, chaos.Check(&ns.h))
}

// TestCheckExclusionLimitPerRequest: each grant is judged by the limit its
// own request asked for (a sw by its se's), not by the workload's intended
// limit; holds granted under different limits must not overlap.
func TestCheckExclusionLimitPerRequest(t *testing.T) {
	// The workload means s to have limit 2 (newHist), but the first
	// request created it with limit 3: three holders are right.
	poisoned := newHist().
		op(1, codec.CmdSemLock, "s", grantLine("ok", 10, 5), 0, 1*ms, lease(5), limit(3)).
		op(2, codec.CmdSemLock, "s", grantLine("ok", 11, 5), 0, 2*ms, lease(5), limit(3)).
		op(3, codec.CmdSemEnqueue, "s", "queued", 3*ms, 4*ms, lease(5), limit(3)).
		op(3, codec.CmdSemWait, "s", grantLine("ok", 12, 5), 5*ms, 6*ms, timeout(1))
	require.Empty(t, chaos.Check(&poisoned.h))
	// A fourth holder is one too many for limit 3.
	four := newHist()
	four.h.Ops = slices.Clone(poisoned.h.Ops)
	four.op(4, codec.CmdSemLock, "s", grantLine("ok", 13, 5), 7*ms, 8*ms, lease(5), limit(3))
	require.Len(t, checks(chaos.Check(&four.h), "exclusion"), 1, "four holders of a limit-3 semaphore not caught")

	// The sw is judged by its se's limit: with se limit 2 it made three
	// holders of a limit-2 grant, and mixed limits on a live key.
	mixed := newHist().
		op(1, codec.CmdSemLock, "s", grantLine("ok", 10, 5), 0, 1*ms, lease(5), limit(3)).
		op(2, codec.CmdSemLock, "s", grantLine("ok", 11, 5), 0, 2*ms, lease(5), limit(3)).
		op(3, codec.CmdSemEnqueue, "s", "queued", 3*ms, 4*ms, lease(5), limit(2)).
		op(3, codec.CmdSemWait, "s", grantLine("ok", 12, 5), 5*ms, 6*ms, timeout(1))
	vs := checks(chaos.Check(&mixed.h), "exclusion")
	require.Len(t, vs, 2, "sw over its se's limit and mixed limits not caught: %v", vs)
	// Mixed limits alone (within both limits) are caught too.
	mixed2 := newHist().
		op(1, codec.CmdSemLock, "s", grantLine("ok", 10, 5), 0, 1*ms, lease(5), limit(3)).
		op(2, codec.CmdSemLock, "s", grantLine("ok", 11, 5), 0, 2*ms, lease(5), limit(2))
	vs = checks(chaos.Check(&mixed2.h), "exclusion")
	require.Len(t, vs, 1, "grants under different limits on a live key not caught")
	require.Contains(t, vs[0].Msg, "under limit")

	// A key dropped when idle and recreated with another limit is fine:
	// the earlier hold had ended.
	recreated := newHist().
		op(1, codec.CmdSemLock, "s", grantLine("ok", 10, 5), 0, 1*ms, lease(5), limit(3)).
		op(1, codec.CmdSemRelease, "s", "ok", 2*ms, 3*ms, token(10)).
		op(2, codec.CmdSemLock, "s", grantLine("ok", 11, 5), 4*ms, 5*ms, lease(5), limit(2))
	require.Empty(t, chaos.Check(&recreated.h))
}

// TestCheckFenceRealTime: a grant asked for after another grant's reply
// arrived must have the larger fence, whatever the key.
func TestCheckFenceRealTime(t *testing.T) {
	good := newHist().
		op(1, codec.CmdLock, "a", grantLine("ok", 20, 5), 0, 1*ms, lease(5)).
		op(2, codec.CmdLock, "b", grantLine("ok", 15, 5), 0, 2*ms, lease(5)). // concurrent: any order
		op(3, codec.CmdLock, "c", grantLine("ok", 21, 5), 3*ms, 4*ms, lease(5))
	require.Empty(t, chaos.Check(&good.h))
	bad := newHist().
		op(1, codec.CmdLock, "a", grantLine("ok", 20, 5), 0, 1*ms, lease(5)).
		op(2, codec.CmdLock, "b", grantLine("ok", 15, 5), 2*ms, 3*ms, lease(5))
	vs := checks(chaos.Check(&bad.h), "exclusion")
	require.Len(t, vs, 1, "fence below an earlier grant's not caught")
	require.ElementsMatch(t, []int{0, 1}, vs[0].Ops)
	// A w's grant may have happened any time after its e was sent.
	twoPhase := newHist().
		op(2, codec.CmdEnqueue, "b", "queued", 0, 1*ms, lease(5)).
		op(1, codec.CmdLock, "a", grantLine("ok", 20, 5), 0, 2*ms, lease(5)).
		op(2, codec.CmdWait, "b", grantLine("ok", 15, 5), 3*ms, 4*ms, timeout(1))
	require.Empty(t, chaos.Check(&twoPhase.h))
}

// TestCheckExclusionOtherConnRenewal: a renewal sent on another connection
// than the holder's may have been handled after the holder's own, so it
// can only shorten the certain end.
func TestCheckExclusionOtherConnRenewal(t *testing.T) {
	base := func() *hist {
		return newHist().
			op(1, codec.CmdLock, "k", grantLine("ok", 10, 1), 0, 1*ms, lease(1)).
			op(1, codec.CmdRenew, "k", "ok 1", 400*ms, 401*ms, token(10), lease(1))
	}
	own := base().op(2, codec.CmdLock, "k", grantLine("ok", 11, 1), 1*ms, 1200*ms, lease(1), timeout(2))
	require.Len(t, checks(chaos.Check(&own.h), "exclusion"), 1, "own renewal not counted")
	other := base().
		op(3, codec.CmdRenew, "k", "ok 1", 100*ms, 101*ms, token(10), lease(1)).
		op(2, codec.CmdLock, "k", grantLine("ok", 11, 1), 1*ms, 1200*ms, lease(1), timeout(2))
	require.Empty(t, chaos.Check(&other.h), "another connection's renewal may have been last")
}

func TestCheckFIFO(t *testing.T) {
	// Conn 1 holds k; conn 2 enqueues (queued at 2ms); conn 3 asks at
	// 5ms. Conn 2 must be granted first.
	base := func() *hist {
		return newHist().
			op(1, codec.CmdLock, "k", grantLine("ok", 10, 5), 0, 1*ms, lease(5)).
			op(2, codec.CmdEnqueue, "k", "queued", 1*ms, 2*ms, lease(5)).
			op(3, codec.CmdLock, "k", "", 5*ms, 0, timeout(2), lease(5)).
			op(1, codec.CmdRelease, "k", "ok", 10*ms, 11*ms, token(10))
	}
	good := base().
		op(2, codec.CmdWait, "k", grantLine("ok", 11, 5), 3*ms, 12*ms, timeout(2)).
		op(2, codec.CmdRelease, "k", "ok", 13*ms, 14*ms, token(11))
	good.h.Ops[2].Status, good.h.Ops[2].Return = chaos.Replied, 15*ms
	require.True(t, codec.ParseReply([]byte(grantLine("ok", 12, 5)), &good.h.Ops[2].Reply))
	require.Empty(t, chaos.Check(&good.h))

	// The out-of-order grant: conn 3 (fence 11) before the queued conn 2
	// (fence 12).
	bad := base().
		op(2, codec.CmdWait, "k", grantLine("ok", 12, 5), 3*ms, 16*ms, timeout(2))
	bad.h.Ops[2].Status, bad.h.Ops[2].Return = chaos.Replied, 12*ms
	require.True(t, codec.ParseReply([]byte(grantLine("ok", 11, 5)), &bad.h.Ops[2].Reply))
	bad.h.Conns[3] = chaos.ConnEnd{At: 13 * ms, ByClient: true}
	vs := checks(chaos.Check(&bad.h), "fifo")
	require.Len(t, vs, 1, "out-of-order grant not caught")

	// A second e of the queued waiter (error_already_enqueued) does not
	// move its place: conn 3 enqueued before conn 2 and repeated e after
	// conn 2's queued reply; conn 3 granted first is right.
	again := newHist().
		op(1, codec.CmdLock, "k", grantLine("ok", 10, 5), 0, 1*ms, lease(5)).
		op(3, codec.CmdEnqueue, "k", "queued", 1*ms, 2*ms, lease(5)).
		op(2, codec.CmdEnqueue, "k", "queued", 3*ms, 4*ms, lease(5)).
		op(3, codec.CmdEnqueue, "k", "error_already_enqueued", 5*ms, 6*ms, lease(5)).
		op(1, codec.CmdRelease, "k", "ok", 10*ms, 11*ms, token(10)).
		op(3, codec.CmdWait, "k", grantLine("ok", 11, 5), 7*ms, 12*ms, timeout(2)).
		op(3, codec.CmdRelease, "k", "ok", 13*ms, 14*ms, token(11)).
		op(2, codec.CmdWait, "k", grantLine("ok", 12, 5), 5*ms, 15*ms, timeout(2))
	require.Empty(t, chaos.Check(&again.h))

	// A waiter that left (its w timed out) is not owed anything.
	left := base().
		op(2, codec.CmdWait, "k", "timeout", 3*ms, 1003*ms, timeout(1))
	left.h.Ops[2].Status, left.h.Ops[2].Return = chaos.Replied, 1004*ms
	require.True(t, codec.ParseReply([]byte(grantLine("ok", 11, 5)), &left.h.Ops[2].Reply))
	require.Empty(t, chaos.Check(&left.h))
}

func TestCheckReplies(t *testing.T) {
	good := newHist().
		op(1, codec.CmdPing, "_", "ok", 0, 1*ms).
		op(1, codec.CmdLock, "k", "timeout", 1*ms, 1002*ms, timeout(1)).
		op(1, codec.CmdEnqueue, "k", "", 2000*ms, 0) // abandoned: we closed first
	good.h.Ops = append(good.h.Ops, chaos.Op{ID: 3, Conn: 1, Kind: chaos.KindGarbage, Invoke: 1, Return: 2, Status: chaos.Replied, Reply: codec.Reply{Code: codec.CodeError}})
	require.Empty(t, chaos.Check(&good.h))
	wGood := newHist().
		op(1, codec.CmdEnqueue, "k", "queued", 0, 1*ms, lease(5)).
		op(1, codec.CmdEnqueue, "k", "error_already_enqueued", 2*ms, 3*ms, lease(1)).
		op(1, codec.CmdWait, "k", grantLine("ok", 3, 5), 4*ms, 5*ms, timeout(1)).
		op(1, codec.CmdSemEnqueue, "s", "queued", 6*ms, 7*ms, limit(2)).
		op(1, codec.CmdSemWait, "s", grantLine("ok", 4, 33), 8*ms, 9*ms, timeout(1))
	require.Empty(t, chaos.Check(&wGood.h))

	cases := map[string]*hist{
		"missing reply":      newHist().op(1, codec.CmdPing, "_", "ok", 0, 1*ms, status(chaos.Missing)),
		"not a reply":        newHist().op(1, codec.CmdPing, "_", "okay", 0, 1*ms),
		"wrong shape":        newHist().op(1, codec.CmdPing, "_", grantLine("ok", 3, 3), 0, 1*ms),
		"wrong command":      newHist().op(1, codec.CmdRelease, "k", "queued", 0, 1*ms),
		"wrong lease":        newHist().op(1, codec.CmdLock, "k", grantLine("ok", 3, 7), 0, 1*ms, lease(5)),
		"default lease":      newHist().op(1, codec.CmdLock, "k", grantLine("ok", 3, 7), 0, 1*ms),
		"early timeout":      newHist().op(1, codec.CmdLock, "k", "timeout", 0, 900*ms, timeout(1)),
		"renew without ttl":  newHist().op(1, codec.CmdRenew, "k", "ok", 0, 1*ms, token(3)),
		"draining":           newHist().op(1, codec.CmdLock, "k", "error_draining", 0, 1*ms),
		"no recorded status": newHist().op(1, codec.CmdPing, "_", "ok", 0, 1*ms, status(chaos.Pending)),
		"w lease not e's": newHist().
			op(1, codec.CmdEnqueue, "k", "queued", 0, 1*ms, lease(5)).
			op(1, codec.CmdWait, "k", grantLine("ok", 3, 7), 2*ms, 3*ms, timeout(1)),
		"sw lease not default": newHist().
			op(1, codec.CmdSemEnqueue, "s", "queued", 0, 1*ms, limit(2)).
			op(1, codec.CmdSemWait, "s", grantLine("ok", 3, 5), 2*ms, 3*ms, timeout(1)),
	}
	for name, b := range cases {
		require.Len(t, checks(chaos.Check(&b.h), "replies"), 1, name)
	}
}

// TestCheckCatchesMutatedRealHistory runs the workload briefly, then
// breaks its history the way a buggy server would show up — a release
// moved after the next holder's grant, a reply removed — and requires the
// checkers to notice.
func TestCheckCatchesMutatedRealHistory(t *testing.T) {
	srv := reactortest.Start(t, func(c *reactortest.Config) { c.Server.Logger = quietLogger(t) })
	h, _, err := chaos.Run(context.Background(), chaos.Config{Addr: srv.Addr, Seed: 7, Clients: 16, Ops: 4000, Locks: 2, SemLimits: []int64{2}})
	require.NoError(t, err)
	require.Empty(t, chaos.Check(h))

	// Find a lock release followed by another grant of the key.
	grants := map[string][]int{}
	for i := range h.Ops {
		o := &h.Ops[i]
		if o.Status == chaos.Replied && o.Reply.HasToken && o.Cmd == codec.CmdLock {
			grants[o.Key] = append(grants[o.Key], i)
		}
	}
	candidates, caught := 0, 0
	for i := range h.Ops {
		r := &h.Ops[i]
		if r.Cmd != codec.CmdRelease || r.Status != chaos.Replied || r.Reply.Code != codec.CodeOK {
			continue
		}
		// The next grant of the key by fence.
		var next *chaos.Op
		for _, g := range grants[r.Key] {
			if f := h.Ops[g].Reply.Token.Fence; f > r.Token.Fence && (next == nil || f < next.Reply.Token.Fence) {
				next = &h.Ops[g]
			}
		}
		if next == nil || next.Return-r.Invoke > 300*ms {
			continue
		}
		// Pretend the release was sent only after the next grant's reply:
		// the holder's lease (>= 1 s from its send) still covers it.
		m := *h
		m.Ops = slices.Clone(h.Ops)
		m.Conns = maps.Clone(h.Conns)
		mr := &m.Ops[i]
		mr.Invoke, mr.Return = next.Return+ms, next.Return+2*ms
		if ce, ok := m.Conns[mr.Conn]; ok && ce.At < mr.Invoke {
			m.Conns[mr.Conn] = chaos.ConnEnd{At: mr.Invoke + ms, ByClient: true}
		}
		candidates++
		if len(checks(chaos.Check(&m), "exclusion")) > 0 {
			caught++
		}
		if candidates == 50 {
			break
		}
	}
	t.Logf("moved releases caught: %d of %d", caught, candidates)
	require.NotZero(t, candidates, "no release followed by a grant in the history")
	require.GreaterOrEqual(t, caught*2, candidates, "moved releases not caught")

	// FIFO: a queued two-phase waiter A later granted by its w, and a
	// request B of the same key sent after A's queued reply and granted
	// after A. Give B a fence below A's (as if B had jumped the queue).
	fifoCandidates, fifoCaught := 0, 0
	for i := range h.Ops {
		e := &h.Ops[i]
		if e.Cmd != codec.CmdEnqueue || e.Status != chaos.Replied || e.Reply.Code != codec.CodeQueued {
			continue
		}
		var w *chaos.Op
		for j := i + 1; j < len(h.Ops) && h.Ops[j].Conn == e.Conn; j++ {
			if h.Ops[j].Cmd == codec.CmdWait && h.Ops[j].Key == e.Key {
				w = &h.Ops[j]
				break
			}
		}
		if w == nil || w.Status != chaos.Replied || !w.Reply.HasToken {
			continue
		}
		for j := range h.Ops {
			b := &h.Ops[j]
			if b.Cmd != codec.CmdLock || b.Key != e.Key || !b.Reply.HasToken || b.Invoke <= e.Return || b.Reply.Token.Fence <= w.Reply.Token.Fence {
				continue
			}
			m := *h
			m.Ops = slices.Clone(h.Ops)
			m.Ops[j].Reply.Token.Fence = w.Reply.Token.Fence - 1
			fifoCandidates++
			if len(checks(chaos.Check(&m), "fifo")) > 0 {
				fifoCaught++
			}
			break
		}
		if fifoCandidates == 20 {
			break
		}
	}
	t.Logf("queue jumps caught: %d of %d", fifoCaught, fifoCandidates)
	require.NotZero(t, fifoCandidates, "no queued waiter followed by another grant in the history")
	require.Equal(t, fifoCandidates, fifoCaught, "queue jumps not caught")

	// Fences against real time: give a grant b a fence below that of a
	// grant a (any key) whose reply arrived before b was sent.
	rtCandidates, rtCaught := 0, 0
	byReturn := slices.Clone(h.Ops)
	slices.SortFunc(byReturn, func(a, b chaos.Op) int { return cmp.Compare(a.Return, b.Return) })
	for i := range h.Ops {
		b := &h.Ops[i]
		if b.Status != chaos.Replied || !b.Reply.HasToken || (b.Cmd != codec.CmdLock && b.Cmd != codec.CmdSemLock) {
			continue
		}
		var prev *chaos.Op // a grant with a smaller fence, replied before b was sent
		for j := range byReturn {
			a := &byReturn[j]
			if a.Return >= b.Invoke {
				break
			}
			if a.Status == chaos.Replied && a.Reply.HasToken && a.Reply.Token.Fence < b.Reply.Token.Fence && a.Reply.Token.Fence > 1 {
				prev = a
			}
		}
		if prev == nil {
			continue
		}
		m := *h
		m.Ops = slices.Clone(h.Ops)
		m.Ops[i].Reply.Token.Fence = prev.Reply.Token.Fence - 1
		rtCandidates++
		for _, v := range checks(chaos.Check(&m), "exclusion") {
			if slices.Contains(v.Ops, b.ID) && strings.Contains(v.Msg, "real time") {
				rtCaught++
				break
			}
		}
		if rtCandidates == 20 {
			break
		}
	}
	t.Logf("fences against real time caught: %d of %d", rtCaught, rtCandidates)
	require.NotZero(t, rtCandidates, "no grant sent after another grant's reply")
	require.Equal(t, rtCandidates, rtCaught, "fences against real time not caught")

	// Every semaphore key was created with its limit before the workers
	// could send a mismatching one.
	first := map[string]*chaos.Op{}
	for i := range h.Ops {
		o := &h.Ops[i]
		if o.Cmd == codec.CmdSemLock || o.Cmd == codec.CmdSemEnqueue {
			if f := first[o.Key]; f == nil || o.Invoke < f.Invoke {
				first[o.Key] = o
			}
		}
	}
	for k, l := range h.Limits {
		require.NotNil(t, first[k], "semaphore %s never asked for", k)
		require.Equal(t, l, first[k].Limit, "semaphore %s first asked for with limit %d", k, first[k].Limit)
		require.Equal(t, codec.CodeOK, first[k].Reply.Code, "semaphore %s not created", k)
	}

	h.Ops[len(h.Ops)/2].Status = chaos.Missing
	require.NotEmpty(t, checks(chaos.Check(h), "replies"), "missing reply not caught")
}
