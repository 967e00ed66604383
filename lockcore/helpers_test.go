package lockcore

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestMain fails the run if any test leaves a goroutine behind (the timer
// driver in particular).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	msec = int64(time.Millisecond)
	sec  = int64(time.Second)
)

// testSeed is the fixed salt seed of the deterministic tests.
var testSeed = [32]byte{1, 2, 3, 4, 5, 6, 7, 8}

// fakeTable returns a Table whose Clock reads *now, with a fixed salt seed.
// The driver is not started: tests move time with Advance.
func fakeTable(cfg Config, now *int64) *Table {
	if cfg.SaltSeed == ([32]byte{}) {
		cfg.SaltSeed = testSeed
	}
	cfg.Clock = func() int64 { return *now }
	return New(cfg)
}

// rec is a recording Continuation for single-goroutine tests. It checks
// that it is called with no shard lock held and records every call.
type rec struct {
	name    string
	tbl     *Table
	results []Result
	sink    *[]*rec // completions of the current step, if set
}

func (r *rec) Complete(res Result) {
	if r.tbl != nil {
		r.tbl.assertUnlocked()
	}
	r.results = append(r.results, res)
	if r.sink != nil {
		*r.sink = append(*r.sink, r)
	}
}

// assertUnlocked panics if any shard lock is held. Only meaningful when a
// single goroutine uses the Table.
func (t *Table) assertUnlocked() {
	for i := range t.shards {
		s := &t.shards[i]
		if !s.mu.TryLock() {
			panic(fmt.Sprintf("Continuation.Complete called with shard %d locked", i))
		}
		s.mu.Unlock()
	}
}

// shardIndex returns the index of the shard that owns (ns, name).
func (t *Table) shardIndex(ns Namespace, name string) int {
	s := t.shardOf(ns, []byte(name))
	for i := range t.shards {
		if &t.shards[i] == s {
			return i
		}
	}
	panic("no shard")
}

// findKey returns the core's key, or nil.
func (t *Table) findKey(ns Namespace, name string) *key {
	s := t.shardOf(ns, []byte(name))
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.c.table(ns)[name]
}

// wheelLen is the number of pending timers in all shards.
func (t *Table) wheelLen() int {
	n := 0
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		n += s.c.wheel.Len()
		s.mu.Unlock()
	}
	return n
}

func nsPrefix(ns Namespace) string {
	if ns == Semaphores {
		return "S:"
	}
	return "L:"
}

// dump renders the whole lock state compactly, keys sorted, joined by
// " | ". A busy key reads "L:a h[1 2e] w[3* 4e*] x1": holders and waiters by
// owner id in queue order (0 = orphaned holder of a closed owner), "e" for
// a two-phase entry not yet collected by w, "*" for a parked request, and
// "xN" for N two-phase tombstones. An idle key reads "L:a idle" (with
// " xN" if tombstones name it).
func (t *Table) dump() string {
	var out []string
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		for _, m := range []map[string]*key{sh.c.locks, sh.c.sems} {
			for _, k := range m {
				var b strings.Builder
				b.WriteString(nsPrefix(k.ns) + k.name)
				if k.inIdle {
					b.WriteString(" idle")
					if k.graves.n > 0 {
						fmt.Fprintf(&b, " x%d", k.graves.n)
					}
					out = append(out, b.String())
					continue
				}
				list := func(tag string, q *queue) {
					if q.n == 0 {
						return
					}
					b.WriteString(" " + tag + "[")
					for n := q.head; n != nil; n = n.knext {
						if n != q.head {
							b.WriteByte(' ')
						}
						id := n.ownerID
						if n.owner == nil {
							id = 0
						}
						fmt.Fprintf(&b, "%d", id)
						if n.twoPhase {
							b.WriteByte('e')
						}
						if n.cont != nil {
							b.WriteByte('*')
						}
					}
					b.WriteString("]")
				}
				list("h", &k.holders)
				list("w", &k.waiters)
				if k.graves.n > 0 {
					fmt.Fprintf(&b, " x%d", k.graves.n)
				}
				out = append(out, b.String())
			}
		}
		sh.mu.Unlock()
	}
	sort.Strings(out)
	return strings.Join(out, " | ")
}

// mustInvariants fails the test if the Table breaks an invariant.
func mustInvariants(tb testing.TB, t *Table) {
	tb.Helper()
	if err := t.checkInvariants(true); err != nil {
		tb.Fatalf("invariant violated: %v\nstate: %s", err, t.dump())
	}
}

func durationOf(ns int64) time.Duration { return time.Duration(ns) }
