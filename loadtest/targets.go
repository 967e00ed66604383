package loadtest

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
)

// A target is one row of the performance table the server is held to
// (see the README's Benchmarks section), checked against the ab results of
// one `make bench-compare` run. Scenarios are found by their ab label
// prefix, as bench-compare.sh names them.
type target struct {
	row   string // the requirement, as the README states it
	label string // ab label (prefix) of the comparison it reads
	check func(ab *ABResult, all []*ABResult) (value string, ok bool, err error)
}

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

func ratioAB(ab *ABResult, key string) (float64, error) {
	f, err := fig(ab, key)
	if err != nil {
		return 0, err
	}
	if f.Ratio == nil {
		return 0, fmt.Errorf("%s: no A/B ratio for %q", ab.Label, key)
	}
	return *f.Ratio, nil
}

func findAB(all []*ABResult, prefix string) *ABResult {
	for _, ab := range all {
		if strings.HasPrefix(ab.Label, prefix) {
			return ab
		}
	}
	return nil
}

func atLeastRatio(key string, min float64) func(*ABResult, []*ABResult) (string, bool, error) {
	return func(ab *ABResult, _ []*ABResult) (string, bool, error) {
		r, err := ratioAB(ab, key)
		return fmt.Sprintf("%.2f of %s", r, ab.B.Name), r >= min, err
	}
}

func atMostRatio(key string, max float64) func(*ABResult, []*ABResult) (string, bool, error) {
	return func(ab *ABResult, _ []*ABResult) (string, bool, error) {
		r, err := ratioAB(ab, key)
		return fmt.Sprintf("%.2fx %s", r, ab.B.Name), r <= max, err
	}
}

func atMost(key, unit string, max float64) func(*ABResult, []*ABResult) (string, bool, error) {
	return func(ab *ABResult, _ []*ABResult) (string, bool, error) {
		v, err := medianA(ab, key)
		return fmt.Sprintf("%.2f %s", v, unit), v <= max, err
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
		b := findAB(all, "bench-100")
		if b == nil {
			return "", false, fmt.Errorf("no bench-100 comparison")
		}
		u, err := medianA(b, "server_cpu_us_per_req")
		if err != nil {
			return "", false, err
		}
		return fmt.Sprintf("%.2fx (%.1f / %.1f µs)", c/u, c, u), c/u <= 1.5, nil
	}},
	{"conns: <= 1 KiB server RSS per connection", "conns", atMost("rss_per_conn", "KiB", 1)},
	{"conns: every connection answers ping", "conns", func(ab *ABResult, _ []*ABResult) (string, bool, error) {
		opened, err := medianA(ab, "opened")
		if err != nil {
			return "", false, err
		}
		ok, err := medianA(ab, "pings_ok")
		return fmt.Sprintf("%.0f of %.0f", ok, opened), err == nil && ok == opened && opened > 0, err
	}},
	{"waiters spread: <= 512 B server RSS per parked waiter", "waiters-spread", atMost("rss_per_waiter", "B", 512)},
	{"waiters spread: timeout replies p99 <= 15 ms late", "waiters-spread", atMost("timeout_lateness.p99", "ms", 15)},
	{"waiters at once: timeout replies p99 <= 50 ms late", "waiters-at-once", atMost("timeout_lateness.p99", "ms", 50)},
	{"lease hand-off: p99 <= 15 ms after the lease end", "waiters-spread", atMost("lease_handoff_lateness.p99", "ms", 15)},
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
		ab := findAB(abs, t.label)
		if ab == nil {
			_, _ = fmt.Fprintf(w, "%-56s %-28s %s\n", t.row, "(not run)", verdict(false))
			continue
		}
		v, ok, err := t.check(ab, abs)
		if err != nil {
			v, ok = err.Error(), false
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
	return all, nil
}
