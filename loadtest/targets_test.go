package loadtest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// abWith builds a one-round comparison whose A/B values are the given
// pairs; a "HIST.p99" key also gives the A side's merged histogram HIST
// that p99.
func abWith(label string, figs map[string][2]float64) *ABResult {
	ab := &ABResult{Label: label, Rounds: 1, A: ABSide{Target: Target{Name: "dflockd"}}, B: ABSide{Target: Target{Name: "ceiling"}}}
	for k, v := range figs {
		a, b := v[0], v[1]
		r := ratio(&a, &b)
		ab.Figures = append(ab.Figures, ABFigure{Key: k, A: []*float64{&a}, B: []*float64{&b}, MedianA: &a, MedianB: &b, Ratios: []*float64{r}, Ratio: r})
		setHist(ab, k, a)
	}
	return ab
}

// setHist sets the A side's merged p99 of HIST for a key "HIST.p99".
func setHist(ab *ABResult, key string, v float64) {
	if hist, ok := strings.CutSuffix(key, ".p99"); ok {
		if ab.A.Latency == nil {
			ab.A.Latency = map[string]LatencyStats{}
		}
		s := ab.A.Latency[hist]
		s.Count, s.P99 = 100, v
		ab.A.Latency[hist] = s
	}
}

func passingRun() []*ABResult {
	bench := map[string][2]float64{"throughput": {95, 100}, "server_cpu_us_per_req": {11, 10}}
	return []*ABResult{
		abWith("conns-19000", map[string][2]float64{"rss_per_conn": {0.9, 0.5}, "asked": {19000, 19000}, "opened": {19000, 19000}, "pings_ok": {19000, 19000}}),
		abWith("bench-10", bench),
		abWith("bench-100", bench),
		abWith("bench-1000", bench),
		abWith("contended", map[string][2]float64{"server_cpu_us_per_req": {16, 10}}),
		abWith("pipeline", map[string][2]float64{"throughput": {60, 100}}),
		abWith("waiters-spread-10000", map[string][2]float64{"rss_per_waiter": {300, 0}, "waiters": {10000, 10000}, "timeouts": {10000, 0},
			"timeout_lateness.p99": {3, 0}, "handoffs": {20, 20}, "handoffs_granted": {20, 20}, "lease_handoff_lateness.p99": {2, 0}}),
		abWith("waiters-at-once-10000", map[string][2]float64{"waiters": {10000, 10000}, "timeouts": {10000, 0}, "timeout_lateness.p99": {30, 0}}),
	}
}

func TestTargetsAllHeld(t *testing.T) {
	var out strings.Builder
	ok, err := WriteTargets(&out, passingRun(), "")
	require.NoError(t, err)
	assert.True(t, ok, out.String())
	assert.NotContains(t, out.String(), "MISSED")
	assert.Equal(t, len(targets)+2, strings.Count(out.String(), "\n"), out.String())
	assert.Contains(t, out.String(), "1.45x (16.0 / 11.0 µs)")
}

func TestTargetsMissed(t *testing.T) {
	for _, tc := range []struct {
		label, key string
		a, b       float64
		row        string
	}{
		{"bench-100", "throughput", 80, 100, "bench 100: throughput"},
		{"bench-1000", "server_cpu_us_per_req", 12, 10, "bench 1000: server CPU"},
		{"pipeline", "throughput", 40, 100, "pipeline 10x32"},
		{"conns-19000", "rss_per_conn", 1.01, 0.5, "1 KiB server RSS"},
		{"conns-19000", "pings_ok", 18999, 19000, "every connection answers ping"},
		{"conns-19000", "opened", 18999, 19000, "every connection answers ping"},
		{"waiters-spread-10000", "timeouts", 9999, 0, "waiters spread: timeout"},
		{"waiters-spread-10000", "handoffs_granted", 19, 20, "lease hand-off"},
		{"waiters-at-once-10000", "timeouts", 9999, 0, "waiters at once"},
		{"waiters-spread-10000", "rss_per_waiter", 600, 0, "512 B"},
		{"waiters-spread-10000", "timeout_lateness.p99", 16, 0, "waiters spread: timeout"},
		{"waiters-spread-10000", "lease_handoff_lateness.p99", 15.5, 0, "lease hand-off"},
		{"waiters-at-once-10000", "timeout_lateness.p99", 51, 0, "waiters at once"},
	} {
		run := passingRun()
		ab := findAB(run, tc.label)
		f, err := fig(ab, tc.key)
		require.NoError(t, err)
		f.MedianA = &tc.a
		f.Ratio = ratio(&tc.a, &tc.b)
		setHist(ab, tc.key, tc.a)
		var out strings.Builder
		ok, err := WriteTargets(&out, run, "")
		require.NoError(t, err)
		assert.False(t, ok, "%s %s", tc.label, tc.key)
		lines := strings.Split(out.String(), "\n")
		var missed []string
		for _, l := range lines {
			if strings.HasSuffix(l, "MISSED") {
				missed = append(missed, l)
			}
		}
		if assert.Len(t, missed, 1, out.String()) {
			assert.Contains(t, missed[0], tc.row)
		}
	}
	// The contended row compares with bench 100's CPU, not the ceiling.
	run := passingRun()
	u, c := 10.0, 15.1
	f, err := fig(findAB(run, "bench-100"), "server_cpu_us_per_req")
	require.NoError(t, err)
	f.MedianA = &u
	f, err = fig(findAB(run, "contended"), "server_cpu_us_per_req")
	require.NoError(t, err)
	f.MedianA = &c
	var out strings.Builder
	ok, _ := WriteTargets(&out, run, "")
	assert.False(t, ok, out.String())
	assert.Contains(t, out.String(), "1.51x")
	// A scenario that did not run is a miss, not a pass.
	ok, _ = WriteTargets(&out, passingRun()[1:], "")
	assert.False(t, ok)
}

func TestTargetsGoBench(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "bench.txt")
	require.NoError(t, os.WriteFile(file, []byte(`goos: linux
BenchmarkInProcessServer/bench-4         	    2000	     51234 ns/op	         0.0031 mallocs/req	        0.41 B/req	     19000 ops/s
BenchmarkInProcessServer/pipeline-lock-4 	       1	 300000000 ns/op	         0.2000 mallocs/req	        9.00 B/req	    500000 ops/s
PASS
`), 0o644))
	var out strings.Builder
	ok, err := WriteTargets(&out, passingRun(), file)
	require.NoError(t, err)
	assert.False(t, ok)
	assert.Contains(t, out.String(), "(bench-4)")
	assert.Contains(t, out.String(), "0.0031 mallocs/req")
	assert.Regexp(t, `pipeline-lock-4\).*0\.2000 mallocs/req\s+MISSED`, out.String())
	require.NoError(t, os.WriteFile(file, []byte("PASS\n"), 0o644))
	ok, err = WriteTargets(&out, passingRun(), file)
	require.NoError(t, err)
	assert.False(t, ok, "no benchmark lines is a miss")
}

// With bench 1 in the run, the targets end with what a serial chain costs
// each side (bench 1's CPU per request over its bench 100's): context for
// the contended row, which changes no verdict.
func TestTargetsSerialFloor(t *testing.T) {
	run := append(passingRun(), abWith("bench-1", map[string][2]float64{"throughput": {20, 15}, "server_cpu_us_per_req": {12, 14}}))
	var out strings.Builder
	ok, err := WriteTargets(&out, run, "")
	require.NoError(t, err)
	assert.True(t, ok, out.String())
	assert.Contains(t, out.String(), "dflockd: CPU/request, bench 1 / bench 100")
	assert.Contains(t, out.String(), "1.09x (12.0 / 11.0 µs)") // 12 over bench 100's 11
	assert.Contains(t, out.String(), "ceiling: CPU/request, bench 1 / bench 100")
	assert.Contains(t, out.String(), "1.40x (14.0 / 10.0 µs)")
	// bench-1 is not bench-10's or bench-100's: their rows are unchanged.
	assert.Contains(t, targetRow(t, run, "bench 10: server CPU"), "1.10x")

	// A side that did not measure it says so; a run without bench 1 has
	// no context lines.
	f, err := fig(findAB(run, "bench-1"), "server_cpu_us_per_req")
	require.NoError(t, err)
	f.MedianB = nil
	out.Reset()
	_, err = WriteTargets(&out, run, "")
	require.NoError(t, err)
	assert.Contains(t, out.String(), "ceiling: CPU/request, bench 1 / bench 100")
	assert.Contains(t, out.String(), "(not measured)")
	out.Reset()
	_, err = WriteTargets(&out, passingRun(), "")
	require.NoError(t, err)
	assert.NotContains(t, out.String(), "bench 1 /")
}
