package lockcore

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lockreactor/dflockd/codec"
	"go.uber.org/goleak"
)

// Tests of the Table with its driver goroutine and real time.

func TestDriverStartStopNoLeak(t *testing.T) {
	defer goleak.VerifyNone(t)
	// Stop without Start, twice.
	tbl := New(Config{})
	tbl.Stop()
	tbl.Stop()
	tbl.Start() // after Stop: no driver
	// Start, Start, Stop, Stop, with work in flight.
	tbl = New(Config{Shards: 4, Tick: time.Millisecond})
	tbl.Start()
	tbl.Start()
	o := NewOwner(1)
	tbl.Acquire(o, Locks, []byte("a"), 0, 1, 1, nil, tbl.Now())
	c := &chanCont{ch: make(chan Result, 1)}
	tbl.Acquire(NewOwner(2), Locks, []byte("a"), 5, 1, 0, c, tbl.Now())
	tbl.Stop()
	tbl.Stop()
	// Many short-lived tables.
	for range 50 {
		tbl := New(Config{Shards: 2})
		tbl.Start()
		tbl.Stop()
	}
}

type chanCont struct{ ch chan Result }

func (c *chanCont) Complete(r Result) { c.ch <- r }

// stampCont records the Table's clock when it completes.
type stampCont struct {
	tbl *Table
	ch  chan [2]any
}

func (c *stampCont) Complete(r Result) { c.ch <- [2]any{r, c.tbl.Now()} }

// The driver, on the real clock, resolves a timeout and a lease end due
// 50 ms ahead: not before their deadline (exact, whatever the machine's
// load) and well within a loose bound. Leases and timeouts are whole
// seconds, so the requests are issued with a now 950 ms in the past.
func TestDriverRealClock(t *testing.T) {
	tbl := New(Config{Shards: 8})
	tbl.Start()
	defer tbl.Stop()
	const back = 950 * time.Millisecond
	start := time.Now()
	now := tbl.Now()
	past := now - int64(back)

	// A lease ending in 50 ms, with a waiter that will be granted then.
	r := tbl.Acquire(NewOwner(1), Locks, []byte("lease"), 0, 1, 1, nil, past)
	if r.Code != codec.CodeOK {
		t.Fatalf("acquire: %v", fmtRes(r))
	}
	leaseEnd := past + 1*sec
	granted := &stampCont{tbl: tbl, ch: make(chan [2]any, 1)}
	if r := tbl.Acquire(NewOwner(2), Locks, []byte("lease"), 10, 1, 0, granted, now); !r.Parked {
		t.Fatalf("waiter: %v", fmtRes(r))
	}
	// A timeout in 50 ms.
	tbl.Acquire(NewOwner(3), Semaphores, []byte("timeout"), 0, 1, 0, nil, now)
	timedOut := &stampCont{tbl: tbl, ch: make(chan [2]any, 1)}
	if r := tbl.Acquire(NewOwner(4), Semaphores, []byte("timeout"), 1, 1, 0, timedOut, past); !r.Parked {
		t.Fatalf("timed waiter: %v", fmtRes(r))
	}
	deadline := past + 1*sec

	for _, c := range []struct {
		name string
		cont *stampCont
		code codec.Code
		due  int64
	}{{"lease end", granted, codec.CodeOK, leaseEnd}, {"timeout", timedOut, codec.CodeTimeout, deadline}} {
		select {
		case got := <-c.cont.ch:
			res, at := got[0].(Result), got[1].(int64)
			if res.Code != c.code {
				t.Fatalf("%s: %v", c.name, fmtRes(res))
			}
			if at < c.due {
				t.Fatalf("%s resolved %v early", c.name, time.Duration(c.due-at))
			}
			t.Logf("%s resolved %v after its deadline", c.name, time.Duration(at-c.due))
		case <-time.After(time.Second):
			t.Fatalf("%s not resolved within 1 s", c.name)
		}
	}
	if el := time.Since(start); el > time.Second {
		t.Fatalf("took %v", el)
	}
}

// An idle driver sleeps until its next GC: it must not spin. (It used to
// sleep until the tick *before* the GC time, then loop without sleeping
// until the clock reached it: up to one tick of busy looping per GC
// interval.)
func TestDriverIdleDoesNotSpin(t *testing.T) {
	var calls atomic.Int64
	base := time.Now()
	tbl := New(Config{
		Shards:     4,
		Tick:       50 * time.Millisecond,
		GCInterval: 70 * time.Millisecond,
		Clock: func() int64 {
			calls.Add(1)
			return int64(time.Since(base))
		},
	})
	tbl.Start()
	time.Sleep(700 * time.Millisecond)
	tbl.Stop()
	// About 10 GC wake-ups of a few clock reads each.
	n := calls.Load()
	if n > 300 {
		t.Fatalf("driver read the clock %d times in 700 ms while idle: it spins", n)
	}
	t.Logf("%d clock reads in 700 ms", n)
}

// The driver prunes idle keys every GCInterval.
func TestDriverGC(t *testing.T) {
	tbl := New(Config{Shards: 4, GCInterval: 20 * time.Millisecond, GCMaxIdle: 30 * time.Millisecond})
	tbl.Start()
	defer tbl.Stop()
	o := NewOwner(1)
	tok := tbl.Acquire(o, Locks, []byte("a"), 0, 1, 0, nil, tbl.Now()).Token
	tbl.Release(Locks, []byte("a"), tok, tbl.Now())
	for deadline := time.Now().Add(2 * time.Second); tbl.Keys() != 0; {
		if time.Now().After(deadline) {
			t.Fatal("idle key not pruned")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// ---- race test ----

type hkey struct {
	ns      Namespace
	name    []byte
	limit   int64
	counted bool         // long lease: mutual exclusion is checked
	cnt     atomic.Int64 // holders as the test sees them
}

// hcont is a parked request of the race test. The worker either waits for
// its result or, to simulate a disconnect while parked, abandons it (state
// 0 -> 2) and closes its owner; Complete (state 0 -> 1) and abandonment
// race.
type hcont struct {
	state atomic.Int32
	calls atomic.Int32
	ch    chan Result
	owner *Owner
}

func (h *hcont) Complete(r Result) {
	h.calls.Add(1)
	if h.state.CompareAndSwap(0, 1) {
		h.ch <- r
	}
}

type held struct {
	k   *hkey
	tok codec.Token
}

type hammer struct {
	t      *testing.T
	tbl    *Table
	keys   []*hkey
	churn  [][]byte
	fences sync.Map
	mu     sync.Mutex
	conts  []*hcont
	grants atomic.Int64
	parked atomic.Int64
	aband  atomic.Int64
	ids    atomic.Uint64
}

func (h *hammer) onGrant(w *worker, k *hkey, tok codec.Token) {
	if _, dup := h.fences.LoadOrStore(tok.Fence, true); dup {
		h.t.Errorf("fence %d issued twice", tok.Fence)
	}
	h.grants.Add(1)
	if k.counted {
		if n := k.cnt.Add(1); n > k.limit {
			h.t.Errorf("%s: %d holders, limit %d", k.name, n, k.limit)
		}
	}
	w.held = append(w.held, held{k, tok})
}

type worker struct {
	h    *hammer
	r    *rand.Rand
	o    *Owner
	held []held
}

func (w *worker) closeOwner() {
	for _, hd := range w.held {
		if hd.k.counted {
			hd.k.cnt.Add(-1)
		}
	}
	w.held = w.held[:0]
	w.h.tbl.CloseOwner(w.o, w.h.tbl.Now())
	w.o = NewOwner(w.h.ids.Add(1))
}

func (w *worker) newCont() *hcont {
	c := &hcont{ch: make(chan Result, 1), owner: w.o}
	w.h.mu.Lock()
	w.h.conts = append(w.h.conts, c)
	w.h.mu.Unlock()
	return c
}

// await waits for a parked request, or abandons it by closing the owner.
// It returns the result and whether it got one.
func (w *worker) await(c *hcont) (Result, bool) {
	w.h.parked.Add(1)
	if w.r.IntN(100) < 15 && c.state.CompareAndSwap(0, 2) {
		w.h.aband.Add(1)
		w.closeOwner()
		return Result{}, false
	}
	select {
	case r := <-c.ch:
		return r, true
	case <-time.After(10 * time.Second):
		w.h.t.Errorf("parked request not resolved within 10 s")
		return Result{}, false
	}
}

func (w *worker) lease(k *hkey) int64 {
	if k.counted {
		return 0 // the default: an hour
	}
	return 1
}

func (w *worker) step() {
	h, tbl := w.h, w.h.tbl
	k := h.keys[w.r.IntN(len(h.keys))]
	x := w.r.IntN(100)
	if len(w.held) > 0 && x < 50 {
		x = 60 // mostly release what we hold before asking for more
	}
	// Park (timeout 1 s) mostly when holding nothing: hold-and-wait cycles
	// only end by timeouts, which would leave the workers idle.
	mayPark := len(w.held) == 0 || w.r.IntN(100) < 3
	switch {
	case x < 30: // l / sl
		timeout := int64(0)
		if mayPark && w.r.IntN(100) < 60 {
			timeout = 1
		}
		c := w.newCont()
		r := tbl.Acquire(w.o, k.ns, k.name, timeout, k.limit, w.lease(k), c, tbl.Now())
		if r.Parked {
			r, _ = w.await(c)
		} else {
			c.state.Store(3) // never parked
		}
		if r.Code == codec.CodeOK {
			h.onGrant(w, k, r.Token)
		}
	case x < 50: // e / se then w / sw
		r := tbl.Enqueue(w.o, k.ns, k.name, k.limit, w.lease(k), tbl.Now())
		var fast codec.Token
		switch r.Code {
		case codec.CodeAcquired:
			fast = r.Token
			h.onGrant(w, k, r.Token)
		case codec.CodeQueued:
		default:
			return
		}
		timeout := int64(0)
		if mayPark {
			timeout = 1
		}
		c := w.newCont()
		r = tbl.Wait(w.o, k.ns, k.name, timeout, c, tbl.Now())
		if r.Parked {
			var ok bool
			if r, ok = w.await(c); !ok {
				return
			}
		} else {
			c.state.Store(3)
		}
		switch {
		case r.Code == codec.CodeOK && !fast.IsZero():
			if r.Token != fast {
				h.t.Errorf("w after acquired: token %v, e gave %v", r.Token, fast)
			}
		case r.Code == codec.CodeOK:
			h.onGrant(w, k, r.Token)
		case r.Code == codec.CodeErrorLeaseExpired && !k.counted, r.Code == codec.CodeTimeout && fast.IsZero():
		default:
			if k.counted || r.Code != codec.CodeErrorNotEnqueued {
				h.t.Errorf("w on %s: %v (fast path %v)", k.name, fmtRes(r), !fast.IsZero())
			}
		}
	case x < 75: // r / sr
		if len(w.held) == 0 {
			return
		}
		i := w.r.IntN(len(w.held))
		hd := w.held[i]
		w.held = append(w.held[:i], w.held[i+1:]...)
		if hd.k.counted {
			hd.k.cnt.Add(-1)
		}
		code := tbl.Release(hd.k.ns, hd.k.name, hd.tok, tbl.Now())
		if hd.k.counted && code != codec.CodeOK {
			h.t.Errorf("release of a held %s: %v", hd.k.name, code)
		}
	case x < 82: // n / sn
		if len(w.held) == 0 {
			return
		}
		hd := w.held[w.r.IntN(len(w.held))]
		r := tbl.Renew(hd.k.ns, hd.k.name, hd.tok, w.lease(hd.k), tbl.Now())
		if hd.k.counted && r.Code != codec.CodeOK {
			h.t.Errorf("renew of a held %s: %v", hd.k.name, fmtRes(r))
		}
	case x < 87:
		w.closeOwner()
	case x < 97 && len(h.churn) > 0: // many short-lived keys: budget pressure
		name := h.churn[w.r.IntN(len(h.churn))]
		r := tbl.Acquire(w.o, Locks, name, 0, 1, 0, nil, tbl.Now())
		if r.Code == codec.CodeOK {
			if _, dup := h.fences.LoadOrStore(r.Token.Fence, true); dup {
				h.t.Errorf("fence %d issued twice", r.Token.Fence)
			}
			tbl.Release(Locks, name, r.Token, tbl.Now())
		}
	default:
		tbl.Stats(tbl.Now())
	}
}

func runHammer(t *testing.T, cfg Config, workers int, d time.Duration) {
	tbl := New(cfg)
	h := &hammer{t: t, tbl: tbl}
	h.ids.Store(1000)
	h.keys = []*hkey{
		{ns: Locks, name: []byte("k0"), limit: 1, counted: true},
		{ns: Locks, name: []byte("k1"), limit: 1, counted: true},
		{ns: Semaphores, name: []byte("k0"), limit: 2, counted: true},
		{ns: Semaphores, name: []byte("s1"), limit: 3, counted: true},
		{ns: Locks, name: []byte("x0"), limit: 1},
		{ns: Semaphores, name: []byte("x1"), limit: 2},
	}
	if cfg.MaxLocks > 0 {
		for i := range 16 {
			h.churn = append(h.churn, fmt.Appendf(nil, "c%d", i))
		}
	}
	tbl.Start()
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := &worker{h: h, r: rand.New(rand.NewPCG(uint64(i), 7)), o: NewOwner(h.ids.Add(1))}
			for n := 0; time.Now().Before(stop); n++ {
				w.step()
				if n%64 == 63 {
					time.Sleep(time.Duration(w.r.IntN(200)) * time.Microsecond)
				}
			}
			w.closeOwner()
		}()
	}
	wg.Wait()
	tbl.Stop()

	// Every parked request: exactly one completion, or none if its owner
	// was closed while it was parked (and maybe one, if it was resolved
	// just before).
	h.mu.Lock()
	for i, c := range h.conts {
		n := c.calls.Load()
		switch st := c.state.Load(); {
		case n > 1:
			t.Errorf("request %d completed %d times", i, n)
		case st == 1 && n != 1:
			t.Errorf("request %d delivered but completed %d times", i, n)
		case st == 3 && n != 0:
			t.Errorf("request %d answered at once but completed too", i)
		case st == 0:
			t.Errorf("request %d parked, never resolved nor abandoned", i)
		}
	}
	h.mu.Unlock()
	// Every owner is closed: nothing is held, queued or timed.
	if err := tbl.checkInvariants(false); err != nil {
		t.Fatalf("invariant violated: %v", err)
	}
	st := tbl.Stats(tbl.Now())
	if len(st.Locks) != 0 || len(st.Semaphores) != 0 || tbl.wheelLen() != 0 {
		t.Fatalf("state left after every owner closed: %s", tbl.dump())
	}
	for _, k := range h.keys {
		if k.cnt.Load() != 0 {
			t.Errorf("%s: count %d at the end", k.name, k.cnt.Load())
		}
	}
	t.Logf("%d grants, %d parked requests, %d abandoned", h.grants.Load(), h.parked.Load(), h.aband.Load())
}

func TestRaceHammer(t *testing.T) {
	d := 1200 * time.Millisecond
	if *flagLong {
		d = 20 * time.Second
	}
	cases := []struct {
		name string
		cfg  Config
	}{
		{"many shards", Config{Shards: 64, AutoRelease: true, DefaultLease: 3600, GCInterval: 30 * time.Millisecond, GCMaxIdle: 10 * time.Millisecond}},
		{"few shards, limits", Config{Shards: 2, AutoRelease: true, DefaultLease: 3600, MaxLocks: 10, MaxWaiters: 3, Tick: time.Millisecond, GCInterval: 20 * time.Millisecond, GCMaxIdle: time.Millisecond}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { runHammer(t, c.cfg, 8, d) })
	}
}

// Concurrent creation of keys at the max-locks cap, with idle keys spread
// over every shard: reclaims (in the own shard and in others) all the
// time. The cap must hold and every structure stay consistent.
func TestRaceMaxLocksBudget(t *testing.T) {
	const maxLocks = 8
	tbl := New(Config{Shards: 4, MaxLocks: maxLocks, AutoRelease: true})
	names := make([][]byte, 64)
	for i := range names {
		names[i] = fmt.Appendf(nil, "b%d", i)
	}
	d := 300 * time.Millisecond
	if *flagLong {
		d = 5 * time.Second
	}
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	var ok, refused atomic.Int64
	for i := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(i), 11))
			o := NewOwner(uint64(i + 1))
			for time.Now().Before(stop) {
				ns := Namespace(r.IntN(2))
				name := names[r.IntN(len(names))]
				res := tbl.Acquire(o, ns, name, 0, 1, 0, nil, tbl.Now())
				switch res.Code {
				case codec.CodeOK:
					ok.Add(1)
					if c := tbl.Release(ns, name, res.Token, tbl.Now()); c != codec.CodeOK {
						t.Errorf("release: %v", c)
						return
					}
				case codec.CodeErrorMaxLocks:
					refused.Add(1)
				}
				if r.IntN(50) == 0 {
					tbl.Stats(tbl.Now())
				}
			}
			tbl.CloseOwner(o, tbl.Now())
		}()
	}
	wg.Wait()
	if err := tbl.checkInvariants(false); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d grants, %d refused at the cap", ok.Load(), refused.Load())
}

// At the max-locks cap with plenty of idle keys, concurrent creators of new
// keys must never be refused: each one reclaims an idle key. The idle keys
// are all in shard 0 and the new keys in the other shards, so every
// creation takes the cross-shard path; in each round idle keys only
// disappear, so a refusal is never excusable by a scan that missed a key
// that moved.
func TestRaceMaxLocksNeverRefusedWhileIdle(t *testing.T) {
	const (
		maxLocks = 1200
		workers  = 6
		perRound = 150 // new keys per worker and round: 900 of 1200 idle
	)
	rounds := 6
	if *flagLong {
		rounds = 60
	}
	tbl := New(Config{Shards: 8, MaxLocks: maxLocks, AutoRelease: true, GCMaxIdle: 1})
	inShard0 := func(prefix string, n int, zero bool) [][]byte {
		var out [][]byte
		for i := 0; len(out) < n; i++ {
			name := fmt.Appendf(nil, "%s%d", prefix, i)
			if (tbl.shardIndex(Locks, string(name)) == 0) == zero {
				out = append(out, name)
			}
		}
		return out
	}
	idle := inShard0("idle", maxLocks, true)
	var refused atomic.Int64
	for round := range rounds {
		tbl.GC(tbl.Now() + 1) // drop every idle key
		setup := NewOwner(1)
		for _, name := range idle {
			tok := tbl.Acquire(setup, Locks, name, 0, 1, 0, nil, tbl.Now()).Token
			tbl.Release(Locks, name, tok, tbl.Now())
		}
		fresh := inShard0(fmt.Sprintf("r%d-", round), workers*perRound, false)
		var wg sync.WaitGroup
		owners := make([]*Owner, workers)
		for w := range workers {
			owners[w] = NewOwner(uint64(100 + w))
			wg.Add(1)
			go func() {
				defer wg.Done()
				for _, name := range fresh[w*perRound : (w+1)*perRound] {
					if r := tbl.Acquire(owners[w], Locks, name, 0, 1, 0, nil, tbl.Now()); r.Code != codec.CodeOK {
						refused.Add(1)
					}
				}
			}()
		}
		wg.Wait()
		for _, o := range owners {
			tbl.CloseOwner(o, tbl.Now())
		}
	}
	if err := tbl.checkInvariants(false); err != nil {
		t.Fatal(err)
	}
	if n := refused.Load(); n != 0 {
		t.Fatalf("%d of %d requests refused with error_max_locks while idle keys existed", n, rounds*workers*perRound)
	}
}
