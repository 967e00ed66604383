package loadtest

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// A target is one row of the performance table the server is held to
// (see the README's Benchmarks section), checked against the ab results of
// one `make bench-compare` run. Scenarios are found by their ab label
// (see findAB), as bench-compare.sh names them.
//
// A row holds only when the scenario did all it was asked: a figure
// measured over the requests that happened to succeed flatters the server,
// so every row misses when the A side had errors in any round
// (WriteTargets), and the rows of counted scenarios (conns, waiters, lease
// hand-offs) compare what was answered with what was asked for. A missed
// row says why in its measured column.
type target struct {
	row   string // the requirement, as the README states it
	label string // ab label of the comparison it reads (see findAB)
	check checkFunc
}

// checkFunc checks a target against its comparison ab (all is every
// comparison of the run) and returns the measured value as the table shows
// it and whether the target holds.
type checkFunc func(ab *ABResult, all []*ABResult) (value string, ok bool, err error)

// earlyTolerance is how long before it was due a timeout or a lease
// hand-off may be answered and still count as on time. The lateness is
// measured from the generator's send time, earlier than the server's
// receive time, and the server rounds its deadlines up to its 1 ms
// lock-table tick, so a correct server is never early; one tick of slack
// allows for a server clock read once per tick. A reply earlier than that
// is a broken timer (lock semantics violated), whatever the percentiles
// say: the lateness histograms record early replies as 0 ms late.
const earlyTolerance = time.Millisecond

func fig(ab *ABResult, key string) (*ABFigure, error) {
	for i := range ab.Figures {
		if ab.Figures[i].Key == key {
			return &ab.Figures[i], nil
		}
	}
	return nil, fmt.Errorf("%s: no figure %q", ab.Label, key)
}

func medianA(ab *ABResult, key string) (float64, error) {
	f, err := fig(ab, key)
	if err != nil {
		return 0, err
	}
	if f.MedianA == nil {
		return 0, fmt.Errorf("%s: %q not measured", ab.Label, key)
	}
	return *f.MedianA, nil
}

// ratioAB is key's A/B ratio of medians. It is an error unless every
// round measured both sides (medians over different rounds would compare
// different moments of a drifting machine) and the reference side had no
// errors (a damaged denominator flatters A).
func ratioAB(ab *ABResult, key string) (float64, error) {
	f, err := fig(ab, key)
	if err != nil {
		return 0, err
	}
	if f.Ratio == nil {
		return 0, fmt.Errorf("%s: no A/B ratio for %q", ab.Label, key)
	}
	if ab.B.Errors > 0 {
		return 0, fmt.Errorf("%s had %d errors", ab.B.Name, ab.B.Errors)
	}
	paired := 0
	for _, r := range f.Ratios {
		if r != nil {
			paired++
		}
	}
	if paired != ab.Rounds || paired == 0 {
		return 0, fmt.Errorf("%s: %q measured on both sides in %d of %d rounds", ab.Label, key, paired, ab.Rounds)
	}
	return *f.Ratio, nil
}

// findAB returns the first comparison labelled label, or label followed
// by "-" and a suffix (bench-compare.sh labels conns-19000,
// waiters-spread-10000): "bench-10" is not "bench-100".
func findAB(all []*ABResult, label string) *ABResult {
	ab, _ := findOnly(all, label)
	return ab
}

// findOnly is findAB that also counts the matches; a target reads a
// comparison only when exactly one matches (two: an older run's file among
// the inputs, say, whose figures would go unread).
func findOnly(all []*ABResult, label string) (first *ABResult, n int) {
	for _, a := range all {
		if a.Label == label || strings.HasPrefix(a.Label, label+"-") {
			if first == nil {
				first = a
			}
			n++
		}
	}
	return first, n
}

// answered wraps check: the row misses unless the A side's figure got
// equals its figure asked (and something was asked for), e.g. every waiter
// answered timeout.
func answered(got, asked, what string, check checkFunc) checkFunc {
	return func(ab *ABResult, all []*ABResult) (string, bool, error) {
		g, err := medianA(ab, got)
		if err != nil {
			return "", false, err
		}
		a, err := medianA(ab, asked)
		if err != nil {
			return "", false, err
		}
		if g != a || a <= 0 {
			return fmt.Sprintf("only %.0f of %.0f %s", g, a, what), false, nil
		}
		return check(ab, all)
	}
}

// notEarly wraps a lateness check: the row misses when, in any round, a
// reply of histogram hist came more than earlyTolerance before it was due.
// It reads the exact minimum of the A side's histogram merged over the
// rounds (a median of per-round figures could hide one bad round).
func notEarly(hist string, check checkFunc) checkFunc {
	return func(ab *ABResult, all []*ABResult) (string, bool, error) {
		if s, ok := ab.A.Latency[hist]; ok && s.Count > 0 && s.Min < -ms(int64(earlyTolerance)) {
			return fmt.Sprintf("%d early, by up to %.1f ms", s.Early, -s.Min), false, nil
		}
		return check(ab, all)
	}
}

func atLeastRatio(key string, min float64) checkFunc {
	return func(ab *ABResult, _ []*ABResult) (string, bool, error) {
		r, err := ratioAB(ab, key)
		return fmt.Sprintf("%.2f of %s", r, ab.B.Name), r >= min, err
	}
}

func atMostRatio(key string, max float64) checkFunc {
	return func(ab *ABResult, _ []*ABResult) (string, bool, error) {
		r, err := ratioAB(ab, key)
		return fmt.Sprintf("%.2fx %s", r, ab.B.Name), r <= max, err
	}
}

// growthAtMost checks a memory growth (A's median) against max; one that
// is not positive is no measurement (the baseline was polluted: memory
// returned to the OS meanwhile), so the row misses.
func growthAtMost(key, unit string, max float64) checkFunc {
	return func(ab *ABResult, _ []*ABResult) (string, bool, error) {
		v, err := medianA(ab, key)
		if err == nil && v <= 0 {
			return fmt.Sprintf("%.2f %s (no growth: baseline polluted)", v, unit), false, nil
		}
		return fmt.Sprintf("%.2f %s", v, unit), v <= max, err
	}
}

// p99AtMost checks the p99 of histogram hist merged over every round (a
// median of per-round p99s could hide one bad round).
func p99AtMost(hist string, max float64) checkFunc {
	return func(ab *ABResult, _ []*ABResult) (string, bool, error) {
		s, ok := ab.A.Latency[hist]
		if !ok || s.Count == 0 {
			return "", false, fmt.Errorf("%s: no %s samples", ab.Label, hist)
		}
		return fmt.Sprintf("%.2f ms", s.P99), s.P99 <= max, nil
	}
}

var targets = []target{
	{"bench 10: throughput >= 90% of the ceiling", "bench-10", atLeastRatio("throughput", 0.90)},
	{"bench 10: server CPU/request <= 1.15x the ceiling", "bench-10", atMostRatio("server_cpu_us_per_req", 1.15)},
	{"bench 100: throughput >= 90% of the ceiling", "bench-100", atLeastRatio("throughput", 0.90)},
	{"bench 100: server CPU/request <= 1.15x the ceiling", "bench-100", atMostRatio("server_cpu_us_per_req", 1.15)},
	{"bench 1000: throughput >= 90% of the ceiling", "bench-1000", atLeastRatio("throughput", 0.90)},
	{"bench 1000: server CPU/request <= 1.15x the ceiling", "bench-1000", atMostRatio("server_cpu_us_per_req", 1.15)},
	{"pipeline 10x32: throughput >= 50% of the ceiling", "pipeline", atLeastRatio("throughput", 0.50)},
	{"contended 50: server CPU/request <= 1.5x bench 100's", "contended", func(ab *ABResult, all []*ABResult) (string, bool, error) {
		c, err := medianA(ab, "server_cpu_us_per_req")
		if err != nil {
			return "", false, err
		}
		b, n := findOnly(all, "bench-100")
		if n != 1 {
			return "", false, fmt.Errorf("%d bench-100 comparisons (want 1)", n)
		}
		if b.A.Errors > 0 {
			return "", false, fmt.Errorf("bench-100 had %d errors", b.A.Errors)
		}
		u, err := medianA(b, "server_cpu_us_per_req")
		if err != nil {
			return "", false, err
		}
		return fmt.Sprintf("%.2fx (%.1f / %.1f µs)", c/u, c, u), c/u <= 1.5, nil
	}},
	{"conns: <= 1 KiB server RSS per connection", "conns", growthAtMost("rss_per_conn", "KiB", 1)},
	// Every connection asked for: one that could not be opened does not
	// answer ping either.
	{"conns: every connection answers ping", "conns", answered("opened", "asked", "opened",
		func(ab *ABResult, _ []*ABResult) (string, bool, error) {
			asked, err := medianA(ab, "asked")
			if err != nil {
				return "", false, err
			}
			n, err := medianA(ab, "pings_ok")
			return fmt.Sprintf("%.0f of %.0f", n, asked), err == nil && n == asked, err
		})},
	{"waiters spread: <= 512 B server RSS per parked waiter", "waiters-spread", growthAtMost("rss_per_waiter", "B", 512)},
	{"waiters spread: timeout replies p99 <= 15 ms late", "waiters-spread", timeoutsOnTime(15)},
	{"waiters at once: timeout replies p99 <= 50 ms late", "waiters-at-once", timeoutsOnTime(50)},
	{"lease hand-off: p99 <= 15 ms after the lease end", "waiters-spread", answered("handoffs_granted", "handoffs", "granted",
		notEarly("lease_handoff_lateness", p99AtMost("lease_handoff_lateness", 15)))},
}

// timeoutsOnTime is a waiters row: every waiter answered timeout, none
// early, p99 at most maxMs late.
func timeoutsOnTime(maxMs float64) checkFunc {
	return answered("timeouts", "waiters", "timed out",
		notEarly("timeout_lateness", p99AtMost("timeout_lateness", maxMs)))
}

// mallocsRe matches the in-process benchmark's mallocs/req metric.
var mallocsRe = regexp.MustCompile(`^(BenchmarkInProcessServer/\S+)\s.*?\s([0-9.]+) mallocs/req`)

// WriteTargets checks every target against the A side of the comparisons
// and, when goBench names `go test -bench BenchmarkInProcessServer` output,
// the allocations per request. It reports whether all held.
func WriteTargets(w io.Writer, abs []*ABResult, goBench string) (bool, error) {
	all := true
	_, _ = fmt.Fprintf(w, "%-56s %-28s %s\n", "target", "measured", "")
	_, _ = fmt.Fprintf(w, "%s\n", strings.Repeat("-", 92))
	verdict := func(ok bool) string {
		if ok {
			return "ok"
		}
		all = false
		return "MISSED"
	}
	for _, t := range targets {
		ab, n := findOnly(abs, t.label)
		if n != 1 {
			what := "(not run)"
			if n > 1 {
				what = fmt.Sprintf("(%d comparisons: ambiguous)", n)
			}
			_, _ = fmt.Fprintf(w, "%-56s %-28s %s\n", t.row, what, verdict(false))
			continue
		}
		v, ok, err := t.check(ab, abs)
		if err != nil {
			v, ok = err.Error(), false
		}
		if ab.A.Errors > 0 {
			v, ok = fmt.Sprintf("%d errors; %s", ab.A.Errors, v), false
		}
		_, _ = fmt.Fprintf(w, "%-56s %-28s %s\n", t.row, v, verdict(ok))
	}
	if goBench != "" {
		f, err := os.Open(goBench)
		if err != nil {
			return false, err
		}
		defer func() { _ = f.Close() }()
		n := 0
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			m := mallocsRe.FindStringSubmatch(sc.Text())
			if m == nil {
				continue
			}
			n++
			v, _ := strconv.ParseFloat(m[2], 64)
			// "~0": under one allocation per 10 requests, GC and runtime
			// bookkeeping of the whole process included.
			_, _ = fmt.Fprintf(w, "%-56s %-28s %s\n", "steady state: ~0 allocations/request ("+strings.TrimPrefix(m[1], "BenchmarkInProcessServer/")+")",
				fmt.Sprintf("%.4f mallocs/req", v), verdict(v <= 0.1))
		}
		if err := sc.Err(); err != nil {
			return false, err
		}
		if n == 0 {
			_, _ = fmt.Fprintf(w, "%-56s %-28s %s\n", "steady state: ~0 allocations/request", "(no benchmark output)", verdict(false))
		}
	}
	writeSerialFloor(w, abs)
	return all, nil
}

// writeSerialFloor prints, when the run has bench 1 and bench 100, what a
// serial chain costs each server: with one worker every request finds the
// server asleep, as every request of contended's one-key hand-off chain
// does, so bench 1's CPU per request over bench 100's is the floor the
// contended row's ratio stands on. The ceiling's line is a server with no
// logic at all. Context for reading the contended row, not a target.
func writeSerialFloor(w io.Writer, abs []*ABResult) {
	one, hundred := findAB(abs, "bench-1"), findAB(abs, "bench-100")
	if one == nil || hundred == nil {
		return
	}
	_, _ = fmt.Fprintf(w, "\ncontext, not a target: a serial chain (bench 1, one request in flight) wakes the server for every request\n")
	f1, err1 := fig(one, "server_cpu_us_per_req")
	f100, err100 := fig(hundred, "server_cpu_us_per_req")
	line := func(name string, median func(*ABFigure) *float64) {
		v := "(not measured)"
		if err1 == nil && err100 == nil {
			if s, u := median(f1), median(f100); s != nil && u != nil && *u > 0 {
				v = fmt.Sprintf("%.2fx (%.1f / %.1f µs)", *s / *u, *s, *u)
			}
		}
		_, _ = fmt.Fprintf(w, "%-56s %s\n", name+": CPU/request, bench 1 / bench 100", v)
	}
	line(one.A.Name, func(f *ABFigure) *float64 { return f.MedianA })
	line(one.B.Name, func(f *ABFigure) *float64 { return f.MedianB })
}
