package lockcore

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/lockreactor/dflockd/codec"
)

// A randomized workload on one shard whose two-phase index
// crosses the rebuild threshold (4096, down to a quarter of the peak) many
// times, with every reply checked against a model (e, w with timeout 0,
// release of collected grants, closes with auto-release) and the full
// invariant check plus checkTwoPhaseIndex at every rebuild and every 2000
// steps.

type r10hold struct {
	o        *r10owner
	twoPhase bool // granted by e, not collected by w
	tok      codec.Token
}

type r10key struct {
	ns      Namespace
	name    string
	limit   int64
	holders []*r10hold
	queue   []*r10owner
}

type r10owner struct {
	o  *Owner
	id uint64
}

func (k *r10key) twoPhaseOf(o *r10owner) (h *r10hold, queued int) {
	for _, x := range k.holders {
		if x.o == o && x.twoPhase {
			return x, -1
		}
	}
	for i, q := range k.queue {
		if q == o {
			return nil, i
		}
	}
	return nil, -1
}

func (k *r10key) grant() {
	for int64(len(k.holders)) < k.limit && len(k.queue) > 0 {
		o := k.queue[0]
		k.queue = k.queue[1:]
		k.holders = append(k.holders, &r10hold{o: o, twoPhase: true})
	}
}

func TestTwoPhaseIndexCrossesThreshold(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3} {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { r10run(t, seed) })
	}
}

func r10run(t *testing.T, seed uint64) {
	r := rand.New(rand.NewPCG(seed, seed^0xdeadbeef))
	now := int64(10 * sec)
	tbl := fakeTable(Config{Shards: 1, DefaultLease: 3600, MaxSemaphoreLimit: 8, AutoRelease: true}, &now)
	c := tbl.shards[0].c
	var nextID uint64
	owners := make([]*r10owner, 80)
	for i := range owners {
		nextID++
		owners[i] = &r10owner{o: NewOwner(nextID), id: nextID}
	}
	var keys []*r10key
	for i := range 60 {
		keys = append(keys, &r10key{ns: Locks, name: fmt.Sprintf("l%03d", i), limit: 1})
	}
	for i := range 30 {
		keys = append(keys, &r10key{ns: Semaphores, name: fmt.Sprintf("s%03d", i), limit: 1 + int64(i%4)})
	}
	modelLen := func() int {
		n := 0
		for _, k := range keys {
			n += len(k.queue)
			for _, h := range k.holders {
				if h.twoPhase {
					n++
				}
			}
		}
		return n
	}
	check := func(step int, why string) {
		t.Helper()
		if err := tbl.CheckInvariants(); err != nil {
			t.Fatalf("step %d (%s): %v", step, why, err)
		}
		if err := checkTwoPhaseIndex(tbl); err != nil {
			t.Fatalf("step %d (%s): %v", step, why, err)
		}
		if got, want := len(c.twoPhase), modelLen(); got != want {
			t.Fatalf("step %d (%s): index %d entries, model %d", step, why, got, want)
		}
		// Every model entry is found through the (possibly rebuilt) index.
		for _, k := range keys {
			for _, o := range owners {
				h, q := k.twoPhaseOf(o)
				got := r9entry(tbl, o.o, k.ns, k.name)
				if (h != nil || q >= 0) != (got != nil) {
					t.Fatalf("step %d (%s): owner %d key %s: model two-phase %v, index %v", step, why, o.id, k.name, h != nil || q >= 0, got != nil)
				}
			}
		}
	}
	grow := true
	hi, lo := 4200+r.IntN(2300), 1+r.IntN(1000)
	rebuilds, crossings := 0, 0
	const maxSteps = 400_000
	for step := 1; step <= maxSteps && rebuilds < 25; step++ {
		peak := c.twoPhasePeak
		o := owners[r.IntN(len(owners))]
		k := keys[r.IntN(len(keys))]
		x := r.IntN(100)
		if grow {
			x = x * 15 / 100 // mostly e
			if x >= 12 {
				x = 0
			}
		} else if x < 25 {
			x = 25 + r.IntN(75)
		}
		switch {
		case x < 15: // e
			res := tbl.Enqueue(o.o, k.ns, []byte(k.name), k.limit, 0, now)
			want := codec.CodeQueued
			if h, q := k.twoPhaseOf(o); h != nil || q >= 0 {
				want = codec.CodeErrorAlreadyEnqueued
			} else if int64(len(k.holders)) < k.limit && len(k.queue) == 0 {
				want = codec.CodeAcquired
				k.holders = append(k.holders, &r10hold{o: o, twoPhase: true, tok: res.Token})
			} else {
				k.queue = append(k.queue, o)
			}
			if res.Code != want {
				t.Fatalf("step %d: e %s owner %d: %v, want %v", step, k.name, o.id, res.Code, want)
			}
		case x < 60: // w, timeout 0
			// prefer a key o has an entry on
			for range 8 {
				if h, q := k.twoPhaseOf(o); h != nil || q >= 0 {
					break
				}
				k = keys[r.IntN(len(keys))]
			}
			res := tbl.Wait(o.o, k.ns, []byte(k.name), 0, nil, now)
			want := codec.CodeErrorNotEnqueued
			h, q := k.twoPhaseOf(o)
			switch {
			case h != nil:
				want = codec.CodeOK
				h.twoPhase = false
				h.tok = res.Token
			case q >= 0:
				want = codec.CodeTimeout
				k.queue = slices.Delete(k.queue, q, q+1)
			}
			if res.Code != want {
				t.Fatalf("step %d: w %s owner %d: %v, want %v", step, k.name, o.id, res.Code, want)
			}
		case x < 90: // release a collected hold
			var hk *r10key
			hi2 := -1
			for range 8 {
				for i, h := range k.holders {
					if !h.twoPhase {
						hk, hi2 = k, i
						break
					}
				}
				if hk != nil {
					break
				}
				k = keys[r.IntN(len(keys))]
			}
			if hk == nil {
				continue
			}
			h := hk.holders[hi2]
			if code := tbl.Release(hk.ns, []byte(hk.name), h.tok, now); code != codec.CodeOK {
				t.Fatalf("step %d: r %s: %v", step, hk.name, code)
			}
			hk.holders = slices.Delete(hk.holders, hi2, hi2+1)
			hk.grant()
		default: // close, and the owner object comes back as a new connection
			tbl.CloseOwner(o.o, now)
			for _, k := range keys {
				k.queue = slices.DeleteFunc(k.queue, func(q *r10owner) bool { return q == o })
			}
			for _, k := range keys {
				if slices.ContainsFunc(k.holders, func(h *r10hold) bool { return h.o == o }) {
					k.holders = slices.DeleteFunc(k.holders, func(h *r10hold) bool { return h.o == o })
					k.grant()
				}
			}
			nextID++
			o.o.Init(nextID)
			o.id = nextID
		}
		n := len(c.twoPhase)
		if grow && n > hi {
			grow = false
			lo = 1 + r.IntN(1000)
			crossings++
		} else if !grow && n < lo {
			grow = true
			hi = 4200 + r.IntN(2300)
		}
		if c.twoPhasePeak < peak {
			rebuilds++
			check(step, fmt.Sprintf("rebuild %d: peak %d -> %d", rebuilds, peak, c.twoPhasePeak))
		} else if step%2000 == 0 {
			check(step, "periodic")
		}
	}
	check(-1, "end")
	t.Logf("seed %d: %d crossings above the threshold, %d rebuilds", seed, crossings, rebuilds)
	if rebuilds < 10 {
		t.Fatalf("only %d rebuilds", rebuilds)
	}
}
