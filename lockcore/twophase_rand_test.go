package lockcore

import (
	"crypto/sha256"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lockreactor/dflockd/codec"
)

// A randomized, deterministic workload aimed at the two-phase
// index (core.twoPhase): e/se and w/sw with leases that run out before the
// w, grants from the queue (untold), closes with auto-release on and off,
// owner objects re-initialised and reused, CancelParked, GC and idle-key
// reclaim at a small --max-locks (keys with tombstones go while their
// owner still has them), semaphores with limits, max-waiters refusals and
// re-enqueues after a lease ran out. Every step is followed by the full
// invariant check (which verifies the index against the owner lists) and
// by checkTwoPhaseIndex (index entries themselves: owner, key, state).
//
// The transcript of replies, completions and states of every run is
// hashed; with -lockcore.twophase-trace DIR it is written out, so that the same file
// run against another version of the lock table can be diffed.

var twoPhaseTrace = flag.String("lockcore.twophase-trace", "", "directory to write the two-phase random test's transcripts to")

type r9owner struct {
	o      *Owner
	id     uint64
	parked *rec    // a session has at most one request in flight
	eKeys  []r9key // keys of its recent e/se
}

type r9key struct {
	ns   Namespace
	name string
}

type r9tok struct {
	ns   Namespace
	name string
	tok  codec.Token
}

type r9run struct {
	t      *testing.T
	r      *rand.Rand
	cfg    Config
	tbl    *Table
	now    int64
	owners []*r9owner
	nextID uint64
	toks   []r9tok
	out    strings.Builder
	step   int
	stale  bool // an op used an older now: idle order may be off
	limits map[string]int64
}

var r9names = []string{"a", "b", "c", "d", "e"}

func newR9Run(t *testing.T, seed uint64) *r9run {
	r := rand.New(rand.NewPCG(seed, seed*0x9e3779b97f4a7c15+7))
	h := &r9run{t: t, r: r, limits: map[string]int64{}}
	h.cfg = Config{
		Shards:            []int{1, 1, 2, 128}[r.IntN(4)],
		MaxLocks:          []int64{0, 2, 3, 4}[r.IntN(4)],
		MaxWaiters:        []int64{0, 0, 1, 2}[r.IntN(4)],
		MaxSemaphoreLimit: 3,
		DefaultLease:      1 + r.Int64N(2),
		AutoRelease:       r.IntN(2) == 0,
		Tick:              durationOf([]int64{msec, 10 * msec}[r.IntN(2)]),
		GCMaxIdle:         durationOf(2 * sec),
		FenceStart:        1000,
	}
	h.now = 10 * sec
	h.tbl = fakeTable(h.cfg, &h.now)
	for _, n := range r9names {
		h.limits[n] = 1 + r.Int64N(3)
	}
	for range 4 {
		h.owners = append(h.owners, h.newOwner(nil))
	}
	fmt.Fprintf(&h.out, "cfg %+v\n", h.cfg)
	return h
}

func (h *r9run) newOwner(reuse *Owner) *r9owner {
	h.nextID++
	o := reuse
	if o == nil {
		o = NewOwner(h.nextID)
	} else {
		o.Init(h.nextID)
	}
	return &r9owner{o: o, id: h.nextID}
}

func (h *r9run) logf(format string, args ...any) {
	fmt.Fprintf(&h.out, "%d ", h.step)
	fmt.Fprintf(&h.out, format, args...)
	h.out.WriteByte('\n')
}

func r9fmt(r Result) string {
	if r.Parked {
		return "parked"
	}
	s := r.Code.String()
	if !r.Token.IsZero() {
		s += fmt.Sprintf(" f=%d s=%x", r.Token.Fence, r.Token.Salt)
	}
	if r.Lease != 0 {
		s += fmt.Sprintf(" l=%d", r.Lease)
	}
	if r.Timer {
		s += " timer"
	}
	return s
}

func (h *r9run) keep(ns Namespace, name string, r Result) {
	if !r.Token.IsZero() {
		h.toks = append(h.toks, r9tok{ns, name, r.Token})
		if len(h.toks) > 40 {
			h.toks = h.toks[len(h.toks)-40:]
		}
	}
}

// opNow is the now of an operation: usually the clock, sometimes a little
// older (a request whose now was read before another goroutine's).
func (h *r9run) opNow() int64 {
	if h.r.IntN(20) == 0 {
		h.stale = true
		return h.now - h.r.Int64N(5*msec)
	}
	return h.now
}

func (h *r9run) pickKey() (Namespace, string, int64) {
	name := r9names[h.r.IntN(len(r9names))]
	if h.r.IntN(2) == 0 {
		return Locks, name, 1
	}
	lim := h.limits[name]
	switch h.r.IntN(30) {
	case 0:
		lim = 4 // over MaxSemaphoreLimit
	case 1:
		lim = 1 + (lim % 3) // mismatch
	}
	return Semaphores, name, lim
}

func (h *r9run) collect() {
	for _, ow := range h.owners {
		if ow.parked != nil && len(ow.parked.results) > 0 {
			r := ow.parked.results[0]
			if len(ow.parked.results) != 1 {
				h.t.Fatalf("step %d: owner %d: %d completions", h.step, ow.id, len(ow.parked.results))
			}
			h.logf("  done %s owner %d: %s", ow.parked.name, ow.id, r9fmt(r))
			ns, name := Locks, ow.parked.name[2:]
			if ow.parked.name[0] == 'S' {
				ns = Semaphores
			}
			h.keep(ns, name, r)
			ow.parked = nil
		}
	}
}

func (h *r9run) runStep() {
	h.step++
	ow := h.owners[h.r.IntN(len(h.owners))]
	busy := ow.parked != nil
	x := h.r.IntN(100)
	if busy && x < 60 {
		x = 60 + h.r.IntN(40)
	}
	switch {
	case x < 22: // e / se
		ns, name, lim := h.pickKey()
		lease := h.r.Int64N(3) // 0 = default
		r := h.tbl.Enqueue(ow.o, ns, []byte(name), lim, lease, h.opNow())
		h.logf("e %s%s owner %d lim %d lease %d: %s", nsPrefix(ns), name, ow.id, lim, lease, r9fmt(r))
		ow.eKeys = append(ow.eKeys, r9key{ns, name})
		if len(ow.eKeys) > 4 {
			ow.eKeys = ow.eKeys[1:]
		}
		h.keep(ns, name, r)
	case x < 40: // w / sw
		ns, name, _ := h.pickKey()
		if len(ow.eKeys) > 0 && h.r.IntN(10) < 8 {
			k := ow.eKeys[h.r.IntN(len(ow.eKeys))]
			ns, name = k.ns, k.name
		}
		timeout := []int64{0, 0, 1, 2, 3}[h.r.IntN(5)]
		c := &rec{name: nsPrefix(ns) + name, tbl: h.tbl}
		r := h.tbl.Wait(ow.o, ns, []byte(name), timeout, c, h.opNow())
		h.logf("w %s%s owner %d timeout %d: %s", nsPrefix(ns), name, ow.id, timeout, r9fmt(r))
		if r.Parked {
			ow.parked = c
		}
		h.keep(ns, name, r)
	case x < 50: // l / sl
		ns, name, lim := h.pickKey()
		timeout := []int64{0, 1, 2}[h.r.IntN(3)]
		lease := h.r.Int64N(3)
		c := &rec{name: nsPrefix(ns) + name, tbl: h.tbl}
		r := h.tbl.Acquire(ow.o, ns, []byte(name), timeout, lim, lease, c, h.opNow())
		h.logf("l %s%s owner %d timeout %d lim %d lease %d: %s", nsPrefix(ns), name, ow.id, timeout, lim, lease, r9fmt(r))
		if r.Parked {
			ow.parked = c
		}
		h.keep(ns, name, r)
	case x < 58: // r / n with a known token (or a stale one)
		if len(h.toks) == 0 {
			break
		}
		tk := h.toks[h.r.IntN(len(h.toks))]
		if h.r.IntN(3) == 0 {
			r := h.tbl.Renew(tk.ns, []byte(tk.name), tk.tok, h.r.Int64N(3), h.opNow())
			h.logf("n %s%s f=%d: %s", nsPrefix(tk.ns), tk.name, tk.tok.Fence, r9fmt(r))
		} else {
			code := h.tbl.Release(tk.ns, []byte(tk.name), tk.tok, h.opNow())
			h.logf("r %s%s f=%d: %v", nsPrefix(tk.ns), tk.name, tk.tok.Fence, code)
		}
	case x < 60:
		// nothing: a busy owner's slot
	case x < 68: // close, then a new connection (sometimes the same Owner object)
		h.tbl.CloseOwner(ow.o, h.opNow())
		h.logf("close owner %d", ow.id)
		var reuse *Owner
		if h.r.IntN(2) == 0 {
			reuse = ow.o
		}
		for i, o := range h.owners {
			if o == ow {
				h.owners[i] = h.newOwner(reuse)
				h.logf("  now owner %d", h.owners[i].id)
			}
		}
	case x < 72: // half-close: CancelParked, then maybe close
		ok := h.tbl.CancelParked(ow.o, h.opNow())
		h.logf("cancel owner %d: %v", ow.id, ok)
		if ok {
			if ow.parked == nil || len(ow.parked.results) != 0 {
				h.t.Fatalf("step %d: CancelParked true with nothing parked", h.step)
			}
			ow.parked = nil
		}
	case x < 78: // GC
		n := h.tbl.GC(h.now)
		h.logf("gc: %d", n)
	default: // time passes
		var dt int64
		switch y := h.r.IntN(10); {
		case y < 4:
			dt = h.r.Int64N(50 * msec)
		case y < 8:
			dt = h.r.Int64N(800 * msec)
		default:
			dt = h.r.Int64N(3 * sec)
		}
		if h.r.IntN(8) == 0 {
			// exactly onto a second boundary relative to now: probes <=
			dt = sec
		}
		h.now += dt
		h.tbl.Advance(h.now)
		h.logf("advance +%d", dt)
	}
	h.collect()
	h.logf("  %s", h.tbl.dump())
	if err := h.tbl.checkInvariants(!h.stale); err != nil {
		h.fail("invariant: %v", err)
	}
	if err := checkTwoPhaseIndex(h.tbl); err != nil {
		h.fail("index: %v", err)
	}
}

func (h *r9run) fail(format string, args ...any) {
	h.t.Helper()
	lines := strings.Split(h.out.String(), "\n")
	start := max(0, len(lines)-40)
	h.t.Fatalf("step %d: %s\nconfig %+v\nlast:\n%s", h.step, fmt.Sprintf(format, args...), h.cfg, strings.Join(lines[start:], "\n"))
}

func TestTwoPhaseRandom(t *testing.T) {
	seeds, steps := 400, 600
	if *flagLong {
		seeds, steps = 3000, 1500
	}
	all := sha256.New()
	for s := range seeds {
		h := newR9Run(t, uint64(s)+1)
		for range steps {
			h.runStep()
		}
		// Closing everybody leaves no two-phase state.
		for _, ow := range h.owners {
			h.tbl.CloseOwner(ow.o, h.now)
		}
		if err := h.tbl.checkInvariants(!h.stale); err != nil {
			h.fail("after closing all: %v", err)
		}
		if err := checkTwoPhaseIndex(h.tbl); err != nil {
			h.fail("after closing all: %v", err)
		}
		if n := twoPhaseIndexLen(h.tbl); n != 0 {
			h.fail("after closing all: %d index entries", n)
		}
		all.Write([]byte(h.out.String()))
		if *twoPhaseTrace != "" {
			if err := os.WriteFile(filepath.Join(*twoPhaseTrace, fmt.Sprintf("seed%04d.txt", s+1)), []byte(h.out.String()), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Logf("transcript hash %x", all.Sum(nil))
}
