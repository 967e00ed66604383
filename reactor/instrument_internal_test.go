package reactor

import (
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/lockreactor/dflockd/codec"
	"github.com/lockreactor/dflockd/lockcore"
)

type nopTransport struct{}

func (nopTransport) wake() {}

// BenchmarkSessionRequest is the request path without sockets: decode, run
// against the lock table, count, reply, and the per-read-event metrics
// work (latency batch and busy time), with request metrics off and on.
// The request is an `l` with timeout 0 on a key another owner holds: it
// answers timeout at once and leaves the table as it was.
func BenchmarkSessionRequest(b *testing.B) {
	for _, on := range []bool{false, true} {
		name := map[bool]string{false: "metrics=off", true: "metrics=on"}[on]
		b.Run(name, func(b *testing.B) {
			tbl := lockcore.New(lockcore.Config{})
			cfg := Config{Metrics: on}
			cfg.setDefaults()
			srv := &Server{cfg: cfg, table: tbl, log: cfg.Logger}
			if on {
				for i := range srv.tlsSinks {
					srv.tlsSinks[i] = new(sink)
				}
			}
			holder := lockcore.NewOwner(1)
			if r := tbl.Acquire(holder, lockcore.Locks, []byte("k"), 0, 1, 0, nil, tbl.Now()); r.Code != codec.CodeOK {
				b.Fatal(r.Code)
			}
			var s session
			s.init(srv, nopTransport{}, tbl.Now())
			s.mt = srv.meteredForTLS(1)
			// The loop's per-callback busy span (enter, leave) and the
			// batch latency (traffic's deferred endTraffic).
			lt := &loopTimers{srv: srv}
			if on {
				lt.lm = srv.newLoopMetrics(nil)
			}
			in := []byte("l\nk\n0\n")
			b.ReportAllocs()
			for b.Loop() {
				lt.beginBusy()
				now := lt.clock()
				if n := s.handle(in, now, 64<<10); n != len(in) {
					b.Fatal(n)
				}
				if on {
					s.mt.endTraffic(srv, now)
				}
				lt.endBusy()
				if string(s.out) != "timeout\n" {
					b.Fatalf("%q", s.out)
				}
				s.out = s.out[:0]
			}
		})
	}
}

// TestLoopBusySpans: a loop's busy time runs from the start of an
// outermost callback (or timer run) to the end of its leave, a callback
// nested in a timer run counts once, and the reading that starts a span
// is reused as the work's first now.
func TestLoopBusySpans(t *testing.T) {
	var clk int64
	tbl := lockcore.New(lockcore.Config{Clock: func() int64 { return clk }})
	cfg := Config{Metrics: true}
	cfg.setDefaults()
	srv := &Server{cfg: cfg, table: tbl, log: cfg.Logger, stopCh: make(chan struct{})}
	h := &gnetHandler{srv: srv}
	lt := &loopTimers{srv: srv, lm: srv.newLoopMetrics(nil)}
	busy := func() time.Duration { return time.Duration(lt.lm.sink.busy.Load()) }

	// A timer run (Run) that closes a connection (OnClose, nested).
	clk = 100
	lt.beginBusy()
	clk = 150
	if now := lt.clock(); now != 100 {
		t.Fatalf("first clock() = %d, want the span's start 100", now)
	}
	if now := lt.clock(); now != 150 {
		t.Fatalf("second clock() = %d, want a new reading 150", now)
	}
	lt.enter()
	clk = 170
	h.leave(lt, nil, gnet.None)
	if got := busy(); got != 0 {
		t.Fatalf("busy %v after a nested callback, want 0 until the run ends", got)
	}
	clk = 200
	lt.endBusy()
	if got := busy(); got != 100 {
		t.Fatalf("busy %v after the timer run, want 100", got)
	}

	// A top-level callback, with a nested one inside it.
	clk = 300
	lt.enter()
	lt.enter()
	clk = 320
	h.leave(lt, nil, gnet.None)
	clk = 350
	h.leave(lt, nil, gnet.None)
	if got := busy(); got != 150 {
		t.Fatalf("busy %v after a callback, want 100 + 50", got)
	}
	if lt.depth != 0 || lt.busyDepth != 0 || lt.active.Load() || lt.fresh {
		t.Fatalf("loop state after the callbacks: depth %d busyDepth %d active %v fresh %v",
			lt.depth, lt.busyDepth, lt.active.Load(), lt.fresh)
	}

	// Metrics off: no spans, clock() reads the clock.
	off := &loopTimers{srv: srv}
	off.enter()
	clk = 400
	if now := off.clock(); now != 400 {
		t.Fatalf("clock() = %d with metrics off, want 400", now)
	}
	h.leave(off, nil, gnet.None)
	if off.busyDepth != 0 || off.fresh {
		t.Fatal("metrics off: a busy span was started")
	}
}
