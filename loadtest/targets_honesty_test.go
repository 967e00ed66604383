package loadtest

import (
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// The target rows must not flatter the server: a row reads its own
// comparison, and misses (saying why) when the scenario had errors or did
// not get every answer it asked for.

// findAB matches whole labels: "bench-10" is not a prefix match for
// "bench-100" or "bench-1000". When the bench-10 comparison is missing its
// rows say "(not run)", and in any file order they read bench-10's own
// figures.
func TestTargetsMatchWholeLabel(t *testing.T) {
	var run []*ABResult
	for _, ab := range passingRun() {
		if ab.Label != "bench-10" {
			run = append(run, ab)
		}
	}
	for _, row := range []string{"bench 10: throughput", "bench 10: server CPU"} {
		l := targetRow(t, run, row)
		if !strings.Contains(l, "(not run)") {
			t.Errorf("bench-10 was not run, yet its row reads another comparison: %q", l)
		}
	}

	// Order: bench-100 (holds) before bench-10, which misses its
	// throughput target (0.50 of the ceiling).
	run = passingRun()
	b10 := findAB(run, "bench-10")
	f, err := fig(b10, "throughput")
	if err != nil {
		t.Fatal(err)
	}
	low := 50.0
	f.MedianA, f.Ratio = &low, ratio(&low, f.MedianB)
	var reordered []*ABResult
	for _, ab := range run {
		if ab != b10 {
			reordered = append(reordered, ab)
		}
	}
	reordered = append(reordered, b10)
	l := targetRow(t, reordered, "bench 10: throughput")
	if !strings.Contains(l, "MISSED") {
		t.Errorf("bench-10 measured 0.50 of the ceiling, yet its row reads bench-100's figure and holds: %q", l)
	}
}

// Every row misses when its comparison's A side had errors, and says so.
func TestTargetsMissOnErrors(t *testing.T) {
	run := passingRun()
	findAB(run, "bench-100").A.Errors = 3
	for _, row := range []string{"bench 100: throughput", "bench 100: server CPU"} {
		l := targetRow(t, run, row)
		if rowHeld(l) || !strings.Contains(l, "3 errors") {
			t.Errorf("bench-100 had 3 errors: %q", l)
		}
	}
	if l := targetRow(t, run, "bench 10: throughput"); !rowHeld(l) {
		t.Errorf("bench-10 had no errors: %q", l)
	}
}

// A lateness row misses when any reply came more than earlyTolerance
// before it was due, in any round (the merged histogram's exact minimum),
// and tolerates less.
func TestTargetsMissOnEarlyReplies(t *testing.T) {
	for _, tc := range []struct {
		label, hist, row string
		min              float64
		held             bool
	}{
		{"waiters-spread", "timeout_lateness", "waiters spread: timeout", -1.5, false},
		{"waiters-spread", "timeout_lateness", "waiters spread: timeout", -0.9, true},
		{"waiters-at-once", "timeout_lateness", "waiters at once", -300, false},
		{"waiters-spread", "lease_handoff_lateness", "lease hand-off", -2, false},
		{"waiters-spread", "lease_handoff_lateness", "lease hand-off", -0.5, true},
	} {
		run := passingRun()
		findAB(run, tc.label).A.Latency = map[string]LatencyStats{tc.hist: {Count: 100, Early: 1, Min: tc.min}}
		l := targetRow(t, run, tc.row)
		if rowHeld(l) != tc.held {
			t.Errorf("%s: a reply %.1f ms early: held %v, want %v: %q", tc.hist, -tc.min, rowHeld(l), tc.held, l)
		}
	}
}

// The conns target is "N idle connections, every connection answers
// ping": pings_ok is held to the number of connections asked for, not to
// the number that opened, and dial failures (errors) miss the row.
func TestConnsTargetCountsDialFailures(t *testing.T) {
	srv := startServer(t)
	const want = 30
	sc := &ConnsConfig{
		Common:  Common{Servers: []string{srv.Addr}, Key: "rv", PIDs: []int{os.Getpid()}, Interval: 20 * time.Millisecond},
		Conns:   want,
		Sources: []string{"127.0.0.1"}, // one source address ...
		// ... with room for only a third of the connections: the rest
		// fail to dial ("every source address is out of ports").
		PerSource: want / 3,
		Hold:      10 * time.Millisecond,
		Parallel:  4,
	}
	ab := runAB(t, "conns-30", srv.Addr, []int{os.Getpid()}, sc)
	run := ab.A.Runs[0]
	t.Logf("target %d, opened %d, dial failures %d, pings ok %d, errors %d",
		run.Conns.Target, run.Conns.Opened, run.Conns.Failed, run.Conns.PingsOK, run.Errors)
	if run.Conns.Opened >= want {
		t.Skipf("all %d connections opened; the scenario did not produce dial failures", want)
	}
	row := targetRow(t, []*ABResult{ab}, "every connection answers ping")
	t.Logf("%s", row)
	if rowHeld(row) {
		t.Errorf("%d of %d connections never opened, yet the target reports every connection answering ping: %q",
			run.Conns.Failed, want, row)
	}
}

// waitersFake answers the waiters scenario: holders get a grant, pings
// and releases ok; each waiter (in arrival order) gets what waiter says;
// each hand-off waiter what handoff says.
func waitersFake(t *testing.T, waiter func(n int, c *fakeConn), handoff func(n int, c *fakeConn)) string {
	var nw, nh atomic.Int64
	return fakeServer(t, func(c *fakeConn, r fakeReq) {
		switch {
		case r.cmd == "ping", r.cmd == "r":
			c.reply("ok")
		case r.cmd == "l" && strings.HasPrefix(r.arg, "0 "):
			c.reply(fakeGrant) // a holder
		case r.cmd == "l" && strings.HasSuffix(r.key, "_waiters"):
			waiter(int(nw.Add(1)-1), c)
		case r.cmd == "l":
			handoff(int(nh.Add(1)-1), c)
		default:
			c.reply("error")
		}
	})
}

// Waiters whose timeout never comes (connection dropped) or whose reply
// is not `timeout` are missing from the lateness histogram, and so are
// failed hand-offs: the targets hold the number of timeout replies to the
// number of waiters and the hand-offs granted to the hand-offs asked for.
// Here 18 of 20 waiters and 3 of 4 hand-offs get no proper answer.
func TestWaitersTargetsCountUnansweredWaiters(t *testing.T) {
	addr := waitersFake(t,
		func(n int, c *fakeConn) {
			if n < 2 {
				time.AfterFunc(time.Second, func() { c.reply("timeout") }) // on time
				return
			}
			c.close() // never answered
		},
		func(n int, c *fakeConn) {
			if n == 0 {
				time.AfterFunc(time.Second, func() { c.reply(fakeGrant) }) // at the lease end
				return
			}
			c.reply("error") // hand-off never happens
		})
	sc := &WaitersConfig{
		Common:  Common{Servers: []string{addr}, Key: "rv", Interval: 20 * time.Millisecond},
		Waiters: 20, WaitTimeout: 1, Spread: 100 * time.Millisecond,
		Handoffs: 4, HandoffLease: 1, Parallel: 4,
	}
	ab := runAB(t, "waiters-spread-20", addr, nil, sc)
	ws := ab.A.Runs[0].Waiters
	t.Logf("waiters %d: %d timeout, %d no reply, %d other; hand-offs %d ok of %d; errors %d",
		ws.Waiters, ws.Timeouts, ws.NoReply, ws.Other, ws.HandoffsOK, ws.Handoffs, ab.A.Runs[0].Errors)
	for _, row := range []string{"waiters spread: timeout replies", "lease hand-off"} {
		l := targetRow(t, []*ABResult{ab}, row)
		t.Logf("%s", l)
		if rowHeld(l) {
			t.Errorf("target %q holds although %d of %d waiters got no timeout and %d of %d hand-offs failed: %q",
				row, ws.Waiters-int(ws.Timeouts), ws.Waiters, ws.HandoffsBad, ws.Handoffs, l)
		}
	}
}

// A timeout reply that comes before it is due enters the HDR histogram as
// 0 ms late, so the percentiles cannot show it: the target misses when any
// reply came more than earlyTolerance early. Here a server fires 19 of 20
// timeouts 300 ms early (a broken timer).
func TestWaitersTargetsMissEarlyTimeouts(t *testing.T) {
	addr := waitersFake(t,
		func(n int, c *fakeConn) {
			d := 700 * time.Millisecond // 300 ms early
			if n == 0 {
				d = time.Second
			}
			time.AfterFunc(d, func() { c.reply("timeout") })
		},
		func(int, *fakeConn) {})
	sc := &WaitersConfig{
		Common:  Common{Servers: []string{addr}, Key: "rv", Interval: 20 * time.Millisecond},
		Waiters: 20, WaitTimeout: 1, Handoffs: -1, Parallel: 4,
	}
	ab := runAB(t, "waiters-at-once-20", addr, nil, sc)
	st := ab.A.Runs[0].Latency["timeout_lateness"]
	t.Logf("timeout lateness: count %d, early %d, min %.1f ms, p50 %.1f ms, p99 %.1f ms", st.Count, st.Early, st.Min, st.P50, st.P99)
	l := targetRow(t, []*ABResult{ab}, "waiters at once")
	t.Logf("%s", l)
	if rowHeld(l) {
		t.Errorf("target holds although %d of %d timeouts came ~300 ms before they were due (min %.1f ms): %q",
			st.Early, st.Count, st.Min, l)
	}
}
