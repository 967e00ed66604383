package chaos

import (
	"fmt"
	"math"
	"slices"
	"sort"

	"github.com/lockreactor/dflockd/codec"
)

// Check runs every history checker and returns their violations, the
// recorder's own first.
func Check(h *History) []Violation {
	var vs []Violation
	vs = append(vs, h.Recorded...)
	vs = append(vs, CheckReplies(h)...)
	vs = append(vs, CheckExclusion(h)...)
	vs = append(vs, CheckFIFO(h)...)
	return vs
}

const never = int64(math.MaxInt64)

func secs(s int64) int64 { return s * 1_000_000_000 }

// resource names a key in its namespace: a lock "k" and a semaphore "k"
// are different resources.
func resource(cmd codec.Command, key string) string {
	if cmd.IsSemaphore() {
		return "s/" + key
	}
	return "l/" + key
}

// collects maps each w/sw op (by index into h.Ops) to the e/se op it
// collects: the last e/se of its connection and resource that joined the
// queue (queued or acquired; an e with no reply may have joined) with no
// w/sw in between. A second e answering error_already_enqueued changes
// nothing; any w/sw, whatever its reply, ends the two-phase state.
func (h *History) collects() map[int]int {
	out := map[int]int{}
	pendingE := map[string]int{}
	for i := range h.Ops {
		o := &h.Ops[i]
		if o.Kind != KindRequest {
			continue
		}
		ck := fmt.Sprint(o.Conn, "/", resource(o.Cmd, o.Key))
		switch o.Cmd {
		case codec.CmdEnqueue, codec.CmdSemEnqueue:
			if o.Status != Replied || o.Reply.Code == codec.CodeQueued || o.Reply.Code == codec.CodeAcquired {
				pendingE[ck] = i
			}
		case codec.CmdWait, codec.CmdSemWait:
			if e, ok := pendingE[ck]; ok {
				out[i] = e
				delete(pendingE, ck)
			}
		}
	}
	return out
}

// isAcquire: commands whose ok/acquired reply carries a grant.
func isAcquire(c codec.Command) bool {
	switch c {
	case codec.CmdLock, codec.CmdSemLock, codec.CmdEnqueue, codec.CmdSemEnqueue, codec.CmdWait, codec.CmdSemWait:
		return true
	}
	return false
}

func isGrant(o *Op) bool {
	return o.Kind == KindRequest && o.Status == Replied && isAcquire(o.Cmd) && o.Reply.HasToken &&
		(o.Reply.Code == codec.CodeOK || o.Reply.Code == codec.CodeAcquired)
}

// ---- exactly once, reply shapes ----

// shape is what a reply may look like for one command.
type shape uint8

const (
	bare  shape = iota // status word only
	grant              // status token lease
	lease              // ok lease
	body               // ok {json}
)

// allowed lists, per command, every reply status the protocol allows and
// the shape that goes with it (PROTOCOL.md "Commands"). error_draining is
// absent: the chaos runs never drain.
var allowed = map[codec.Command]map[codec.Code]shape{
	codec.CmdLock:       {codec.CodeOK: grant, codec.CodeTimeout: bare, codec.CodeErrorMaxLocks: bare, codec.CodeErrorMaxWaiters: bare},
	codec.CmdSemLock:    {codec.CodeOK: grant, codec.CodeTimeout: bare, codec.CodeErrorMaxLocks: bare, codec.CodeErrorMaxWaiters: bare, codec.CodeErrorLimitMismatch: bare},
	codec.CmdRelease:    {codec.CodeOK: bare, codec.CodeError: bare},
	codec.CmdSemRelease: {codec.CodeOK: bare, codec.CodeError: bare},
	codec.CmdRenew:      {codec.CodeOK: lease, codec.CodeError: bare},
	codec.CmdSemRenew:   {codec.CodeOK: lease, codec.CodeError: bare},
	codec.CmdEnqueue: {codec.CodeAcquired: grant, codec.CodeQueued: bare, codec.CodeErrorAlreadyEnqueued: bare,
		codec.CodeErrorMaxLocks: bare, codec.CodeErrorMaxWaiters: bare},
	codec.CmdSemEnqueue: {codec.CodeAcquired: grant, codec.CodeQueued: bare, codec.CodeErrorAlreadyEnqueued: bare,
		codec.CodeErrorMaxLocks: bare, codec.CodeErrorMaxWaiters: bare, codec.CodeErrorLimitMismatch: bare},
	codec.CmdWait:    {codec.CodeOK: grant, codec.CodeTimeout: bare, codec.CodeErrorNotEnqueued: bare, codec.CodeErrorLeaseExpired: bare},
	codec.CmdSemWait: {codec.CodeOK: grant, codec.CodeTimeout: bare, codec.CodeErrorNotEnqueued: bare, codec.CodeErrorLeaseExpired: bare},
	codec.CmdPing:    {codec.CodeOK: bare},
	codec.CmdStats:   {codec.CodeOK: body},
}

func shapeOf(r *codec.Reply) shape {
	switch {
	case r.HasToken:
		return grant
	case r.HasLease:
		return lease
	case r.Body != nil:
		return body
	}
	return bare
}

// CheckReplies checks that every request got exactly one reply of a shape
// the protocol allows for its command:
//   - every op is Replied, or Abandoned (the client closed the connection
//     first); Missing or Pending is a violation;
//   - the reply parses (codec.ParseReply) and its status and shape are
//     allowed for the command; garbage and over-long lines answer error;
//   - grants and renewals carry the lease asked for (or the default); a
//     w/sw grant the lease of the e/se it collects;
//   - a timeout reply to a request with timeout T>0 arrives no earlier
//     than T after the request was sent (timers never fire early).
//
// Extra reply lines (a reply with no request) surface either as a reply
// of the wrong shape for the request it was matched with or as a
// recorder violation (bytes after the last reply); a reply shifted onto
// the next request of the same shape is not seen.
func CheckReplies(h *History) []Violation {
	var vs []Violation
	bad := func(o *Op, format string, args ...any) {
		vs = append(vs, Violation{Check: "replies", Msg: fmt.Sprintf(format, args...), Ops: []int{o.ID}})
	}
	collects := h.collects()
	for i := range h.Ops {
		o := &h.Ops[i]
		switch o.Status {
		case Abandoned:
			continue
		case Missing:
			bad(o, "request got no reply")
			continue
		case Pending:
			bad(o, "request has no recorded outcome")
			continue
		}
		if o.Raw != "" {
			bad(o, "reply %q is not a line the protocol sends", o.Raw)
			continue
		}
		r := &o.Reply
		if o.Kind != KindRequest {
			if r.Code != codec.CodeError || shapeOf(r) != bare {
				bad(o, "malformed request not answered error")
			}
			continue
		}
		want, ok := allowed[o.Cmd][r.Code]
		if !ok || want != shapeOf(r) {
			bad(o, "reply not allowed for %s", o.Cmd)
			continue
		}
		wantLease := o.Lease
		if wantLease == 0 {
			wantLease = h.DefaultLease
		}
		switch o.Cmd {
		case codec.CmdLock, codec.CmdSemLock, codec.CmdEnqueue, codec.CmdSemEnqueue, codec.CmdRenew, codec.CmdSemRenew:
			if r.HasLease && r.Lease != wantLease {
				bad(o, "lease %d, asked for %d", r.Lease, wantLease)
			}
		case codec.CmdWait, codec.CmdSemWait:
			// A w/sw grant carries the lease its e/se asked for.
			if e, ok := collects[i]; ok && r.HasLease {
				want := h.Ops[e].Lease
				if want == 0 {
					want = h.DefaultLease
				}
				if r.Lease != want {
					vs = append(vs, Violation{Check: "replies", Ops: []int{o.ID, h.Ops[e].ID},
						Msg: fmt.Sprintf("%s granted lease %d, its %s asked for %d", o.Cmd, r.Lease, h.Ops[e].Cmd, want)})
				}
			}
		}
		if r.Code == codec.CodeTimeout && o.Timeout > 0 && o.Return-o.Invoke < secs(o.Timeout) {
			bad(o, "timeout after %.3fs, before the %ds asked", float64(o.Return-o.Invoke)/1e9, o.Timeout)
		}
	}
	return vs
}

// ---- mutual exclusion and semaphore limits ----

// hold is one grant (one token) with the certain part of its life.
type hold struct {
	res   string
	token codec.Token
	conn  int32
	op    int // the first reply that carried the token
	// limit is the limit the granting request asked for (1 for a lock; for
	// a sw, that of the se it collects): the server granted under it.
	limit int64
	// sentLo: the grant happened after then (the send time of the request
	// that made it: the l/sl/e/se, or the e/se a w/sw collects).
	sentLo int64
	// startHi: the hold had begun by then (its first grant reply arrived).
	startHi int64
	// endLo: the hold lasted at least until then (see holds).
	endLo int64
}

type leaseEvent struct {
	at    int64 // send time of the request that set the lease
	lease int64 // seconds
	known bool  // the request answered ok; false: outcome unknown (no reply)
}

// holds collects every token granted in h with the bounds of its life.
//
// A hold ends by a release, a lease expiry, or (auto-release) its
// connection closing; nothing else ends it. So its end is no earlier than
// the least of:
//   - the send time of the first release of its token (whatever the reply:
//     an error reply means it had ended even earlier, by another cause,
//     which is bounded below by the other terms);
//   - the connection's end (ConnEnd.At);
//   - the lease end: a lease is set by the grant, by a w/sw answering ok
//     (the lease restarts) and by each successful renewal, each at a moment
//     no earlier than the send time of its request, for the lease it
//     reports. The last successful one on the holder's connection
//     (requests of one connection are handled in send order) bounds the
//     expiry below by send + lease. A renewal with no reply may have been
//     handled and shortened the lease, so each one after the last known one
//     bounds the end by its own send time + its lease; so does every
//     renewal sent on another connection (its order against the holder's
//     requests is unknown, so it may have been the last).
//
// The hold has begun by the time the first reply carrying its token
// arrived (startHi), and after the request that made it was sent (sentLo).
func (h *History) holds() map[string][]*hold {
	byTok := map[codec.Token]*hold{}
	events := map[codec.Token][]leaseEvent{}
	conns := map[codec.Token][]int32{} // connection of each event, parallel to events
	release := map[codec.Token]int64{}
	collects := h.collects()
	for i := range h.Ops {
		o := &h.Ops[i]
		if o.Kind != KindRequest {
			continue
		}
		switch o.Cmd {
		case codec.CmdRelease, codec.CmdSemRelease:
			if at, ok := release[o.Token]; !ok || o.Invoke < at {
				release[o.Token] = o.Invoke
			}
		case codec.CmdRenew, codec.CmdSemRenew:
			switch {
			case o.Status == Replied && o.Reply.Code == codec.CodeOK && o.Reply.HasLease:
				events[o.Token] = append(events[o.Token], leaseEvent{at: o.Invoke, lease: o.Reply.Lease, known: true})
				conns[o.Token] = append(conns[o.Token], o.Conn)
			case o.Status != Replied:
				l := o.Lease
				if l == 0 {
					l = h.DefaultLease
				}
				events[o.Token] = append(events[o.Token], leaseEvent{at: o.Invoke, lease: l})
				conns[o.Token] = append(conns[o.Token], o.Conn)
			}
		}
		if !isGrant(o) {
			continue
		}
		tok := o.Reply.Token
		events[tok] = append(events[tok], leaseEvent{at: o.Invoke, lease: o.Reply.Lease, known: true})
		conns[tok] = append(conns[tok], o.Conn)
		limit, sent := int64(1), o.Invoke
		switch o.Cmd {
		case codec.CmdSemLock, codec.CmdSemEnqueue:
			limit = o.Limit
		case codec.CmdWait, codec.CmdSemWait:
			e, ok := collects[i]
			if !ok {
				// Granted with nothing to collect: the reply checker
				// flags it; judge it as the lock or its key's limit.
				sent = 0
				if l, ok := h.Limits[o.Key]; ok && o.Cmd == codec.CmdSemWait {
					limit = l
				}
				break
			}
			sent = h.Ops[e].Invoke
			if o.Cmd == codec.CmdSemWait {
				limit = h.Ops[e].Limit
			}
		}
		if hd := byTok[tok]; hd != nil {
			hd.startHi = min(hd.startHi, o.Return)
			hd.sentLo = min(hd.sentLo, sent)
			continue
		}
		byTok[tok] = &hold{res: resource(o.Cmd, o.Key), token: tok, conn: o.Conn, op: o.ID, limit: limit, sentLo: sent, startHi: o.Return}
	}
	out := map[string][]*hold{}
	for tok, hd := range byTok {
		end := never
		if at, ok := release[tok]; ok {
			end = min(end, at)
		}
		if ce, ok := h.Conns[hd.conn]; ok {
			end = min(end, ce.At)
		}
		var own []leaseEvent
		for i, e := range events[tok] {
			if conns[tok][i] == hd.conn {
				own = append(own, e)
			} else {
				// Another connection's renewal: it may have been handled
				// last, whenever it was sent.
				end = min(end, e.at+secs(e.lease))
			}
		}
		sort.SliceStable(own, func(i, j int) bool { return own[i].at < own[j].at })
		last := -1
		for i, e := range own {
			if e.known {
				last = i
			}
		}
		if last >= 0 {
			leaseEnd := own[last].at + secs(own[last].lease)
			for _, e := range own[last+1:] {
				leaseEnd = min(leaseEnd, e.at+secs(e.lease))
			}
			end = min(end, leaseEnd)
		}
		hd.endLo = end
		out[hd.res] = append(out[hd.res], hd)
	}
	for _, hs := range out {
		sort.Slice(hs, func(i, j int) bool { return hs[i].token.Fence < hs[j].token.Fence })
	}
	return out
}

// CheckExclusion flags grants of one key whose holds must have overlapped
// beyond the key's limit (1 for a lock), whatever the network delay.
//
// Fences are server-wide and strictly increasing with every grant, so
// ordering a key's grants by fence orders them by the server's grant time.
// For a grant g, every grant e with a smaller fence was granted before g,
// and is certainly still held when g is granted if its certain end (endLo)
// is after g's reply arrived (startHi, the latest g can have been
// granted). g was granted under the limit its own request asked for (a sw:
// the limit of its se; a semaphore's limit is fixed while the key exists);
// if that many such earlier grants are certainly held at g's grant, g made
// limit+1 holders: a violation. So is a grant certainly made while a hold
// granted under another limit was held (the key cannot have been dropped
// and recreated in between). The check also flags two tokens with the
// same fence.
//
// Fences also follow real time, server-wide: if grant a's reply arrived
// before the request that made grant b was sent, a was granted first and
// must have the smaller fence.
//
// Blind spots: holds whose grant reply the client never read (abandoned
// requests, a w never sent after queued) are invisible; overlaps shorter
// than the network and scheduling delay around them cannot be proven.
func CheckExclusion(h *History) []Violation {
	var vs []Violation
	all := h.holds()
	keys := make([]string, 0, len(all))
	for k := range all {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var every []*hold
	for _, res := range keys {
		hs := all[res]
		every = append(every, hs...)
		// sufMin[j]: the earliest startHi among grants j.. (by fence). An
		// earlier grant whose endLo is at or before it can never be counted
		// again, so it leaves the live set.
		sufMin := make([]int64, len(hs)+1)
		sufMin[len(hs)] = never
		for j := len(hs) - 1; j >= 0; j-- {
			sufMin[j] = min(sufMin[j+1], hs[j].startHi)
		}
		var live []*hold
		for j, g := range hs {
			if j > 0 && hs[j-1].token.Fence == g.token.Fence {
				vs = append(vs, Violation{Check: "exclusion", Ops: []int{hs[j-1].op, g.op},
					Msg: fmt.Sprintf("%s: two tokens share fence %d", res, g.token.Fence)})
			}
			kept := live[:0]
			for _, e := range live {
				if e.endLo > sufMin[j] {
					kept = append(kept, e)
				}
			}
			live = kept
			var over []*hold
			for _, e := range live {
				if e.endLo > g.startHi {
					over = append(over, e)
				}
			}
			for _, e := range over {
				if e.limit != g.limit {
					vs = append(vs, Violation{Check: "exclusion", Ops: []int{g.op, e.op},
						Msg: fmt.Sprintf("%s: grant fence %d under limit %d while fence %d, granted under limit %d, was certainly held",
							res, g.token.Fence, g.limit, e.token.Fence, e.limit)})
					break
				}
			}
			if int64(len(over)) >= g.limit {
				ops := []int{g.op}
				msg := fmt.Sprintf("%s (limit %d): grant fence %d (reply at %.6fs) while %d earlier grants were certainly held:",
					res, g.limit, g.token.Fence, float64(g.startHi)/1e9, len(over))
				for _, e := range over {
					ops = append(ops, e.op)
					msg += fmt.Sprintf(" fence %d until >= %.6fs;", e.token.Fence, float64(e.endLo)/1e9)
				}
				vs = append(vs, Violation{Check: "exclusion", Msg: msg, Ops: ops})
			}
			live = append(live, g)
		}
	}
	return append(vs, checkFenceOrder(every)...)
}

// checkFenceOrder flags grants b whose fence is not above that of a grant
// a whose reply arrived before b's request was sent (server-wide: fences
// increase with every grant of any key).
func checkFenceOrder(hs []*hold) []Violation {
	byEnd := slices.Clone(hs)
	sort.Slice(byEnd, func(i, j int) bool { return byEnd[i].startHi < byEnd[j].startHi })
	bySent := slices.Clone(hs)
	sort.Slice(bySent, func(i, j int) bool { return bySent[i].sentLo < bySent[j].sentLo })
	var vs []Violation
	var best *hold // the largest fence among grants replied before b was sent
	k := 0
	for _, b := range bySent {
		for ; k < len(byEnd) && byEnd[k].startHi < b.sentLo; k++ {
			if best == nil || byEnd[k].token.Fence > best.token.Fence {
				best = byEnd[k]
			}
		}
		if best != nil && best.token.Fence >= b.token.Fence {
			vs = append(vs, Violation{Check: "exclusion", Ops: []int{best.op, b.op},
				Msg: fmt.Sprintf("fences against real time: %s fence %d replied at %.6fs, before %s fence %d was asked for at %.6fs",
					best.res, best.token.Fence, float64(best.startHi)/1e9, b.res, b.token.Fence, float64(b.sentLo)/1e9)})
		}
	}
	return vs
}

// ---- FIFO ----

// CheckFIFO checks strict FIFO per key where the history proves the queue
// order: a two-phase waiter A whose queued reply arrived before another
// request B of the same key was sent was in the queue before B arrived,
// so if both are granted, A's grant (by its w/sw ok) must have the smaller
// fence. A waiter that left (w timed out, lease expired before w, the
// connection closed) has no grant and is not judged.
//
// Blind spots: single-phase waiters (l/sl with a timeout) never say when
// they joined the queue, so their order among themselves is not checked
// (only as the later party B); nor is the order of requests sent so close
// together that neither is known to have been queued first.
func CheckFIFO(h *History) []Violation {
	type waiter struct {
		queuedAt int64
		fence    uint64
		op, wop  int
	}
	type request struct {
		sentAt int64
		fence  uint64
		op     int
	}
	queued := map[string][]waiter{}
	grants := map[string][]request{}
	pendingE := map[string]int{}
	seen := map[codec.Token]bool{}
	for i := range h.Ops {
		o := &h.Ops[i]
		if o.Kind != KindRequest {
			continue
		}
		res := resource(o.Cmd, o.Key)
		ck := fmt.Sprint(o.Conn, "/", res)
		switch o.Cmd {
		case codec.CmdEnqueue, codec.CmdSemEnqueue:
			// Only the e/se that joined the queue (queued or acquired) is
			// what a later w/sw waits on: a second e answering
			// error_already_enqueued changes nothing. An e with no reply
			// may have joined; its connection was closed anyway.
			if o.Status != Replied || o.Reply.Code == codec.CodeQueued || o.Reply.Code == codec.CodeAcquired {
				pendingE[ck] = i
			}
		}
		if !isGrant(o) {
			if o.Cmd == codec.CmdWait || o.Cmd == codec.CmdSemWait {
				delete(pendingE, ck)
			}
			continue
		}
		sent := o.Invoke
		if o.Cmd == codec.CmdWait || o.Cmd == codec.CmdSemWait {
			e, ok := pendingE[ck]
			delete(pendingE, ck)
			if !ok {
				continue
			}
			eo := &h.Ops[e]
			sent = eo.Invoke
			if eo.Status == Replied && eo.Reply.Code == codec.CodeQueued {
				queued[res] = append(queued[res], waiter{eo.Return, o.Reply.Token.Fence, e, i})
			}
		}
		if seen[o.Reply.Token] {
			continue
		}
		seen[o.Reply.Token] = true
		grants[res] = append(grants[res], request{sent, o.Reply.Token.Fence, i})
	}
	var vs []Violation
	keys := make([]string, 0, len(queued))
	for k := range queued {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, res := range keys {
		ws := queued[res]
		sort.Slice(ws, func(i, j int) bool { return ws[i].queuedAt < ws[j].queuedAt })
		// best[i]: the waiter with the largest fence among ws[:i+1].
		best := make([]int, len(ws))
		for i := range ws {
			best[i] = i
			if i > 0 && ws[best[i-1]].fence > ws[i].fence {
				best[i] = best[i-1]
			}
		}
		for _, b := range grants[res] {
			n := sort.Search(len(ws), func(i int) bool { return ws[i].queuedAt >= b.sentAt })
			if n == 0 {
				continue
			}
			a := ws[best[n-1]]
			if a.fence > b.fence {
				vs = append(vs, Violation{Check: "fifo", Ops: []int{a.op, a.wop, b.op},
					Msg: fmt.Sprintf("%s: waiter queued at %.6fs granted fence %d after a request sent at %.6fs was granted fence %d",
						res, float64(a.queuedAt)/1e9, a.fence, float64(b.sentAt)/1e9, b.fence)})
			}
		}
	}
	return vs
}
