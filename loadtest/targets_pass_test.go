package loadtest

import (
	"testing"
)

// integ: checks that hold today (kept as regressions).

// A first-round figure (RSS per connection) that round 1 did not measure
// is missing, not taken from a later round: the row misses. A ratio row
// whose B side measured nothing misses too.
func TestMissingFiguresMiss(t *testing.T) {
	mk := func(rss float64, ok bool) *Result {
		r := &Result{Scenario: "conns"}
		r.figure("asked", "", "", 10, true, true, false)
		r.figure("opened", "", "", 10, true, true, false)
		r.figure("pings_ok", "", "", 10, true, true, false)
		r.figure("rss_per_conn", "", "KiB", rss, ok, false, true)
		r.Figures[len(r.Figures)-1].FirstRound = true
		return r
	}
	ab := &ABResult{Label: "conns-10", Rounds: 3, A: ABSide{Target: Target{Name: "dflockd"}}, B: ABSide{Target: Target{Name: "ceiling"}}}
	ab.A.Runs = []*Result{mk(0, false), mk(0.5, true), mk(0.5, true)}
	ab.B.Runs = []*Result{mk(0.2, true), mk(0.2, true), mk(0.2, true)}
	ab.finish()
	if l := targetRow(t, []*ABResult{ab}, "1 KiB server RSS"); rowHeld(l) {
		t.Errorf("round 1 did not measure RSS, yet the row holds: %q", l)
	}

	run := passingRun()
	f := mustFig(t, findAB(run, "bench-100"), "throughput")
	f.MedianB, f.Ratio = nil, nil
	if l := targetRow(t, run, "bench 100: throughput"); rowHeld(l) {
		t.Errorf("B measured no throughput, yet the row holds: %q", l)
	}
}

// The contended row needs bench-100 on the A side; without it, it misses.
func TestContendedWithoutBench100Misses(t *testing.T) {
	var run []*ABResult
	for _, ab := range passingRun() {
		if ab.Label != "bench-100" {
			run = append(run, ab)
		}
	}
	if l := targetRow(t, run, "contended 50"); rowHeld(l) {
		t.Errorf("no bench-100, yet the contended row holds: %q", l)
	}
}
