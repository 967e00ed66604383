package loadtest

import (
	"strings"
	"testing"
	"time"
)

// integ: ways the targets table could print ok for a run that did not
// show what the row claims.

// waitersRound builds one round's waiters result as Waiters does: the
// count figures, the lateness histograms and their per-round figures.
// timeouts and handoff values are lateness in ms.
func integWaitersRound(timeouts, handoffs []float64) *Result {
	res := &Result{Scenario: "waiters"}
	th, hh := NewHist(), NewHist()
	for _, v := range timeouts {
		th.Record(int64(v * float64(time.Millisecond)))
	}
	for _, v := range handoffs {
		hh.Record(int64(v * float64(time.Millisecond)))
	}
	res.addHist("timeout_lateness", th)
	res.addHist("lease_handoff_lateness", hh)
	res.figure("waiters", "waiters asked for", "waiters", float64(len(timeouts)), true, true, false)
	res.figure("timeouts", "waiters answered timeout", "replies", float64(len(timeouts)), true, true, false)
	res.figure("rss_per_waiter", "server RSS per parked waiter", "B", 300, true, false, true)
	res.Figures[len(res.Figures)-1].FirstRound = true
	s := res.Latency["timeout_lateness"]
	res.figure("timeout_lateness.p99", "", "ms", s.P99, s.Count > s.Early, false, true)
	res.figure("handoffs", "", "hand-offs", float64(len(handoffs)), true, true, false)
	res.figure("handoffs_granted", "", "hand-offs", float64(len(handoffs)), true, true, false)
	s = res.Latency["lease_handoff_lateness"]
	res.figure("lease_handoff_lateness.p99", "", "ms", s.P99, s.Count > s.Early, false, true)
	return res
}

func integRepeat(v float64, n int) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = v
	}
	return out
}

// The lateness rows read the median over the rounds of each round's p99:
// with one round of three entirely late (every timeout 40 ms late, every
// hand-off 40 ms late), a third of all replies were 40 ms late, the p99
// of the replies is 40 ms, yet both rows print ok ("p99 <= 15 ms late").
// notEarly reads the merged histogram for exactly this reason ("a median
// of per-round figures could hide one bad round"); the p99 rows do not.
func TestLatenessRowsSeeABadRound(t *testing.T) {
	good := func() *Result {
		return integWaitersRound(integRepeat(1, 1000), integRepeat(1, 20))
	}
	bad := integWaitersRound(integRepeat(40, 1000), integRepeat(40, 20))
	ab := &ABResult{Label: "waiters-spread-1000", Scenario: "waiters", Rounds: 3,
		A: ABSide{Target: Target{Name: "dflockd"}}, B: ABSide{Target: Target{Name: "ceiling"}}}
	ab.A.Runs = []*Result{good(), good(), bad}
	ab.B.Runs = []*Result{good(), good(), good()}
	ab.finish()
	merged := ab.A.Latency["timeout_lateness"]
	t.Logf("A: merged timeout lateness p99 %.1f ms over %d replies; per-round p99 %v; median %v",
		merged.P99, merged.Count, ptrs(mustFig(t, ab, "timeout_lateness.p99").A), *mustFig(t, ab, "timeout_lateness.p99").MedianA)

	run := passingRun()
	for i, x := range run {
		if strings.HasPrefix(x.Label, "waiters-spread") {
			run[i] = ab
		}
	}
	for _, row := range []string{"waiters spread: timeout replies p99", "lease hand-off: p99"} {
		l := targetRow(t, run, row)
		t.Logf("%s", l)
		if rowHeld(l) {
			t.Errorf("row holds although a third of the replies (all of round 3) were 40 ms late (p99 of the replies %.0f ms): %q",
				merged.P99, l)
		}
	}
}

func ptrs(vs []*float64) []string {
	var out []string
	for _, v := range vs {
		out = append(out, fmtPtr(v))
	}
	return out
}

func mustFig(t *testing.T, ab *ABResult, key string) *ABFigure {
	t.Helper()
	f, err := fig(ab, key)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// The ratio rows divide by the B side (the ceiling) but only the A side's
// errors miss a row: a ceiling run that lost connections (errors, fewer
// ops) lowers the denominator and flatters A. Here B had 700 errors in
// the comparison, and the throughput and CPU rows print ok.
func TestRatioRowsMissOnReferenceErrors(t *testing.T) {
	run := passingRun()
	findAB(run, "bench-10").B.Errors = 700
	for _, row := range []string{"bench 10: throughput", "bench 10: server CPU"} {
		l := targetRow(t, run, row)
		t.Logf("%s", l)
		if rowHeld(l) {
			t.Errorf("the reference (B) side had 700 errors, yet the ratio row holds: %q", l)
		}
	}
}

// Memory growth below zero is no cost per connection or waiter: the
// baseline was taken when the server held memory it later released (GC,
// scavenger, another round's garbage), so the figure says nothing. The
// rows print ok with a negative figure.
func TestNegativeRSSGrowthMisses(t *testing.T) {
	for _, tc := range []struct{ label, key, row string }{
		{"conns-19000", "rss_per_conn", "1 KiB server RSS"},
		{"waiters-spread-10000", "rss_per_waiter", "512 B server RSS"},
	} {
		run := passingRun()
		f := mustFig(t, findAB(run, tc.label), tc.key)
		neg := -3.5
		f.MedianA = &neg
		l := targetRow(t, run, tc.row)
		t.Logf("%s", l)
		if rowHeld(l) {
			t.Errorf("%s: server RSS shrank while the connections/waiters were added (%.1f per item), yet the row holds: %q",
				tc.key, neg, l)
		}
	}
}

// Two comparisons match one row (a stale conns-19000.json next to this
// run's conns-20000.json, e.g. `targets bin/bench-compare/*.json`): the
// row reads the first, silently, and the failing one is never checked.
func TestAmbiguousLabelMisses(t *testing.T) {
	run := passingRun() // conns-19000 holds
	failing := abWith("conns-20000", map[string][2]float64{"rss_per_conn": {4, 0.5}, "asked": {20000, 20000}, "opened": {12000, 20000}, "pings_ok": {12000, 20000}})
	failing.A.Errors = 8000
	run = append(run, failing)
	var out strings.Builder
	ok, err := WriteTargets(&out, run, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", out.String())
	if ok {
		t.Errorf("conns-20000 opened 12000 of 20000 connections with 8000 errors and 4 KiB/conn, yet every target holds (the rows read conns-19000)")
	}
}

// A figure that no round measured on both sides still gets a ratio: A's
// median comes from round 1 only, B's from rounds 2 and 3, and the ratio
// row holds without a single like-for-like round (every per-round ratio
// is missing).
func TestRatioNeedsPairedRounds(t *testing.T) {
	mk := func(tp float64, ok bool) *Result {
		r := &Result{Scenario: "bench"}
		r.figure("throughput", "throughput", "ops/s", tp, ok, true, true)
		r.figure("server_cpu_us_per_req", "", "µs", 10, true, false, true)
		return r
	}
	ab := &ABResult{Label: "bench-10", Scenario: "bench", Rounds: 3,
		A: ABSide{Target: Target{Name: "dflockd"}}, B: ABSide{Target: Target{Name: "ceiling"}}}
	ab.A.Runs = []*Result{mk(95, true), mk(0, false), mk(0, false)}
	ab.B.Runs = []*Result{mk(0, false), mk(100, true), mk(100, true)}
	ab.finish()
	f := mustFig(t, ab, "throughput")
	t.Logf("A %v, B %v, ratios %v, ratio %s", ptrs(f.A), ptrs(f.B), ptrs(f.Ratios), fmtRatio(f.Ratio))
	run := passingRun()
	for i, x := range run {
		if x.Label == "bench-10" {
			run[i] = ab
		}
	}
	l := targetRow(t, run, "bench 10: throughput")
	t.Logf("%s", l)
	if rowHeld(l) {
		t.Errorf("no round measured throughput on both sides (A in 1 of 3 rounds), yet the row holds: %q", l)
	}
}
