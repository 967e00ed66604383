package lockcore

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/lockreactor/dflockd/codec"
)

// Benchmarks use a fixed now (what a session passes in); the clock read is
// the caller's cost.

// handoffCont keeps the token of the grant it receives.
type handoffCont struct {
	tok codec.Token
	n   int
}

func (c *handoffCont) Complete(r Result) { c.tok, c.n = r.Token, c.n+1 }

type nopCont struct{}

func (nopCont) Complete(Result) {}

// acquireRelease is one uncontended l + r pair.
func acquireRelease(tb testing.TB, tbl *Table, o *Owner, key []byte, now int64) {
	r := tbl.Acquire(o, Locks, key, 0, 1, 0, nil, now)
	if r.Code != codec.CodeOK {
		tb.Fatalf("acquire: %v", r.Code)
	}
	if c := tbl.Release(Locks, key, r.Token, now); c != codec.CodeOK {
		tb.Fatalf("release: %v", c)
	}
}

func BenchmarkAcquireRelease(b *testing.B) {
	now := int64(1)
	tbl := fakeTable(Config{MaxLocks: 1024}, &now)
	o := NewOwner(1)
	key := []byte("bench/uncontended")
	b.ReportAllocs()
	for b.Loop() {
		acquireRelease(b, tbl, o, key, now)
	}
}

func BenchmarkAcquireReleaseParallel(b *testing.B) {
	now := int64(1)
	tbl := fakeTable(Config{MaxLocks: 1024}, &now)
	var ids atomic.Uint64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		id := ids.Add(1)
		o := NewOwner(id)
		key := fmt.Appendf(nil, "bench/parallel/%d", id)
		for pb.Next() {
			acquireRelease(b, tbl, o, key, now)
		}
	})
}

// handoff is two owners passing one lock back and forth: each round the
// holder releases, which grants the parked waiter (and completes its
// continuation), and the old holder parks again behind it.
type handoff struct {
	tbl    *Table
	key    []byte
	now    int64
	holder *Owner
	hcont  *handoffCont
	tok    codec.Token
	waiter *Owner
	wcont  *handoffCont
}

func newHandoff(tb testing.TB) *handoff {
	h := &handoff{key: []byte("bench/handoff"), now: 1}
	h.tbl = fakeTable(Config{}, &h.now)
	h.holder, h.waiter = NewOwner(1), NewOwner(2)
	h.hcont, h.wcont = &handoffCont{}, &handoffCont{}
	h.tok = h.tbl.Acquire(h.holder, Locks, h.key, 0, 1, 0, nil, h.now).Token
	if r := h.tbl.Acquire(h.waiter, Locks, h.key, 3600, 1, 0, h.wcont, h.now); !r.Parked {
		tb.Fatal("waiter not parked")
	}
	return h
}

func (h *handoff) round(tb testing.TB) {
	if c := h.tbl.Release(Locks, h.key, h.tok, h.now); c != codec.CodeOK {
		tb.Fatalf("release: %v", c)
	}
	if r := h.tbl.Acquire(h.holder, Locks, h.key, 3600, 1, 0, h.hcont, h.now); !r.Parked {
		tb.Fatal("not parked")
	}
	h.holder, h.waiter = h.waiter, h.holder
	h.hcont, h.wcont = h.wcont, h.hcont
	h.tok = h.hcont.tok
}

func BenchmarkHandoff(b *testing.B) {
	h := newHandoff(b)
	b.ReportAllocs()
	for b.Loop() {
		h.round(b)
	}
}

// closeBench is a table with n keys held by other owners, perOwner keys
// each, cached across the benchmark's calls (filling a million keys takes
// a while).
var closeBench = struct {
	sync.Mutex
	m map[[2]int]*Table
}{m: map[[2]int]*Table{}}

func closeBenchTable(n, perOwner int) *Table {
	closeBench.Lock()
	defer closeBench.Unlock()
	if t := closeBench.m[[2]int{n, perOwner}]; t != nil {
		return t
	}
	now := int64(1)
	tbl := fakeTable(Config{MaxLocks: 0, AutoRelease: true}, &now)
	var o *Owner
	for i := range n {
		if i%perOwner == 0 {
			o = NewOwner(uint64(1_000_000 + i/perOwner))
		}
		tbl.Acquire(o, Locks, fmt.Appendf(nil, "other/%07d", i), 0, 1, 3600, nil, now)
	}
	closeBench.m[[2]int{n, perOwner}] = tbl
	return tbl
}

// BenchmarkCloseOwner closes an owner holding 10 locks (in up to 10
// shards) while n other keys are held by other owners: the time must not
// depend on n. "owners=1" has every other key held by one owner;
// "owners=n/1000" by one owner per thousand keys, so that each shard's
// owner map also grows with n (up to a thousand entries at n = 1M). The
// closed owners are prepared in batches with the timer stopped.
func BenchmarkCloseOwner(b *testing.B) {
	for _, spread := range []struct {
		name     string
		perOwner func(n int) int
	}{{"owners=1", func(n int) int { return n }}, {"owners=n/1000", func(int) int { return 1000 }}} {
		for _, n := range []int{1_000, 100_000, 1_000_000} {
			b.Run(fmt.Sprintf("%s/others=%d", spread.name, n), func(b *testing.B) {
				benchClose(b, closeBenchTable(n, spread.perOwner(n)), n)
			})
		}
	}
}

func benchClose(b *testing.B, tbl *Table, n int) {
	const batch = 1000
	owners := make([]Owner, batch)
	names := make([][]byte, batch*10)
	for i := range names {
		names[i] = fmt.Appendf(nil, "mine/%05d", i)
	}
	now := int64(1)
	acquire := func(k int) {
		for j := range k {
			o := &owners[j]
			o.Init(uint64(j + 1))
			for l := range 10 {
				tbl.Acquire(o, Locks, names[j*10+l], 0, 1, 0, nil, now)
			}
		}
	}
	// Create this benchmark's own keys once and collect garbage before
	// timing, so that no GC cycle of the big heap runs during the
	// measurement.
	acquire(batch)
	for j := range owners {
		tbl.CloseOwner(&owners[j], now)
	}
	runtime.GC()
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; {
		k := min(batch, b.N-done)
		b.StopTimer()
		acquire(k)
		b.StartTimer()
		for j := range k {
			tbl.CloseOwner(&owners[j], now)
		}
		done += k
	}
	b.StopTimer()
	if k := tbl.Keys(); k != int64(n+batch*10) {
		b.Fatalf("%d keys", k)
	}
}

// heapDelta runs fill and returns how much the live heap grew.
func heapDelta(fill func()) float64 {
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	fill()
	runtime.GC()
	runtime.ReadMemStats(&m1)
	return float64(int64(m1.HeapAlloc) - int64(m0.HeapAlloc))
}

const memN = 1_000_000

var memOnce struct {
	waiter, key sync.Once
	perWaiter   float64
	perKey      float64
}

// BenchmarkMemoryParkedWaiter parks a million waiters, one per owner (as
// one per connection), on a thousand held locks, and reports the heap
// bytes per waiter (the Owner structs are the caller's and are not
// counted). Measured once per process.
func BenchmarkMemoryParkedWaiter(b *testing.B) {
	memOnce.waiter.Do(func() {
		now := int64(1)
		tbl := fakeTable(Config{}, &now)
		holder := NewOwner(0)
		names := make([][]byte, 1000)
		for i := range names {
			names[i] = fmt.Appendf(nil, "held/%04d", i)
			tbl.Acquire(holder, Locks, names[i], 0, 1, 3600, nil, now)
		}
		owners := make([]Owner, memN)
		for i := range owners {
			owners[i].Init(uint64(i + 1))
		}
		var cont nopCont
		memOnce.perWaiter = heapDelta(func() {
			for i := range owners {
				if r := tbl.Acquire(&owners[i], Locks, names[i%len(names)], 3600, 1, 0, cont, now); !r.Parked {
					panic("not parked")
				}
			}
		}) / memN
		runtime.KeepAlive(tbl)
		runtime.KeepAlive(owners)
	})
	for b.Loop() {
	}
	b.ReportMetric(memOnce.perWaiter, "B/waiter")
}

// BenchmarkMemoryIdleKey creates a million idle keys ("key-%07d", 11
// bytes) and reports the heap bytes per key.
func BenchmarkMemoryIdleKey(b *testing.B) {
	memOnce.key.Do(func() {
		now := int64(1)
		tbl := fakeTable(Config{}, &now)
		names := make([][]byte, memN)
		for i := range names {
			names[i] = fmt.Appendf(nil, "key-%07d", i)
		}
		o := NewOwner(1)
		memOnce.perKey = heapDelta(func() {
			for _, name := range names {
				tok := tbl.Acquire(o, Locks, name, 0, 1, 0, nil, now).Token
				tbl.Release(Locks, name, tok, now)
			}
		}) / memN
		runtime.KeepAlive(tbl)
		runtime.KeepAlive(names)
	})
	for b.Loop() {
	}
	b.ReportMetric(memOnce.perKey, "B/key")
}
