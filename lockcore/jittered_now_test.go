package lockcore

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/lockreactor/dflockd/codec"
)

// Requests carry a now that lags the driver's (a session reads
// the clock before it takes the shard lock, the driver advances in
// between), as in the real server. No model: properties only.
//   - every parked request completes at most once, never after being
//     answered at once, and an owner is never left with a parked request
//     the core forgot (it completes, or CloseOwner/CancelParked drop it);
//   - no grant's lease ends before the request that got it was made plus
//     its lease (a handoff: the waiter's request);
//   - invariants (non-monotonic variant) after every step;
//   - after closing everyone and a long advance: nothing held, queued or
//     timed, counters add up (grants = releases + expiries + disconnects).

type r21jReq struct {
	o      *r21jOwner
	ns     Namespace
	name   string
	at     int64 // the request's now
	lease  int64
	calls  int
	result Result
	dead   bool // dropped by close/cancel
}

func (r *r21jReq) Complete(res Result) {
	r.calls++
	r.result = res
	if r.calls > 1 {
		panic("completed twice")
	}
	if r.dead {
		panic("completed after being dropped")
	}
	if res.Code == codec.CodeOK {
		r.o.h.onGrant(r.ns, r.name, res, r.at, r.lease)
	}
	r.o.parked = nil
}

type r21jOwner struct {
	h      *r21jRun
	o      *Owner
	parked *r21jReq
}

type r21jRun struct {
	t        *testing.T
	tbl      *Table
	base     int64
	releases [2]uint64
	err      string
}

func (h *r21jRun) onGrant(ns Namespace, name string, res Result, at, lease int64) {
	k := h.tbl.findKey(ns, name)
	if k == nil {
		h.err = "granted key missing"
		return
	}
	for n := k.holders.head; n != nil; n = n.knext {
		if n.token == res.Token {
			if n.expires < at+lease*sec {
				h.err = fmt.Sprintf("%v %q: lease ends at %d, request at %d with lease %d", ns, name, n.expires, at, lease)
			}
			return
		}
	}
	h.err = "granted token not among holders"
}

func TestJitteredNow(t *testing.T) {
	for seed := range uint64(40) {
		r := rand.New(rand.NewPCG(seed, 2121))
		tick := []int64{1 * msec, 10 * msec}[r.IntN(2)]
		h := &r21jRun{t: t}
		h.base = 1000 * sec
		cfg := Config{Shards: 2, Tick: durationOf(tick), DefaultLease: 2, AutoRelease: r.IntN(2) == 0,
			MaxWaiters: int64(r.IntN(3)), MaxLocks: []int64{0, 3}[r.IntN(2)]}
		h.tbl = fakeTable(cfg, &h.base)
		owners := make([]*r21jOwner, 5)
		for i := range owners {
			owners[i] = &r21jOwner{h: h, o: NewOwner(uint64(i + 1))}
		}
		type tokOf struct {
			ns   Namespace
			name string
			tok  codec.Token
		}
		var toks []tokOf
		names := []string{"a", "b"}
		limits := map[string]int64{"a": 1, "b": 2}
		for step := range 600 {
			h.base += []int64{0, tick / 2, tick, 3 * tick, 200 * msec, sec}[r.IntN(6)]
			now := h.base - r.Int64N(4*tick) // the request's (stale) reading
			o := owners[r.IntN(len(owners))]
			ns := Namespace(r.IntN(2))
			name := names[r.IntN(2)]
			limit := int64(1)
			if ns == Semaphores {
				limit = limits[name]
			}
			lease := 1 + r.Int64N(2)
			switch x := r.IntN(100); {
			case x < 25 && o.parked == nil:
				req := &r21jReq{o: o, ns: ns, name: name, at: now, lease: lease}
				res := h.tbl.Acquire(o.o, ns, []byte(name), r.Int64N(3), limit, lease, req, now)
				if res.Parked {
					o.parked = req
				} else if res.Code == codec.CodeOK {
					h.onGrant(ns, name, res, now, lease)
					toks = append(toks, tokOf{ns, name, res.Token})
				}
			case x < 38 && o.parked == nil:
				res := h.tbl.Enqueue(o.o, ns, []byte(name), limit, lease, now)
				if res.Code == codec.CodeAcquired {
					h.onGrant(ns, name, res, now, lease)
					toks = append(toks, tokOf{ns, name, res.Token})
				}
			case x < 50 && o.parked == nil:
				req := &r21jReq{o: o, ns: ns, name: name, at: now}
				res := h.tbl.Wait(o.o, ns, []byte(name), r.Int64N(3), req, now)
				if res.Parked {
					o.parked = req
					// the lease a grant will get is the entry's: look it up
					if k := h.tbl.findKey(ns, name); k != nil {
						for n := k.waiters.head; n != nil; n = n.knext {
							if n.cont == Continuation(req) {
								req.lease = n.lease
							}
						}
					}
				} else if res.Code == codec.CodeOK {
					h.onGrant(ns, name, res, now, res.Lease)
					toks = append(toks, tokOf{ns, name, res.Token})
				}
			case x < 65 && len(toks) > 0:
				i := r.IntN(len(toks))
				tk := toks[i]
				toks = append(toks[:i], toks[i+1:]...)
				if h.tbl.Release(tk.ns, []byte(tk.name), tk.tok, now) == codec.CodeOK {
					h.releases[tk.ns]++
				}
			case x < 70 && len(toks) > 0:
				tk := toks[r.IntN(len(toks))]
				h.tbl.Renew(tk.ns, []byte(tk.name), tk.tok, lease, now)
			case x < 74:
				if o.parked != nil {
					o.parked.dead = true
				}
				o.parked = nil
				h.tbl.CloseOwner(o.o, now)
			case x < 77:
				p := o.parked
				if h.tbl.CancelParked(o.o, now) {
					if p == nil {
						t.Fatalf("seed %d step %d: CancelParked found a request the owner does not have", seed, step)
					}
					p.dead = true
					o.parked = nil
				}
			case x < 79:
				h.tbl.GC(h.base)
			default:
				h.tbl.Advance(h.base)
			}
			if h.err != "" {
				t.Fatalf("seed %d step %d: %s\nstate %s", seed, step, h.err, h.tbl.dump())
			}
			if err := h.tbl.checkInvariants(false); err != nil {
				t.Fatalf("seed %d step %d: %v\nstate %s", seed, step, err, h.tbl.dump())
			}
			for _, ow := range owners {
				if ow.parked != nil && ow.parked.calls == 0 {
					found := false
					for _, k := range []*key{h.tbl.findKey(ow.parked.ns, ow.parked.name)} {
						if k == nil {
							continue
						}
						for n := k.waiters.head; n != nil; n = n.knext {
							if n.cont == Continuation(ow.parked) {
								found = true
							}
						}
					}
					if !found {
						t.Fatalf("seed %d step %d: owner %d's parked request is in no queue", seed, step, ow.o.ID())
					}
				}
			}
		}
		for _, ow := range owners {
			if ow.parked != nil {
				ow.parked.dead = true
			}
			h.tbl.CloseOwner(ow.o, h.base)
		}
		h.base += 1000 * sec
		h.tbl.Advance(h.base)
		c := h.tbl.Counters()
		if c.Held != [2]int64{} || c.Waiting != [2]int64{} || c.Timers != 0 {
			t.Fatalf("seed %d: left after close+advance: %+v\n%s", seed, c, h.tbl.dump())
		}
		for ns := range 2 {
			if c.Grants[ns] != h.releases[ns]+c.Expiries[ns]+c.DisconnectReleases[ns] {
				t.Fatalf("seed %d ns %d: grants %d != releases %d + expiries %d + disconnects %d", seed, ns,
					c.Grants[ns], h.releases[ns], c.Expiries[ns], c.DisconnectReleases[ns])
			}
		}
		h.base += 100 * sec
		h.tbl.GC(h.base)
		if h.tbl.Keys() != 0 {
			t.Fatalf("seed %d: %d keys left after GC: %s", seed, h.tbl.Keys(), h.tbl.dump())
		}
	}
}
