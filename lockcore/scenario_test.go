package lockcore

import (
	"fmt"
	"testing"

	"github.com/lockreactor/dflockd/codec"
)

// Scenario tables: each row is one operation at the current fake time, the
// reply it must get, the continuations it must complete (and no others),
// and optionally the lock state after it (Table.dump) and a custom check.
// The invariant walker runs after every row.

type opKind uint8

const (
	opAcquire opKind = iota
	opEnqueue
	opWait
	opRelease
	opRenew
	opClose
	opAt  // set the clock only
	opAdv // set the clock and Advance
	opGC
)

type op struct {
	kind    opKind
	o       uint64 // owner id
	ns      Namespace
	key     string
	timeout int64
	limit   int64
	lease   int64
	tok     string // token label for r/n
	at      int64  // ns, for opAt/opAdv
}

func L(o uint64, key string, timeout, lease int64) op {
	return op{kind: opAcquire, o: o, ns: Locks, key: key, timeout: timeout, limit: 1, lease: lease}
}
func SL(o uint64, key string, timeout, limit, lease int64) op {
	return op{kind: opAcquire, o: o, ns: Semaphores, key: key, timeout: timeout, limit: limit, lease: lease}
}
func E(o uint64, key string, lease int64) op {
	return op{kind: opEnqueue, o: o, ns: Locks, key: key, limit: 1, lease: lease}
}
func SE(o uint64, key string, limit, lease int64) op {
	return op{kind: opEnqueue, o: o, ns: Semaphores, key: key, limit: limit, lease: lease}
}
func W(o uint64, key string, timeout int64) op {
	return op{kind: opWait, o: o, ns: Locks, key: key, timeout: timeout}
}
func SW(o uint64, key string, timeout int64) op {
	return op{kind: opWait, o: o, ns: Semaphores, key: key, timeout: timeout}
}
func R(key, tok string) op  { return op{kind: opRelease, ns: Locks, key: key, tok: tok} }
func SR(key, tok string) op { return op{kind: opRelease, ns: Semaphores, key: key, tok: tok} }
func N(key, tok string, lease int64) op {
	return op{kind: opRenew, ns: Locks, key: key, tok: tok, lease: lease}
}
func SN(key, tok string, lease int64) op {
	return op{kind: opRenew, ns: Semaphores, key: key, tok: tok, lease: lease}
}
func Close(o uint64) op { return op{kind: opClose, o: o} }
func At(msAt int64) op  { return op{kind: opAt, at: msAt * msec} }
func Adv(msAt int64) op { return op{kind: opAdv, at: msAt * msec} }
func AtNs(ns int64) op  { return op{kind: opAt, at: ns} }
func AdvNs(ns int64) op { return op{kind: opAdv, at: ns} }
func GC() op            { return op{kind: opGC} }

func (o op) String() string {
	name := [...]string{"acquire", "enqueue", "wait", "release", "renew", "close", "at", "advance", "gc"}[o.kind]
	switch o.kind {
	case opAt, opAdv:
		return fmt.Sprintf("%s %dns", name, o.at)
	case opGC:
		return name
	case opClose:
		return fmt.Sprintf("%s owner %d", name, o.o)
	}
	return fmt.Sprintf("%s owner=%d %s%s timeout=%d limit=%d lease=%d tok=%q", name, o.o, nsPrefix(o.ns), o.key, o.timeout, o.limit, o.lease, o.tok)
}

// exp is an expected reply. A grant's token is checked by fence, and
// stored under label (or, if the label is taken, compared with the stored
// token, salt included). A parked reply registers the label as the name of
// its continuation.
type exp struct {
	code   codec.Code
	fence  uint64
	lease  int64
	parked bool
	label  string
	n      int // opGC: keys pruned
}

func is(c codec.Code) exp { return exp{code: c} }
func okT(fence, lease uint64, label string) exp {
	return exp{code: codec.CodeOK, fence: fence, lease: int64(lease), label: label}
}
func acq(fence, lease uint64, label string) exp {
	return exp{code: codec.CodeAcquired, fence: fence, lease: int64(lease), label: label}
}
func okL(lease int64) exp      { return exp{code: codec.CodeOK, lease: lease} }
func park(label string) exp    { return exp{parked: true, label: label} }
func pruned(n int) exp         { return exp{n: n} }
func timedOut(label string) fx { return fx{label, is(codec.CodeTimeout)} }

// fx is an expected completion of the parked request named label.
type fx struct {
	label string
	want  exp
}

type step struct {
	do    op
	want  exp
	fired []fx
	state string // expected dump (checked when non-empty; "-" = no keys)
	check func(t *testing.T, e *env)
}

type scenario struct {
	name  string
	cfg   func(*Config)
	steps []step
}

// env runs scenarios.
type env struct {
	t      *testing.T
	tbl    *Table
	now    int64
	owners map[uint64]*Owner
	toks   map[string]codec.Token
	recs   map[string]*rec
	fired  []*rec
}

func newEnv(t *testing.T, cfg Config) *env {
	e := &env{t: t, owners: map[uint64]*Owner{}, toks: map[string]codec.Token{}, recs: map[string]*rec{}}
	e.tbl = fakeTable(cfg, &e.now)
	// A token that was never issued, and one with a real fence but a wrong
	// salt (filled in lazily by the scenarios that need it).
	e.toks["bogus"] = codec.Token{Fence: 7, Salt: 7}
	return e
}

func (e *env) owner(id uint64) *Owner {
	o := e.owners[id]
	if o == nil {
		o = NewOwner(id)
		e.owners[id] = o
	}
	return o
}

func (e *env) token(label string) codec.Token {
	tok, ok := e.toks[label]
	if !ok {
		e.t.Fatalf("unknown token label %q", label)
	}
	return tok
}

// match compares a result with an expectation and stores tokens.
func (e *env) match(where string, got Result, want exp) {
	t := e.t
	t.Helper()
	if want.parked {
		if !got.Parked {
			t.Fatalf("%s: got %v, want parked", where, fmtRes(got))
		}
		return
	}
	if got.Parked || got.Code != want.code {
		t.Fatalf("%s: got %v, want %v", where, fmtRes(got), want.code)
	}
	if got.Lease != want.lease {
		t.Fatalf("%s: got lease %d, want %d", where, got.Lease, want.lease)
	}
	if got.Token.Fence != want.fence {
		t.Fatalf("%s: got fence %d, want %d", where, got.Token.Fence, want.fence)
	}
	if want.fence != 0 && want.label != "" {
		if old, ok := e.toks[want.label]; ok {
			if old != got.Token {
				t.Fatalf("%s: got token %v, want the token %q = %v", where, got.Token, want.label, old)
			}
		} else {
			e.toks[want.label] = got.Token
		}
	}
}

func fmtRes(r Result) string {
	if r.Parked {
		return "parked"
	}
	if r.Token.IsZero() {
		return fmt.Sprintf("%v lease=%d", r.Code, r.Lease)
	}
	return fmt.Sprintf("%v fence=%d lease=%d", r.Code, r.Token.Fence, r.Lease)
}

func (e *env) run(i int, st step) {
	t := e.t
	t.Helper()
	where := fmt.Sprintf("step %d %v", i, st.do)
	d := st.do
	e.fired = e.fired[:0]
	var cont *rec
	if d.kind == opAcquire || d.kind == opWait {
		cont = &rec{name: st.want.label, tbl: e.tbl, sink: &e.fired}
	}
	var got Result
	switch d.kind {
	case opAcquire:
		got = e.tbl.Acquire(e.owner(d.o), d.ns, []byte(d.key), d.timeout, d.limit, d.lease, cont, e.now)
	case opEnqueue:
		got = e.tbl.Enqueue(e.owner(d.o), d.ns, []byte(d.key), d.limit, d.lease, e.now)
	case opWait:
		got = e.tbl.Wait(e.owner(d.o), d.ns, []byte(d.key), d.timeout, cont, e.now)
	case opRelease:
		got = Result{Code: e.tbl.Release(d.ns, []byte(d.key), e.token(d.tok), e.now)}
	case opRenew:
		got = e.tbl.Renew(d.ns, []byte(d.key), e.token(d.tok), d.lease, e.now)
	case opClose:
		e.tbl.CloseOwner(e.owner(d.o), e.now)
		got = Result{}
	case opAt:
		e.now = d.at
	case opAdv:
		e.now = d.at
		e.tbl.Advance(e.now)
	case opGC:
		n := e.tbl.GC(e.now)
		if n != st.want.n {
			t.Fatalf("%s: GC pruned %d keys, want %d", where, n, st.want.n)
		}
	}
	switch d.kind {
	case opAcquire, opEnqueue, opWait, opRelease, opRenew:
		e.match(where, got, st.want)
		if got.Parked {
			if st.want.label == "" {
				t.Fatalf("%s: parked request needs a label", where)
			}
			e.recs[st.want.label] = cont
		}
	}
	// Completions: exactly the expected ones, each once.
	seen := map[string]bool{}
	for _, r := range e.fired {
		if seen[r.name] {
			t.Fatalf("%s: %q completed twice in one step", where, r.name)
		}
		seen[r.name] = true
	}
	for _, f := range st.fired {
		r := e.recs[f.label]
		if r == nil || !seen[f.label] {
			t.Fatalf("%s: %q did not complete (completed: %v)", where, f.label, names(e.fired))
		}
		e.match(where+" completion "+f.label, r.results[len(r.results)-1], f.want)
		delete(seen, f.label)
	}
	if len(seen) != 0 {
		t.Fatalf("%s: unexpected completions %v", where, seen)
	}
	for name, r := range e.recs {
		if len(r.results) > 1 {
			t.Fatalf("%s: %q completed %d times", where, name, len(r.results))
		}
	}
	if err := e.tbl.checkInvariants(true); err != nil {
		t.Fatalf("%s: invariant violated: %v\nstate: %s", where, err, e.tbl.dump())
	}
	if st.state != "" {
		want := st.state
		if want == "-" {
			want = ""
		}
		if got := e.tbl.dump(); got != want {
			t.Fatalf("%s: state\n got: %s\nwant: %s", where, got, want)
		}
	}
	if st.check != nil {
		st.check(t, e)
	}
}

func names(rs []*rec) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.name)
	}
	return out
}

func runScenarios(t *testing.T, base Config, scs []scenario) {
	for _, sc := range scs {
		t.Run(sc.name, func(t *testing.T) {
			cfg := base
			if sc.cfg != nil {
				sc.cfg(&cfg)
			}
			e := newEnv(t, cfg)
			for i, st := range sc.steps {
				e.run(i, st)
			}
		})
	}
}

// baseConfig: 4 shards, fences from 101, default lease 33 s, 10 ms tick,
// auto-release on.
var baseConfig = Config{Shards: 4, FenceStart: 100, DefaultLease: 33, AutoRelease: true, Tick: 10_000_000}

func keysAre(n int64) func(*testing.T, *env) {
	return func(t *testing.T, e *env) {
		t.Helper()
		if got := e.tbl.Keys(); got != n {
			t.Fatalf("Keys() = %d, want %d", got, n)
		}
	}
}

func timersAre(n int) func(*testing.T, *env) {
	return func(t *testing.T, e *env) {
		t.Helper()
		if got := e.tbl.wheelLen(); got != n {
			t.Fatalf("pending timers %d, want %d", got, n)
		}
	}
}

func neverCompleted(labels ...string) func(*testing.T, *env) {
	return func(t *testing.T, e *env) {
		t.Helper()
		for _, l := range labels {
			if r := e.recs[l]; r == nil || len(r.results) != 0 {
				t.Fatalf("%q must never complete", l)
			}
		}
	}
}

func TestScenarioLocks(t *testing.T) {
	runScenarios(t, baseConfig, []scenario{
		{name: "try once, park, hand-off on release", steps: []step{
			{do: L(1, "a", 0, 0), want: okT(101, 33, "t1"), state: "L:a h[1]"},
			{do: L(2, "a", 0, 0), want: is(codec.CodeTimeout), state: "L:a h[1]", check: timersAre(1)},
			{do: L(2, "a", 5, 10), want: park("p2"), state: "L:a h[1] w[2*]", check: timersAre(2)},
			{do: At(1000)},
			{do: R("a", "t1"), want: is(codec.CodeOK), fired: []fx{{"p2", okT(102, 10, "t2")}}, state: "L:a h[2]", check: timersAre(1)},
			{do: R("a", "t1"), want: is(codec.CodeError)},
			{do: Adv(5000), state: "L:a h[2]"}, // p2's timeout is gone with its grant
			{do: R("a", "t2"), want: is(codec.CodeOK), state: "L:a idle", check: timersAre(0)},
		}},
		{name: "locks are not re-entrant", steps: []step{
			{do: L(1, "a", 0, 0), want: okT(101, 33, "t1")},
			{do: L(1, "a", 0, 0), want: is(codec.CodeTimeout)},
			{do: L(1, "a", 2, 0), want: park("p1"), state: "L:a h[1] w[1*]"},
			{do: Adv(1990), state: "L:a h[1] w[1*]"},
			{do: Adv(2000), fired: []fx{timedOut("p1")}, state: "L:a h[1]"},
		}},
		{name: "default and explicit lease", steps: []step{
			{do: L(1, "a", 0, 0), want: okT(101, 33, "")},
			{do: L(1, "b", 0, 7), want: okT(102, 7, "")},
			{do: SL(1, "c", 0, 2, 0), want: okT(103, 33, "")},
			{do: E(1, "d", 0), want: acq(104, 33, "")},
			{do: E(1, "e", 9), want: acq(105, 9, "")},
		}},
		{name: "FIFO: a timed-out waiter keeps the others' order", steps: []step{
			{do: L(1, "a", 0, 0), want: okT(101, 33, "t1")},
			{do: L(2, "a", 1, 0), want: park("p2")},
			{do: L(3, "a", 3, 0), want: park("p3")},
			{do: L(4, "a", 3, 0), want: park("p4"), state: "L:a h[1] w[2* 3* 4*]"},
			{do: Adv(1000), fired: []fx{timedOut("p2")}, state: "L:a h[1] w[3* 4*]"},
			{do: R("a", "t1"), want: is(codec.CodeOK), fired: []fx{{"p3", okT(102, 33, "t3")}}, state: "L:a h[3] w[4*]"},
			{do: R("a", "t3"), want: is(codec.CodeOK), fired: []fx{{"p4", okT(103, 33, "t4")}}, state: "L:a h[4]"},
		}},
		{name: "l and e waiters share one FIFO queue", steps: []step{
			{do: L(1, "a", 0, 0), want: okT(101, 33, "t1")},
			{do: E(2, "a", 0), want: is(codec.CodeQueued)},
			{do: L(3, "a", 5, 0), want: park("p3")},
			{do: E(4, "a", 0), want: is(codec.CodeQueued), state: "L:a h[1] w[2e 3* 4e]"},
			{do: R("a", "t1"), want: is(codec.CodeOK), state: "L:a h[2e] w[3* 4e]"},
			{do: W(2, "a", 0), want: okT(102, 33, "t2")},
			{do: R("a", "t2"), want: is(codec.CodeOK), fired: []fx{{"p3", okT(103, 33, "t3")}}, state: "L:a h[3] w[4e]"},
			{do: W(4, "a", 1), want: park("p4")},
			{do: R("a", "t3"), want: is(codec.CodeOK), fired: []fx{{"p4", okT(104, 33, "t4")}}, state: "L:a h[4]"},
		}},
		{name: "namespaces are separate", steps: []step{
			{do: L(1, "foo", 0, 0), want: okT(101, 33, "tl")},
			{do: SL(2, "foo", 0, 1, 0), want: okT(102, 33, "ts")},
			{do: SL(3, "foo", 0, 2, 0), want: is(codec.CodeErrorLimitMismatch)},
			{do: R("foo", "ts"), want: is(codec.CodeError)},
			{do: SR("foo", "tl"), want: is(codec.CodeError)},
			{do: N("foo", "ts", 0), want: is(codec.CodeError)},
			{do: SN("foo", "tl", 0), want: is(codec.CodeError)},
			{do: E(2, "foo", 0), want: is(codec.CodeQueued)},
			{do: SW(2, "foo", 0), want: is(codec.CodeErrorNotEnqueued), state: "L:foo h[1] w[2e] | S:foo h[2]"},
			{do: R("foo", "tl"), want: is(codec.CodeOK)},
			{do: SR("foo", "ts"), want: is(codec.CodeOK), state: "L:foo h[2e] | S:foo idle"},
		}},
		{name: "release and renew by anyone, unknown token is an error", steps: []step{
			{do: L(1, "a", 0, 0), want: okT(101, 33, "t1")},
			{do: R("a", "bogus"), want: is(codec.CodeError)},
			{do: N("a", "bogus", 0), want: is(codec.CodeError)},
			{do: R("nokey", "t1"), want: is(codec.CodeError)},
			{do: N("nokey", "t1", 0), want: is(codec.CodeError)},
			{do: L(2, "b", 0, 0), want: okT(102, 33, "t2")},
			{do: R("b", "t1"), want: is(codec.CodeError)}, // a token of another key
			{do: N("a", "t1", 5), want: okL(5)},           // no owner needed
			{do: R("a", "t1"), want: is(codec.CodeOK), state: "L:a idle | L:b h[2]"},
			{do: R("a", "t1"), want: is(codec.CodeError)},
			{do: N("a", "t1", 0), want: is(codec.CodeError)},
		}},
	})
}

func TestScenarioSemaphores(t *testing.T) {
	runScenarios(t, baseConfig, []scenario{
		{name: "limit holders, strict FIFO", steps: []step{
			{do: SL(1, "s", 0, 2, 0), want: okT(101, 33, "a1")},
			{do: SL(2, "s", 0, 2, 0), want: okT(102, 33, "a2")},
			{do: SL(3, "s", 0, 2, 0), want: is(codec.CodeTimeout)},
			{do: SL(3, "s", 5, 2, 0), want: park("p3")},
			{do: SL(4, "s", 5, 2, 0), want: park("p4")},
			{do: SE(5, "s", 2, 0), want: is(codec.CodeQueued), state: "S:s h[1 2] w[3* 4* 5e]"},
			{do: SR("s", "a1"), want: is(codec.CodeOK), fired: []fx{{"p3", okT(103, 33, "a3")}}, state: "S:s h[2 3] w[4* 5e]"},
			// The slot went to the head of the queue: a newcomer still waits.
			{do: SL(6, "s", 0, 2, 0), want: is(codec.CodeTimeout)},
			{do: SR("s", "a2"), want: is(codec.CodeOK), fired: []fx{{"p4", okT(104, 33, "a4")}}, state: "S:s h[3 4] w[5e]"},
			{do: SR("s", "a3"), want: is(codec.CodeOK), state: "S:s h[4 5e]"},
			{do: SW(5, "s", 0), want: okT(105, 33, "a5"), state: "S:s h[4 5]"},
			{do: SL(1, "s", 0, 2, 0), want: is(codec.CodeTimeout)},
		}},
		{name: "the first request fixes the limit while the key exists", steps: []step{
			{do: SL(1, "s", 0, 2, 0), want: okT(101, 33, "a1")},
			{do: SL(2, "s", 0, 3, 0), want: is(codec.CodeErrorLimitMismatch)},
			{do: SL(2, "s", 5, 1, 0), want: is(codec.CodeErrorLimitMismatch)},
			{do: SE(2, "s", 3, 0), want: is(codec.CodeErrorLimitMismatch)},
			{do: SE(2, "s", 2, 0), want: acq(102, 33, "a2"), state: "S:s h[1 2e]"},
			{do: SR("s", "a1"), want: is(codec.CodeOK)},
			{do: SR("s", "a2"), want: is(codec.CodeOK), state: "S:s idle"},
			{do: SL(3, "s", 0, 3, 0), want: is(codec.CodeErrorLimitMismatch)}, // idle, still exists
			{do: At(59_999), check: keysAre(1)},
			{do: GC(), want: pruned(0)},
			{do: At(60_000)},
			{do: GC(), want: pruned(1), state: "-", check: keysAre(0)},
			{do: SL(3, "s", 0, 3, 0), want: okT(103, 33, "a3"), state: "S:s h[3]"},
		}},
		{name: "renew a slot", steps: []step{
			{do: SL(1, "s", 0, 3, 2), want: okT(101, 2, "a1")},
			{do: SL(2, "s", 0, 3, 2), want: okT(102, 2, "a2")},
			{do: At(1500)},
			{do: SN("s", "a1", 4), want: okL(4)},
			{do: Adv(2000), state: "S:s h[1]"},
			{do: Adv(5490), state: "S:s h[1]"},
			{do: Adv(5500), state: "S:s idle"},
			{do: SN("s", "a1", 0), want: is(codec.CodeError)},
		}},
	})
}

func TestScenarioLimits(t *testing.T) {
	runScenarios(t, baseConfig, []scenario{
		{name: "max waiters is checked at once, a try counts", cfg: func(c *Config) { c.MaxWaiters = 1 }, steps: []step{
			{do: L(1, "a", 0, 0), want: okT(101, 33, "t1")},
			{do: L(2, "a", 5, 0), want: park("p2")},
			{do: L(3, "a", 0, 0), want: is(codec.CodeErrorMaxWaiters)},
			{do: L(3, "a", 5, 0), want: is(codec.CodeErrorMaxWaiters)},
			{do: E(4, "a", 0), want: is(codec.CodeErrorMaxWaiters), state: "L:a h[1] w[2*]"},
			{do: W(4, "a", 0), want: is(codec.CodeErrorNotEnqueued)},
			{do: Adv(5000), fired: []fx{timedOut("p2")}, state: "L:a h[1]"},
			{do: L(3, "a", 0, 0), want: is(codec.CodeTimeout)},
			{do: E(4, "a", 0), want: is(codec.CodeQueued)},
			{do: SL(5, "s", 0, 1, 0), want: okT(102, 33, "")},
			{do: SE(6, "s", 1, 0), want: is(codec.CodeQueued)},
			{do: SE(7, "s", 1, 0), want: is(codec.CodeErrorMaxWaiters), state: "L:a h[1] w[4e] | S:s h[5] w[6e]"},
		}},
		{name: "max locks: refused at once, idle keys reclaimed oldest first", cfg: func(c *Config) { c.MaxLocks = 2; c.Shards = 1 }, steps: []step{
			{do: L(1, "a", 0, 0), want: okT(101, 33, "ta")},
			{do: SL(1, "b", 0, 2, 0), want: okT(102, 33, "tb")},
			{do: L(1, "c", 5, 0), want: is(codec.CodeErrorMaxLocks), check: keysAre(2)},
			{do: E(1, "c", 0), want: is(codec.CodeErrorMaxLocks)},
			{do: SL(1, "c", 5, 1, 0), want: is(codec.CodeErrorMaxLocks)},
			{do: L(2, "a", 5, 0), want: park("pa")}, // existing keys work
			{do: At(1000)},
			{do: R("a", "ta"), want: is(codec.CodeOK), fired: []fx{{"pa", okT(103, 33, "ta2")}}},
			{do: R("a", "ta2"), want: is(codec.CodeOK), state: "L:a idle | S:b h[1]"},
			{do: L(1, "c", 0, 0), want: okT(104, 33, "tc"), state: "L:c h[1] | S:b h[1]"},
			{do: SR("b", "tb"), want: is(codec.CodeOK)},
			{do: At(2000)},
			{do: R("c", "tc"), want: is(codec.CodeOK), state: "L:c idle | S:b idle"},
			{do: L(2, "d", 0, 0), want: okT(105, 33, ""), state: "L:c idle | L:d h[2]"},
			{do: SE(2, "e", 3, 0), want: acq(106, 33, ""), state: "L:d h[2] | S:e h[2e]", check: keysAre(2)},
			{do: L(3, "f", 0, 0), want: is(codec.CodeErrorMaxLocks)},
		}},
		// PROTOCOL.md: a key with no holder and no waiter is idle and
		// reclaimed before a new key is refused. An uncollected expired
		// two-phase grant does not change that (it would let one
		// connection fill the budget with keys stats shows nowhere): the
		// key goes with its tombstone, and the owner's next w still answers
		// error_lease_expired (once; then error_not_enqueued).
		{name: "gc prunes a key named only by a two-phase tombstone", steps: []step{
			{do: SE(1, "s", 2, 1), want: acq(101, 1, "")},
			{do: Adv(1000), state: "S:s idle x1"},
			{do: At(60_999), check: keysAre(1)},
			{do: GC(), want: pruned(0)},
			{do: At(61_000)},
			{do: GC(), want: pruned(1), state: "-", check: keysAre(0)},
			{do: SW(2, "s", 0), want: is(codec.CodeErrorNotEnqueued)}, // another owner
			{do: SW(1, "s", 0), want: is(codec.CodeErrorLeaseExpired)},
			{do: SW(1, "s", 0), want: is(codec.CodeErrorNotEnqueued)},
			{do: SE(1, "s", 3, 1), want: acq(102, 1, ""), state: "S:s h[1e]"},
		}},
		{name: "max locks: a two-phase tombstone does not pin its key", cfg: func(c *Config) { c.MaxLocks = 1 }, steps: []step{
			{do: E(1, "a", 1), want: acq(101, 1, "")},
			{do: Adv(1000), state: "L:a idle x1"},
			{do: L(2, "b", 0, 0), want: okT(102, 33, ""), state: "L:b h[2]"},
			{do: W(1, "a", 0), want: is(codec.CodeErrorLeaseExpired)},
			{do: W(1, "a", 0), want: is(codec.CodeErrorNotEnqueued)},
			{do: E(1, "a", 1), want: is(codec.CodeErrorMaxLocks)},
		}},
		{name: "a lapsed key: a new e on it starts afresh", cfg: func(c *Config) { c.MaxLocks = 1 }, steps: []step{
			{do: E(1, "a", 1), want: acq(101, 1, "")},
			{do: Adv(1000), state: "L:a idle x1"},
			{do: L(2, "b", 0, 0), want: okT(102, 33, "tb"), state: "L:b h[2]"},
			{do: R("b", "tb"), want: is(codec.CodeOK)},
			{do: E(1, "a", 1), want: acq(103, 1, "ta"), state: "L:a h[1e]"},
			{do: W(1, "a", 0), want: okT(103, 1, "ta")},
			{do: W(1, "a", 0), want: is(codec.CodeErrorNotEnqueued)},
		}},
		{name: "max semaphore limit: a larger limit is an error, creates nothing", cfg: func(c *Config) { c.MaxSemaphoreLimit = 3 }, steps: []step{
			{do: SL(1, "s", 0, 4, 0), want: is(codec.CodeError), state: "-", check: keysAre(0)},
			{do: SE(1, "s", 4, 0), want: is(codec.CodeError), state: "-", check: keysAre(0)},
			{do: SL(1, "s", 0, 3, 0), want: okT(101, 33, "")},
			{do: SE(2, "s", 3, 0), want: acq(102, 33, "")},
			// Locks have no limit to check.
			{do: L(3, "s", 0, 0), want: okT(103, 33, "")},
		}},
	})
}

func TestScenarioLeases(t *testing.T) {
	runScenarios(t, baseConfig, []scenario{
		{name: "renew answers the TTL it applied and moves the expiry", steps: []step{
			{do: L(1, "a", 0, 10), want: okT(101, 10, "t1")},
			{do: At(5000)},
			{do: N("a", "t1", 0), want: okL(33)},
			{do: At(6000)},
			{do: N("a", "t1", 4), want: okL(4)},
			{do: Adv(9990), state: "L:a h[1]"},
			{do: Adv(10_000), state: "L:a idle", check: timersAre(0)},
			{do: N("a", "t1", 0), want: is(codec.CodeError)},
			{do: R("a", "t1"), want: is(codec.CodeError)},
		}},
		{name: "lease expiry hands the lock to the next waiter", steps: []step{
			{do: L(1, "a", 0, 2), want: okT(101, 2, "t1")},
			{do: L(2, "a", 5, 3), want: park("p2")},
			{do: Adv(2000), fired: []fx{{"p2", okT(102, 3, "t2")}}, state: "L:a h[2]"},
			{do: R("a", "t1"), want: is(codec.CodeError)},
			{do: Adv(4990), state: "L:a h[2]"},
			{do: Adv(5000), state: "L:a idle"},
		}},
		{name: "an expired lease is evicted by renew before its timer fires", steps: []step{
			{do: L(1, "a", 0, 1), want: okT(101, 1, "t1")},
			{do: L(2, "a", 5, 0), want: park("p2")},
			{do: At(1000)}, // expires == now; no Advance yet
			{do: N("a", "t1", 0), want: is(codec.CodeError), fired: []fx{{"p2", okT(102, 33, "t2")}}, state: "L:a h[2]"},
			{do: N("a", "t1", 0), want: is(codec.CodeError)},
		}},
		{name: "an expired lease is evicted by release before its timer fires", steps: []step{
			{do: SL(1, "s", 0, 2, 1), want: okT(101, 1, "t1")},
			{do: At(1500), check: timersAre(1)},
			{do: SR("s", "t1"), want: is(codec.CodeError), state: "S:s idle", check: timersAre(0)},
			{do: Adv(2000), state: "S:s idle"},
		}},
		{name: "timers fire at most one tick late, never early", steps: []step{
			// expires at 1.003000001 s: deadline tick ceil(100.3000001) = 101.
			{do: AtNs(3_000_001)},
			{do: L(1, "a", 0, 1), want: okT(101, 1, "")},
			{do: L(2, "b", 0, 0), want: okT(102, 33, "")},
			{do: L(3, "b", 1, 0), want: park("p3")}, // the same deadline
			{do: AdvNs(1_003_000_000), state: "L:a h[1] | L:b h[2] w[3*]"},
			{do: AdvNs(1_003_000_001), state: "L:a h[1] | L:b h[2] w[3*]"},
			{do: AdvNs(1_009_999_999), state: "L:a h[1] | L:b h[2] w[3*]"},
			{do: AdvNs(1_010_000_000), fired: []fx{timedOut("p3")}, state: "L:a idle | L:b h[2]"},
			// A tick-aligned deadline fires at that tick.
			{do: AtNs(2_000_000_000)},
			{do: L(4, "c", 0, 1), want: okT(103, 1, "")},
			{do: AdvNs(2_999_999_999), state: "L:a idle | L:b h[2] | L:c h[4]"},
			{do: AdvNs(3_000_000_000), state: "L:a idle | L:b h[2] | L:c idle"},
		}},
		{name: "a late Advance resolves everything due, in deadline order", steps: []step{
			{do: L(1, "a", 0, 1), want: okT(101, 1, "")},
			{do: At(10)},
			{do: L(2, "a", 3, 2), want: park("p2")}, // granted at the Advance: 1 s lease then
			{do: At(20)},
			{do: L(3, "a", 1, 0), want: park("p3")}, // times out (1.02 s) after a's expiry (1 s) but before p2's grant ends
			{do: Adv(10_000), fired: []fx{{"p2", okT(102, 2, "")}, timedOut("p3")}, state: "L:a h[2]"},
			{do: Adv(11_990), state: "L:a h[2]"},
			{do: Adv(12_000), state: "L:a idle"},
		}},
	})
}

func TestScenarioTwoPhase(t *testing.T) {
	runScenarios(t, baseConfig, []scenario{
		{name: "fast path: w collects the grant and restarts the lease", steps: []step{
			{do: E(1, "a", 5), want: acq(101, 5, "t1"), state: "L:a h[1e]"},
			{do: At(3000)},
			{do: W(1, "a", 0), want: okT(101, 5, "t1"), state: "L:a h[1]", check: func(t *testing.T, e *env) {
				if got := e.tbl.Stats(e.now).Locks[0].LeaseExpiresInS; got != 5 {
					t.Fatalf("lease_expires_in_s %v, want 5", got)
				}
			}},
			{do: Adv(5000), state: "L:a h[1]"},
			{do: Adv(8000), state: "L:a idle"},
		}},
		{name: "granted while queued: w collects the same token", steps: []step{
			{do: L(1, "a", 0, 0), want: okT(101, 33, "t1")},
			{do: E(2, "a", 4), want: is(codec.CodeQueued), state: "L:a h[1] w[2e]"},
			{do: At(1000)},
			{do: R("a", "t1"), want: is(codec.CodeOK), state: "L:a h[2e]"},
			{do: At(3000)},
			{do: W(2, "a", 5), want: okT(102, 4, "t2"), state: "L:a h[2]"},
			{do: Adv(6990), state: "L:a h[2]"},
			{do: Adv(7000), state: "L:a idle"},
		}},
		{name: "fast-path grant expired before w", steps: []step{
			{do: E(1, "a", 1), want: acq(101, 1, "t1")},
			{do: Adv(1000), state: "L:a idle x1", check: timersAre(0)},
			{do: R("a", "t1"), want: is(codec.CodeError)},
			{do: W(1, "a", 5), want: is(codec.CodeErrorLeaseExpired), state: "L:a idle"},
			{do: W(1, "a", 5), want: is(codec.CodeErrorNotEnqueued)},
		}},
		{name: "queued grant expired before w", steps: []step{
			{do: L(1, "a", 0, 0), want: okT(101, 33, "t1")},
			{do: E(2, "a", 1), want: is(codec.CodeQueued)},
			{do: At(500)},
			{do: R("a", "t1"), want: is(codec.CodeOK), state: "L:a h[2e]"},
			{do: Adv(1490), state: "L:a h[2e]"},
			{do: Adv(1500), state: "L:a idle x1"},
			{do: W(2, "a", 0), want: is(codec.CodeErrorLeaseExpired), state: "L:a idle"},
			{do: W(2, "a", 0), want: is(codec.CodeErrorNotEnqueued)},
		}},
		{name: "expired grant is never collected, even before its timer fires", steps: []step{
			{do: E(1, "a", 1), want: acq(101, 1, "t1")},
			{do: L(2, "a", 5, 0), want: park("p2")},
			{do: At(1000)},
			{do: W(1, "a", 5), want: is(codec.CodeErrorLeaseExpired), fired: []fx{{"p2", okT(102, 33, "")}}, state: "L:a h[2]"},
			{do: W(1, "a", 5), want: is(codec.CodeErrorNotEnqueued)},
		}},
		{name: "w without e", steps: []step{
			{do: W(1, "a", 0), want: is(codec.CodeErrorNotEnqueued), state: "-"},
			{do: L(2, "a", 0, 0), want: okT(101, 33, "t2")},
			{do: W(1, "a", 3), want: is(codec.CodeErrorNotEnqueued)},
			{do: W(2, "a", 3), want: is(codec.CodeErrorNotEnqueued)}, // a hold by l is not two-phase
			{do: E(1, "a", 0), want: is(codec.CodeQueued)},
			{do: W(1, "b", 0), want: is(codec.CodeErrorNotEnqueued)},
			{do: SW(1, "a", 0), want: is(codec.CodeErrorNotEnqueued)},
		}},
		{name: "released before w: nothing to collect", steps: []step{
			{do: E(1, "a", 0), want: acq(101, 33, "t1")},
			{do: R("a", "t1"), want: is(codec.CodeOK)},
			{do: W(1, "a", 0), want: is(codec.CodeErrorNotEnqueued)},
		}},
		{name: "e twice is refused; after w, e queues behind the own hold", steps: []step{
			{do: E(1, "a", 0), want: acq(101, 33, "t1")},
			{do: E(1, "a", 0), want: is(codec.CodeErrorAlreadyEnqueued)},
			{do: W(1, "a", 0), want: okT(101, 33, "t1")},
			{do: E(1, "a", 0), want: is(codec.CodeQueued), state: "L:a h[1] w[1e]"},
			{do: E(1, "a", 0), want: is(codec.CodeErrorAlreadyEnqueued)},
			{do: E(2, "a", 0), want: is(codec.CodeQueued)},
			{do: W(1, "a", 0), want: is(codec.CodeTimeout), state: "L:a h[1] w[2e]"},
			{do: W(1, "a", 0), want: is(codec.CodeErrorNotEnqueued)},
			{do: L(1, "a", 0, 0), want: is(codec.CodeTimeout)},
		}},
		{name: "w parks and is granted by a release", steps: []step{
			{do: L(1, "a", 0, 0), want: okT(101, 33, "t1")},
			{do: E(2, "a", 7), want: is(codec.CodeQueued)},
			{do: W(2, "a", 5), want: park("p2"), state: "L:a h[1] w[2e*]"},
			{do: At(1000)},
			{do: R("a", "t1"), want: is(codec.CodeOK), fired: []fx{{"p2", okT(102, 7, "t2")}}, state: "L:a h[2]"},
			{do: W(2, "a", 0), want: is(codec.CodeErrorNotEnqueued)},
			{do: Adv(7990), state: "L:a h[2]"},
			{do: Adv(8000), state: "L:a idle"},
		}},
		{name: "a w that times out leaves the queue", steps: []step{
			{do: L(1, "a", 0, 0), want: okT(101, 33, "t1")},
			{do: E(2, "a", 0), want: is(codec.CodeQueued)},
			{do: E(3, "a", 0), want: is(codec.CodeQueued)},
			{do: W(2, "a", 1), want: park("p2")},
			{do: Adv(1000), fired: []fx{timedOut("p2")}, state: "L:a h[1] w[3e]"},
			{do: W(2, "a", 1), want: is(codec.CodeErrorNotEnqueued)},
			{do: R("a", "t1"), want: is(codec.CodeOK), state: "L:a h[3e]"},
		}},
		{name: "e after an uncollected expired grant starts afresh", steps: []step{
			{do: E(1, "a", 1), want: acq(101, 1, "")},
			{do: Adv(1000), state: "L:a idle x1"},
			{do: E(1, "a", 2), want: acq(102, 2, "t2"), state: "L:a h[1e]"},
			{do: W(1, "a", 0), want: okT(102, 2, "t2")},
		}},
		{name: "e evicts its own expired grant even before its timer fires", steps: []step{
			{do: E(1, "a", 1), want: acq(101, 1, "t1")},
			{do: L(2, "a", 5, 0), want: park("p2")},
			{do: At(1000)},
			{do: E(1, "a", 1), want: is(codec.CodeQueued), fired: []fx{{"p2", okT(102, 33, "")}}, state: "L:a h[2] w[1e]"},
			{do: R("a", "t1"), want: is(codec.CodeError)},
		}},
		{name: "semaphore two-phase", steps: []step{
			{do: SE(1, "s", 2, 0), want: acq(101, 33, "a1")},
			{do: SE(2, "s", 2, 0), want: acq(102, 33, "a2")},
			{do: SE(3, "s", 2, 0), want: is(codec.CodeQueued)},
			{do: SW(3, "s", 2), want: park("p3")},
			{do: SW(2, "s", 0), want: okT(102, 33, "a2")},
			{do: SR("s", "a1"), want: is(codec.CodeOK), fired: []fx{{"p3", okT(103, 33, "")}}, state: "S:s h[2 3]"},
		}},
	})
}

func TestScenarioCloseOwner(t *testing.T) {
	runScenarios(t, baseConfig, []scenario{
		{name: "auto-release: waiters and two-phase state dropped, holdings handed on", steps: []step{
			{do: L(1, "a", 0, 0), want: okT(101, 33, "ta")},
			{do: L(2, "b", 0, 0), want: okT(102, 33, "tb")},
			{do: L(1, "b", 5, 0), want: park("p1")},
			{do: L(3, "c", 0, 0), want: okT(103, 33, "tc")},
			{do: E(1, "c", 0), want: is(codec.CodeQueued)},
			{do: E(1, "d", 1), want: acq(104, 1, "td")},
			{do: Adv(1000)},
			{do: L(2, "a", 5, 0), want: park("p2")},
			{do: SE(1, "s", 2, 0), want: acq(105, 33, "ts")},
			{do: SE(4, "s", 2, 0), want: acq(106, 33, "")},
			{do: SL(2, "t", 5, 1, 0), want: okT(107, 33, "")},
			{do: SE(1, "t", 1, 0), want: is(codec.CodeQueued),
				state: "L:a h[1] w[2*] | L:b h[2] w[1*] | L:c h[3] w[1e] | L:d idle x1 | S:s h[1e 4e] | S:t h[2] w[1e]"},
			{do: Close(1), fired: []fx{{"p2", okT(108, 33, "")}},
				state: "L:a h[2] | L:b h[2] | L:c h[3] | L:d idle | S:s h[4e] | S:t h[2]"},
			{do: R("a", "ta"), want: is(codec.CodeError)},
			{do: Adv(20_000), check: neverCompleted("p1")},
			{do: Close(1)}, // twice is harmless
		}},
		{name: "auto-release off: holdings stay until their lease ends", cfg: func(c *Config) { c.AutoRelease = false }, steps: []step{
			{do: L(1, "a", 0, 2), want: okT(101, 2, "ta")},
			{do: E(1, "b", 3), want: acq(102, 3, "tb")},
			{do: L(1, "c", 0, 0), want: okT(103, 33, "tc")},
			{do: L(2, "a", 5, 0), want: park("p2")},
			{do: L(3, "b", 5, 0), want: park("p3")},
			{do: L(2, "z", 0, 0), want: okT(104, 33, "")},
			{do: L(1, "z", 5, 0), want: park("p1")},
			{do: Close(1), state: "L:a h[0] w[2*] | L:b h[0] w[3*] | L:c h[0] | L:z h[2]", check: func(t *testing.T, e *env) {
				st := e.tbl.Stats(e.now)
				if st.Locks[0].OwnerConnID != 1 {
					t.Fatalf("stats owner_conn_id %d, want 1", st.Locks[0].OwnerConnID)
				}
			}},
			{do: W(1, "b", 0), want: is(codec.CodeErrorNotEnqueued)},
			{do: Adv(2000), fired: []fx{{"p2", okT(105, 33, "")}}, state: "L:a h[2] | L:b h[0] w[3*] | L:c h[0] | L:z h[2]"},
			// An orphaned two-phase grant leaves no tombstone.
			{do: Adv(3000), fired: []fx{{"p3", okT(106, 33, "")}}, state: "L:a h[2] | L:b h[3] | L:c h[0] | L:z h[2]"},
			// Its token still works for anyone.
			{do: N("c", "tc", 0), want: okL(33)},
			{do: R("c", "tc"), want: is(codec.CodeOK), state: "L:a h[2] | L:b h[3] | L:c idle | L:z h[2]", check: neverCompleted("p1")},
		}},
		{name: "close drops a parked w at once", steps: []step{
			{do: L(1, "a", 0, 0), want: okT(101, 33, "ta")},
			{do: E(2, "a", 0), want: is(codec.CodeQueued)},
			{do: W(2, "a", 5), want: park("p2")},
			{do: E(3, "a", 0), want: is(codec.CodeQueued)},
			{do: Close(2), state: "L:a h[1] w[3e]", check: timersAre(1)},
			{do: R("a", "ta"), want: is(codec.CodeOK), state: "L:a h[3e]", check: neverCompleted("p2")},
		}},
		{name: "close of a semaphore holder with several slots", steps: []step{
			{do: SL(1, "s", 0, 3, 0), want: okT(101, 33, "")},
			{do: SL(1, "s", 0, 3, 0), want: okT(102, 33, "")},
			{do: SL(2, "s", 0, 3, 0), want: okT(103, 33, "")},
			{do: SL(3, "s", 5, 3, 0), want: park("p3")},
			{do: SE(4, "s", 3, 0), want: is(codec.CodeQueued)},
			{do: SE(5, "s", 3, 0), want: is(codec.CodeQueued)},
			{do: Close(1), fired: []fx{{"p3", okT(104, 33, "")}}, state: "S:s h[2 3 4e] w[5e]"},
		}},
	})
}

func TestScenarioStats(t *testing.T) {
	now := int64(0)
	tbl := fakeTable(Config{Shards: 8, FenceStart: 100}, &now)
	o1, o2 := NewOwner(11), NewOwner(22)
	c := &rec{tbl: tbl}
	empty := tbl.Stats(now)
	if empty.Locks == nil || empty.Semaphores == nil || empty.IdleLocks == nil || empty.IdleSemaphores == nil {
		t.Fatal("empty stats lists must not be nil")
	}
	tbl.Acquire(o1, Locks, []byte("b"), 0, 1, 10, nil, now)
	tbl.Acquire(o2, Locks, []byte("b"), 5, 1, 0, c, now)
	tbl.Acquire(o1, Semaphores, []byte("s"), 0, 3, 0, nil, now)
	tok := tbl.Acquire(o1, Locks, []byte("a"), 0, 1, 0, nil, now).Token
	now = 2 * sec
	tbl.Release(Locks, []byte("a"), tok, now)
	tok = tbl.Acquire(o2, Semaphores, []byte("i"), 0, 2, 0, nil, now).Token
	tbl.Release(Semaphores, []byte("i"), tok, now)
	now = 3500 * msec
	got := tbl.Stats(now)
	want := Snapshot{
		Locks:          []LockStat{{Key: "b", OwnerConnID: 11, LeaseExpiresInS: 6.5, Waiters: 1}},
		Semaphores:     []SemStat{{Key: "s", Limit: 3, Holders: 1, Waiters: 0}},
		IdleLocks:      []IdleStat{{Key: "a", IdleS: 1.5}},
		IdleSemaphores: []IdleStat{{Key: "i", IdleS: 1.5}},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("stats\n got %+v\nwant %+v", got, want)
	}
	mustInvariants(t, tbl)
}

func TestFenceStartAndOrder(t *testing.T) {
	now := int64(0)
	const start = 1 << 40
	tbl := fakeTable(Config{Shards: 16, FenceStart: start}, &now)
	o := NewOwner(1)
	salts := map[uint64]bool{}
	for i := range 200 {
		ns := Namespace(i % 2)
		r := tbl.Acquire(o, ns, fmt.Appendf(nil, "k%d", i), 0, 2, 0, nil, now)
		if r.Code != codec.CodeOK || r.Token.Fence != start+uint64(i)+1 {
			t.Fatalf("grant %d: %v", i, fmtRes(r))
		}
		salts[r.Token.Salt] = true
	}
	if len(salts) < 199 {
		t.Fatalf("salts repeat: %d distinct of 200", len(salts))
	}
	if tbl.Fence() != start+200 {
		t.Fatalf("Fence() = %d", tbl.Fence())
	}
	mustInvariants(t, tbl)
}
