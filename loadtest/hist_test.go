package loadtest

import (
	"bytes"
	"encoding/json"
	"hash/crc32"
	"math"
	"os"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

func near(a, b, rel float64) bool {
	if a == b {
		return true
	}
	return math.Abs(a-b) <= rel*math.Max(math.Abs(a), math.Abs(b))
}

func TestHistStatsExactAndPercentiles(t *testing.T) {
	h := NewHist()
	// 1..10000 µs, in ns.
	var sum, sumsq float64
	for i := 1; i <= 10000; i++ {
		v := int64(i) * 1000
		h.Record(v)
		sum += float64(v)
		sumsq += float64(v) * float64(v)
	}
	s := h.Stats()
	if s.Count != 10000 {
		t.Fatalf("count %d", s.Count)
	}
	mean := sum / 10000
	if !near(s.Mean, mean/1e6, 1e-12) {
		t.Errorf("mean %v, want %v ms", s.Mean, mean/1e6)
	}
	sd := math.Sqrt((sumsq - 10000*mean*mean) / 9999)
	if !near(s.Stdev, sd/1e6, 1e-9) {
		t.Errorf("stdev %v, want %v ms", s.Stdev, sd/1e6)
	}
	if s.Min != 0.001 || s.Max != 10 {
		t.Errorf("min %v max %v, want 0.001 and 10 ms exactly", s.Min, s.Max)
	}
	for _, c := range []struct {
		got, want float64
	}{{s.P50, 5}, {s.P90, 9}, {s.P99, 9.9}, {s.P999, 9.99}} {
		if !near(c.got, c.want, 0.002) { // HDR: 3 significant digits
			t.Errorf("percentile %v, want %v ± 0.2%%", c.got, c.want)
		}
	}
	if len(s.Percentiles) != len(curvePercentiles) {
		t.Fatalf("curve has %d points", len(s.Percentiles))
	}
	if first, last := s.Percentiles[0], s.Percentiles[len(s.Percentiles)-1]; first.Ms != s.Min || last.Ms != s.Max {
		t.Errorf("curve ends %v..%v, want min..max", first, last)
	}
	for i := 1; i < len(s.Percentiles); i++ {
		if s.Percentiles[i].Ms < s.Percentiles[i-1].Ms {
			t.Errorf("curve not monotonic at %v", s.Percentiles[i])
		}
	}
}

func TestHistEmptyAndSingle(t *testing.T) {
	h := NewHist()
	if s := h.Stats(); s.Count != 0 || s.Max != 0 || s.Percentiles != nil {
		t.Errorf("empty stats %+v", s)
	}
	h.Record(1234567)
	s := h.Stats()
	if s.Count != 1 || s.Stdev != 0 || s.Min != s.Max || s.P50 != s.Max || s.P999 != s.Max {
		t.Errorf("single-value stats %+v", s)
	}
}

func TestHistNegativeAndClamped(t *testing.T) {
	h := NewHist()
	h.Record(-5_000_000) // a reply 5 ms early
	h.Record(2_000_000)
	h.Record(int64(2 * time.Hour))
	s := h.Stats()
	if s.Early != 1 || s.Clamped != 1 {
		t.Errorf("early %d clamped %d, want 1 and 1", s.Early, s.Clamped)
	}
	if s.Min != -5 {
		t.Errorf("min %v, want the exact -5 ms", s.Min)
	}
	if s.Max != float64(2*time.Hour)/1e6 {
		t.Errorf("max %v, want the exact 2 h", s.Max)
	}
	if s.P50 < 1.99 || s.P50 > 2.01 {
		t.Errorf("p50 %v, want 2 ms", s.P50)
	}
}

func TestHistMergeEqualsOne(t *testing.T) {
	a, b, all := NewHist(), NewHist(), NewHist()
	for i := range int64(5000) {
		v := (i*7919)%100000 + 1
		if i%3 == 0 {
			a.Record(v)
		} else {
			b.Record(v)
		}
		all.Record(v)
	}
	m := NewHist()
	m.Merge(a)
	m.Merge(b)
	m.Merge(NewHist()) // empty: no effect
	m.Merge(m)         // self: no effect
	got, want := m.Stats(), all.Stats()
	got.Percentiles, want.Percentiles = nil, nil
	if !near(got.Mean, want.Mean, 1e-12) || !near(got.Stdev, want.Stdev, 1e-9) {
		t.Errorf("merged mean/stdev %v/%v, want %v/%v", got.Mean, got.Stdev, want.Mean, want.Stdev)
	}
	got.Mean, want.Mean, got.Stdev, want.Stdev = 0, 0, 0, 0
	if !reflect.DeepEqual(got, want) {
		t.Errorf("merged %+v\nwant   %+v", got, want)
	}
}

func TestRecorderBatchesConcurrently(t *testing.T) {
	h := NewHist()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			r := NewRecorder(h)
			for i := range 1000 {
				r.Record(int64(w*1000 + i + 1))
			}
			r.Flush()
			r.Flush() // idempotent
		})
	}
	wg.Wait()
	if n := h.Count(); n != 8000 {
		t.Fatalf("count %d, want 8000", n)
	}
	if s := h.Stats(); s.Min != 1e-6 || s.Max != 8000e-6 {
		t.Errorf("min/max %v/%v", s.Min, s.Max)
	}
}

func TestRecorderDoesNotAllocate(t *testing.T) {
	r := NewRecorder(NewHist())
	allocs := testing.AllocsPerRun(10000, func() { r.Record(12345) })
	if allocs != 0 {
		t.Errorf("Record allocates %v per value", allocs)
	}
}

func TestFairness(t *testing.T) {
	f := newFairness([]int64{10, 10, 10, 10})
	if f.Jain != 1 || f.Min != 10 || f.Max != 10 || f.Mean != 10 {
		t.Errorf("even: %+v", f)
	}
	f = newFairness([]int64{40, 0, 0, 0})
	if !near(f.Jain, 0.25, 1e-12) {
		t.Errorf("one worker got all: Jain %v, want 1/n", f.Jain)
	}
	if f := newFairness(nil); f.Jain != 0 {
		t.Errorf("empty: %+v", f)
	}
}

func TestMedianAndRatio(t *testing.T) {
	p := func(v float64) *float64 { return &v }
	if m := Median([]*float64{p(3), nil, p(1), p(2)}); *m != 2 {
		t.Errorf("median %v", *m)
	}
	if m := Median([]*float64{p(4), p(1), p(3), p(2)}); *m != 2.5 {
		t.Errorf("even median %v", *m)
	}
	if Median([]*float64{nil}) != nil || Median(nil) != nil {
		t.Error("median of nothing should be nil")
	}
	if r := ratio(p(1), p(4)); *r != 0.25 {
		t.Errorf("ratio %v", *r)
	}
	if ratio(p(1), p(0)) != nil || ratio(nil, p(1)) != nil {
		t.Error("ratio with zero or missing should be nil")
	}
}

func TestShardIsIEEECRC32(t *testing.T) {
	for _, k := range []string{"bench_1234567", "a", "some/key"} {
		for n := 1; n <= 5; n++ {
			if got, want := Shard([]byte(k), n), int(crc32.ChecksumIEEE([]byte(k))%uint32(n)); got != want {
				t.Errorf("Shard(%q, %d) = %d, want %d", k, n, got, want)
			}
		}
	}
}

func TestReadProcSelf(t *testing.T) {
	s, err := ReadProc(os.Getpid())
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	if s.RSS <= 0 || s.CPU < 0 {
		t.Errorf("self sample %+v", s)
	}
	if _, err := ReadProc(1 << 30); err == nil {
		t.Error("reading a PID that does not exist should fail")
	}
}

// synthetic builds a result as a scenario would.
func synthetic(name string, base int64, ops int64) *Result {
	r := &Result{Scenario: name, Header: name + ": synthetic", Ops: ops, Requests: 2 * ops, Wall: 1,
		Throughput: float64(ops), CPU: &CPUStats{ServerCPU: 0.5, ServerUsPerReq: 5e5 / float64(2*ops), GenCPU: 0.4}}
	h := NewHist()
	for i := range ops {
		h.Record(base + i*1000)
	}
	r.addHist("op", h)
	r.Timeline = []Sample{{0.1, float64(ops) * 0.9}, {0.2, float64(ops) * 1.1}}
	r.figure("throughput", "throughput", "ops/s", r.Throughput, true, true, true)
	r.latencyFigures("op", "op latency", true)
	r.cpuFigures()
	return r
}

func TestWriteTextHasBenchShape(t *testing.T) {
	r := synthetic("bench", 100_000, 500)
	r.Header = `bench: 10 workers x 50 rounds (key_prefix="bench", conns/worker=1)`
	var b bytes.Buffer
	r.WriteText(&b)
	out := b.String()
	// dflockd cmd/bench prints exactly these lines, in this order.
	want := regexp.MustCompile(`(?s)^bench: 10 workers x 50 rounds \(key_prefix="bench", conns/worker=1\)\n\n` +
		`  total ops : 500\n  wall time : 1\.000s\n  throughput: 500\.0 ops/s\n\n` +
		`  mean      : [0-9.]+ ms\n  min       : 0\.100 ms\n  max       : 0\.599 ms\n` +
		`  p50       : [0-9.]+ ms\n  p99       : [0-9.]+ ms\n  stdev     : [0-9.]+ ms\n`)
	if !want.MatchString(out) {
		t.Errorf("report does not have dflockd's bench shape:\n%s", out)
	}
	for _, s := range []string{"p99.9", "server cpu", "load gen"} {
		if !strings.Contains(out, s) {
			t.Errorf("report lacks %q:\n%s", s, out)
		}
	}
}

func TestResultJSONRoundTrip(t *testing.T) {
	r := synthetic("bench", 100_000, 100)
	var b bytes.Buffer
	if err := r.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var back Result
	if err := json.Unmarshal(b.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if back.Ops != 100 || back.Latency["op"].Count != 100 || len(back.Figures) != len(r.Figures) || len(back.Timeline) != 2 {
		t.Errorf("round trip lost data: %+v", back)
	}
	f, ok := back.Figure("throughput")
	if !ok || f.Value == nil || *f.Value != 100 || !f.Higher {
		t.Errorf("throughput figure %+v", f)
	}
}

func abSynthetic() *ABResult {
	ab := &ABResult{Label: "bench-10", Scenario: "bench", Rounds: 2,
		A: ABSide{Target: Target{Name: "dflockd", Servers: []string{"127.0.0.1:1"}}},
		B: ABSide{Target: Target{Name: "ceiling", Servers: []string{"127.0.0.1:2"}}}}
	ab.A.Runs = []*Result{synthetic("bench", 200_000, 400), synthetic("bench", 200_000, 600)}
	ab.B.Runs = []*Result{synthetic("bench", 100_000, 1000), synthetic("bench", 100_000, 1000)}
	ab.finish()
	return ab
}

func TestABFinishMediansAndRatios(t *testing.T) {
	ab := abSynthetic()
	var tp *ABFigure
	for i := range ab.Figures {
		if ab.Figures[i].Key == "throughput" {
			tp = &ab.Figures[i]
		}
	}
	if tp == nil {
		t.Fatal("no throughput figure")
	}
	if *tp.MedianA != 500 || *tp.MedianB != 1000 || *tp.Ratio != 0.5 {
		t.Errorf("medians %v %v ratio %v", *tp.MedianA, *tp.MedianB, *tp.Ratio)
	}
	if len(tp.Ratios) != 2 || *tp.Ratios[0] != 0.4 || *tp.Ratios[1] != 0.6 {
		t.Errorf("per-round ratios %v %v", *tp.Ratios[0], *tp.Ratios[1])
	}
	if got := ab.A.Latency["op"].Count; got != 1000 {
		t.Errorf("A's merged op histogram has %d values, want 1000", got)
	}
	var b bytes.Buffer
	ab.WriteText(&b)
	for _, s := range []string{"bench-10", "A = dflockd", "B = ceiling", "throughput", "0.500", "0.400 0.600"} {
		if !strings.Contains(b.String(), s) {
			t.Errorf("ab text lacks %q:\n%s", s, b.String())
		}
	}
	b.Reset()
	WriteSummary(&b, []*ABResult{ab})
	if !strings.Contains(b.String(), "bench-10") || !strings.Contains(b.String(), "dflockd") || !strings.Contains(b.String(), "0.500") {
		t.Errorf("summary:\n%s", b.String())
	}
}

func TestReportSeries(t *testing.T) {
	r := synthetic("contended", 100_000, 300)
	r.addHist("handoff", NewHist())
	r.Fairness = newFairness([]int64{100, 100, 100})
	var b bytes.Buffer
	if err := WriteReport(&b, r, ReportConfig{}); err != nil {
		t.Fatal(err)
	}
	html := b.String()
	for _, s := range []string{"Latency by percentile", "Throughput over time", "Grants per worker",
		`"name":"op"`, `"name":"handoff"`, `"name":"contended"`, "p99.9", "total ops"} {
		if !strings.Contains(html, s) {
			t.Errorf("report lacks %q", s)
		}
	}

	b.Reset()
	if err := WriteABReport(&b, abSynthetic(), ReportConfig{AssetsHost: "assets/"}); err != nil {
		t.Fatal(err)
	}
	html = b.String()
	for _, s := range []string{`"name":"dflockd op"`, `"name":"ceiling op"`, `"name":"dflockd#1"`, `"name":"ceiling#2"`,
		"Latency by percentile", "Throughput over time", "A/B per round", `src="assets/echarts.min.js"`} {
		if !strings.Contains(html, s) {
			t.Errorf("ab report lacks %q", s)
		}
	}
}

// Hist.Quantile is by nearest rank: the p-th percentile is the
// ceil(q*n)-th value, so that at least q of the samples are at or below it.
// HDR's own rank, int(q*n + 0.5), is one rank low whenever q*n has a
// fractional part below one half: with 160 samples of 1..160 ms the p99
// is the 159th (159 ms), where HDR reports 158 ms (98.75 % at or below).
func TestHistQuantileNearestRank(t *testing.T) {
	for _, tc := range []struct {
		n int
		q float64
	}{
		{160, 0.99},   // 158.4  -> HDR rank 158, nearest rank 159
		{9990, 0.99},  // 9890.1 -> HDR rank 9890, nearest rank 9891
		{1700, 0.999}, // 1698.3 -> HDR rank 1698, nearest rank 1699
		{1040, 0.99},  // 1029.6 -> both 1030 (control)
		{10000, 0.99}, // 9900   -> both 9900 (control)
	} {
		h := NewHist()
		for i := 1; i <= tc.n; i++ {
			h.Record(int64(i) * int64(time.Millisecond))
		}
		rank := int(math.Ceil(tc.q*float64(tc.n) - 1e-9))
		want := int64(rank) * int64(time.Millisecond)
		got := h.Quantile(tc.q)
		// HDR reports the top of the bucket (0.1 % wide): anything below
		// the nearest-rank value itself is a lower rank.
		if got < want {
			t.Errorf("n=%d q=%v: quantile %.3f ms, nearest-rank value is the %d-th, %d ms (only %.3f%% of samples at or below the reported value)",
				tc.n, tc.q, float64(got)/1e6, rank, rank, 100*float64(got/int64(time.Millisecond))/float64(tc.n))
		}
		// ... and no more than a bucket (0.1 %) above it.
		if got > want+want/1000 {
			t.Errorf("n=%d q=%v: quantile %.3f ms, more than 0.1%% above the nearest-rank value %d ms", tc.n, tc.q, float64(got)/1e6, rank)
		}
	}
}
