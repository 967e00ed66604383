package loadtest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"math"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/lockreactor/dflockd/codec"
	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// Every scenario runs briefly against an in-process server; the counts
// must add up: every op answered, no error.

func startServer(t testing.TB) *reactortest.Server {
	t.Helper()
	return reactortest.Start(t, func(c *reactortest.Config) { c.Server.Logger = zap.NewNop() })
}

func startCeiling(t *testing.T) string {
	t.Helper()
	c, err := StartCeiling("127.0.0.1:0", 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("ceiling close: %v", err)
		}
	})
	return c.Addr().String()
}

func common(addrs ...string) Common {
	return Common{Servers: addrs, Key: "t", Timeout: 10, Lease: 10, PIDs: []int{os.Getpid()}, Interval: 20 * time.Millisecond}
}

func checkClean(t *testing.T, r *Result) {
	t.Helper()
	if r.Errors != 0 {
		t.Errorf("%s: %d errors: %v", r.Scenario, r.Errors, r.ErrorSamples)
	}
	if len(r.Timeline) == 0 {
		t.Errorf("%s: no throughput samples", r.Scenario)
	}
	if r.CPU == nil || r.CPU.ServerCPU < 0 || r.CPU.PIDErr != "" {
		t.Errorf("%s: cpu %+v", r.Scenario, r.CPU)
	}
}

func TestE2EBench(t *testing.T) {
	srv := startServer(t)
	res, err := Bench(context.Background(), BenchConfig{Common: common(srv.Addr), Workers: 3, Rounds: 20, Connections: 2})
	if err != nil {
		t.Fatal(err)
	}
	checkClean(t, res)
	if res.Ops != 60 || res.Requests != 120 || res.Latency["op"].Count != 60 {
		t.Errorf("ops %d requests %d latencies %d, want 60, 120, 60", res.Ops, res.Requests, res.Latency["op"].Count)
	}
	if !strings.HasPrefix(res.Header, `bench: 3 workers x 20 rounds (key_prefix="t", conns/worker=2)`) {
		t.Errorf("header %q", res.Header)
	}
}

func TestE2EBenchTimedAndSharded(t *testing.T) {
	a, b := startServer(t), startServer(t)
	res, err := Bench(context.Background(), BenchConfig{Common: func() Common {
		c := common(a.Addr, b.Addr)
		c.Duration = 200 * time.Millisecond
		return c
	}(), Workers: 8})
	if err != nil {
		t.Fatal(err)
	}
	checkClean(t, res)
	if res.Ops == 0 || res.Requests != 2*res.Ops || res.Latency["op"].Count != res.Ops {
		t.Errorf("ops %d requests %d latencies %d", res.Ops, res.Requests, res.Latency["op"].Count)
	}
	// Every key went to the server its CRC32 names.
	servers := []*reactortest.Server{a, b}
	n := 0
	for i, s := range servers {
		snap := s.Table.Stats(s.Table.Now())
		for _, k := range snap.IdleLocks {
			n++
			if got := Shard([]byte(k.Key), 2); got != i {
				t.Errorf("key %q on server %d, CRC32 says %d", k.Key, i, got)
			}
		}
	}
	if n == 0 {
		t.Error("no key found on either server")
	}
}

func TestE2EContended(t *testing.T) {
	srv := startServer(t)
	c := common(srv.Addr)
	c.Duration = 300 * time.Millisecond
	res, err := Contended(context.Background(), ContendedConfig{Common: c, Workers: 4})
	if err != nil {
		t.Fatal(err)
	}
	checkClean(t, res)
	var grants int64
	for _, g := range res.Fairness.Grants {
		grants += g
	}
	if res.Ops == 0 || grants != res.Ops || res.Requests != 2*res.Ops {
		t.Errorf("ops %d grants %d requests %d", res.Ops, grants, res.Requests)
	}
	if got := res.Latency["handoff"].Count; got != res.Ops-1 {
		t.Errorf("%d hand-offs recorded, want one per grant but the first (%d)", got, res.Ops-1)
	}
	// FIFO: every worker re-queues behind the others, so each gets a share.
	// Exact equality is not guaranteed: a worker descheduled between its
	// release and its next request (race detector, shared 2-core CI) misses
	// the rounds the others take meanwhile. Strict FIFO itself is checked in
	// lockcore and reactor; here only that the harness measures fairness and
	// that no worker starves.
	f := res.Fairness
	if f.Min == 0 || f.Jain < 0.9 {
		t.Errorf("starved or very unfair grants %v (Jain %.3f)", f.Grants, f.Jain)
	}
	sorted := append([]int64(nil), f.Grants...)
	slices.Sort(sorted)
	if f.Min != sorted[0] || f.Max != sorted[len(sorted)-1] || math.Abs(f.Mean-float64(grants)/float64(len(sorted))) > 1e-9 {
		t.Errorf("fairness summary min %d max %d mean %f disagrees with grants %v", f.Min, f.Max, f.Mean, f.Grants)
	}
}

func TestE2EPipeline(t *testing.T) {
	srv := startServer(t)
	for _, op := range []string{"lock", "ping"} {
		c := common(srv.Addr)
		c.Duration = 200 * time.Millisecond
		res, err := Pipeline(context.Background(), PipelineConfig{Common: c, Connections: 2, Depth: 4, Op: op})
		if err != nil {
			t.Fatal(err)
		}
		checkClean(t, res)
		if res.Ops == 0 || res.Requests != res.Ops || res.Latency["request"].Count != res.Ops {
			t.Errorf("%s: ops %d requests %d latencies %d", op, res.Ops, res.Requests, res.Latency["request"].Count)
		}
		// Lock slots drain to released: as many releases as acquires.
		if op == "lock" && res.Ops%2 != 0 {
			t.Errorf("lock pipeline ended with %d requests: an acquire was left without its release", res.Ops)
		}
	}
	snap := srv.Table.Stats(srv.Table.Now())
	if len(snap.Locks) != 0 {
		t.Errorf("locks still held after the pipeline: %+v", snap.Locks)
	}
}

func TestE2ERate(t *testing.T) {
	srv := startServer(t)
	c := common(srv.Addr)
	c.Duration = 500 * time.Millisecond
	res, err := Rate(context.Background(), RateConfig{Common: c, Rate: 400, Connections: 2, Slots: 8})
	if err != nil {
		t.Fatal(err)
	}
	checkClean(t, res)
	if res.Ops != 200 || res.Requests != 400 || res.Latency["op"].Count != 200 {
		t.Errorf("ops %d requests %d latencies %d, want 200, 400, 200", res.Ops, res.Requests, res.Latency["op"].Count)
	}
	if res.Wall < 0.45 {
		t.Errorf("200 ops at 400/s took %.3fs: not paced", res.Wall)
	}
}

func TestE2EConns(t *testing.T) {
	srv := startServer(t)
	c := common(srv.Addr)
	res, err := Conns(context.Background(), ConnsConfig{Common: c, Conns: 100, PerSource: 60, Hold: 50 * time.Millisecond, Sweeps: 2, Parallel: 8})
	if err != nil {
		t.Fatal(err)
	}
	checkClean(t, res)
	cs := res.Conns
	if cs.Opened != 100 || cs.PingsOK != 200 || cs.PingsFailed != 0 || res.Latency["ping"].Count != 200 {
		t.Errorf("conns %+v, %d ping latencies", cs, res.Latency["ping"].Count)
	}
	if cs.Sources["127.0.0.1"] != 60 || cs.Sources["127.0.0.2"] != 40 {
		t.Errorf("sources %v, want 60 from 127.0.0.1 and 40 from 127.0.0.2", cs.Sources)
	}
	// The server saw them all at once.
	deadline := time.Now().Add(5 * time.Second)
	for srv.Connections() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := srv.Connections(); n != 0 {
		t.Errorf("%d connections left open on the server", n)
	}
}

func TestE2EWaiters(t *testing.T) {
	srv := startServer(t)
	c := common(srv.Addr)
	res, err := Waiters(context.Background(), WaitersConfig{Common: c, Waiters: 20, WaitTimeout: 1, Handoffs: 2, HandoffLease: 1, Parallel: 4})
	if err != nil {
		t.Fatal(err)
	}
	checkClean(t, res)
	w := res.Waiters
	if w.Parked != 20 || w.Timeouts != 20 || w.Granted != 0 || w.Other != 0 || w.NoReply != 0 || w.HandoffsOK != 2 || w.HandoffsBad != 0 {
		t.Errorf("waiters %+v", w)
	}
	for _, name := range []string{"timeout_lateness", "lease_handoff_lateness"} {
		s := res.Latency[name]
		if s.Early != 0 || s.Min < 0 {
			t.Errorf("%s: %d replies came before they were due (min %.3f ms)", name, s.Early, s.Min)
		}
		if s.Max > 900 {
			t.Errorf("%s: max %.1f ms late", name, s.Max)
		}
	}
	if f, _ := res.Figure("timeout_lateness.p50"); f.Value == nil {
		t.Error("no timeout lateness figure")
	}
}

func TestE2EWaitersSpread(t *testing.T) {
	srv := startServer(t)
	c := common(srv.Addr)
	c.PIDs = []int{os.Getpid()} // the server runs in this process
	start := time.Now()
	res, err := Waiters(context.Background(), WaitersConfig{Common: c, Waiters: 30, WaitTimeout: 1, Spread: 400 * time.Millisecond, Handoffs: -1, Parallel: 4})
	if err != nil {
		t.Fatal(err)
	}
	checkClean(t, res)
	w := res.Waiters
	if w.Parked != 30 || w.Timeouts != 30 || w.HandoffsOK != 0 {
		t.Errorf("waiters %+v", w)
	}
	// The last request went out about 400 ms after the first, and timed
	// out a second later.
	if took := time.Since(start); took < 1350*time.Millisecond {
		t.Errorf("spread over 400ms plus a 1s timeout took only %v", took)
	}
	if !strings.Contains(res.Header, "sent over 400ms") || res.Params["spread_s"] != 0.4 {
		t.Errorf("header %q params %v", res.Header, res.Params)
	}
	if s := res.Latency["timeout_lateness"]; s.Early != 0 || s.Count != 30 {
		t.Errorf("timeout lateness %+v", s)
	}
	if runtime.GOOS == "linux" && (!w.TxTimestamps || !w.RxTimestamps) {
		t.Errorf("kernel timestamps: tx %v rx %v", w.TxTimestamps, w.RxTimestamps)
	}
	// Memory growth per waiter is measured (its value is noise at 30
	// waiters in a test process; bench-compare reads it at 10,000).
	if _, ok := res.Figure("rss_per_waiter"); !ok {
		t.Error("no rss_per_waiter figure")
	}
	if _, err := Waiters(context.Background(), WaitersConfig{Common: c, Waiters: 1, WaitTimeout: 1, Spread: time.Second}); err == nil {
		t.Error("a spread as long as the timeout was accepted")
	}
}

func TestE2EAgainstCeiling(t *testing.T) {
	addr := startCeiling(t)
	ctx := context.Background()
	c := common(addr)
	res, err := Bench(ctx, BenchConfig{Common: c, Workers: 2, Rounds: 10})
	if err != nil {
		t.Fatal(err)
	}
	checkClean(t, res)
	if res.Ops != 20 {
		t.Errorf("bench on the ceiling: %d ops", res.Ops)
	}
	c.Duration = 100 * time.Millisecond
	for _, run := range []func() (*Result, error){
		func() (*Result, error) { return Contended(ctx, ContendedConfig{Common: c, Workers: 3}) },
		func() (*Result, error) { return Pipeline(ctx, PipelineConfig{Common: c, Connections: 2, Depth: 8}) },
		func() (*Result, error) { return Rate(ctx, RateConfig{Common: c, Rate: 200, Connections: 2}) },
		func() (*Result, error) { return Conns(ctx, ConnsConfig{Common: c, Conns: 50, Hold: time.Millisecond}) },
	} {
		res, err := run()
		if err != nil {
			t.Fatal(err)
		}
		checkClean(t, res)
		if res.Ops == 0 {
			t.Errorf("%s on the ceiling: no ops", res.Scenario)
		}
	}
	// The ceiling has no lock semantics: waiters are granted at once. The
	// scenario reports it rather than failing.
	res, err = Waiters(ctx, WaitersConfig{Common: c, Waiters: 10, WaitTimeout: 1, Handoffs: 1})
	if err != nil {
		t.Fatal(err)
	}
	if res.Waiters.Granted != 10 || res.Errors == 0 {
		t.Errorf("waiters on the ceiling: %+v, %d errors", res.Waiters, res.Errors)
	}
	if f, _ := res.Figure("timeout_lateness.p50"); f.Value != nil {
		t.Errorf("timeout lateness %v reported for a server that never timed out", *f.Value)
	}
}

func TestCeilingFraming(t *testing.T) {
	addr := startCeiling(t)
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = nc.Close() }()
	_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
	var req []byte
	for range 3 {
		req = codec.AppendRequest(req, &codec.Request{Cmd: codec.CmdLock, Key: []byte("k"), Timeout: 1})
	}
	// Three requests arrive in pieces: one and a half, then the rest.
	cut := len(req)/3 + len(req)/6
	if _, err := nc.Write(req[:cut]); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(nc)
	line, err := br.ReadBytes('\n')
	if err != nil {
		t.Fatal(err)
	}
	var rep codec.Reply
	if !codec.ParseReply(bytes.TrimSuffix(line, []byte("\n")), &rep) || !isGrant(&rep) || rep.Lease != 33 {
		t.Fatalf("ceiling reply %q", line)
	}
	time.Sleep(50 * time.Millisecond)
	if br.Buffered() != 0 {
		t.Fatal("the ceiling answered an incomplete request")
	}
	if _, err := nc.Write(req[cut:]); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if line, err = br.ReadBytes('\n'); err != nil || !bytes.Equal(line, ceilingReply) {
			t.Fatalf("reply %q, %v", line, err)
		}
	}
	// A large pipelined batch, beyond the prebuilt block.
	var big []byte
	ping := codec.AppendRequest(nil, &codec.Request{Cmd: codec.CmdPing})
	for range ceilingBatch + 10 {
		big = append(big, ping...)
	}
	go func() { _, _ = nc.Write(big) }()
	for i := range ceilingBatch + 10 {
		if line, err = br.ReadBytes('\n'); err != nil || !bytes.Equal(line, ceilingReply) {
			t.Fatalf("reply %d: %q, %v", i, line, err)
		}
	}
}

func TestABAgainstServerAndCeiling(t *testing.T) {
	srv, ceil := startServer(t), startCeiling(t)
	sc := &BenchConfig{Common: common(), Workers: 2, Rounds: 10}
	var log bytes.Buffer
	ab, err := AB(context.Background(), ABConfig{
		A: Target{Name: "dflockd", Servers: []string{srv.Addr}}, B: Target{Name: "ceiling", Servers: []string{ceil}},
		Runs: 2, Pause: time.Millisecond, Log: &log,
	}, sc)
	if err != nil {
		t.Fatal(err)
	}
	if len(ab.A.Runs) != 2 || len(ab.B.Runs) != 2 {
		t.Fatalf("runs %d/%d", len(ab.A.Runs), len(ab.B.Runs))
	}
	for i, r := range ab.A.Runs {
		if r.Servers[0] != srv.Addr || ab.B.Runs[i].Servers[0] != ceil {
			t.Errorf("round %d ran against %v and %v", i, r.Servers, ab.B.Runs[i].Servers)
		}
	}
	if ab.A.Errors+ab.B.Errors != 0 {
		t.Errorf("errors %d/%d", ab.A.Errors, ab.B.Errors)
	}
	found := false
	for _, f := range ab.Figures {
		if f.Key == "throughput" {
			found = f.Ratio != nil && len(f.Ratios) == 2 && f.Ratios[0] != nil
		}
	}
	if !found {
		t.Error("no throughput ratio")
	}
	if ab.A.Latency["op"].Count != 40 {
		t.Errorf("A's merged histogram has %d ops, want 40", ab.A.Latency["op"].Count)
	}
	if got := strings.Count(log.String(), "\n"); got != 4 {
		t.Errorf("log has %d lines, want one per run:\n%s", got, log.String())
	}
	if len(sc.Servers) != 0 {
		t.Errorf("ab left the scenario pointed at %v", sc.Servers)
	}
}

func TestCLI(t *testing.T) {
	srv, ceil := startServer(t), startCeiling(t)
	dir := t.TempDir()
	ctx := context.Background()
	run := func(args ...string) (string, string, int) {
		var out, errb bytes.Buffer
		code := Main(ctx, args, &out, &errb)
		return out.String(), errb.String(), code
	}

	report := filepath.Join(dir, "bench.html")
	out, errs, code := run("bench", "--servers", srv.Addr, "--workers", "2", "--rounds", "5", "--json", "--report", report)
	if code != 0 {
		t.Fatalf("bench exit %d: %s", code, errs)
	}
	var res Result
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("bench --json: %v\n%s", err, out)
	}
	if res.Ops != 10 || res.Errors != 0 {
		t.Errorf("bench --json: ops %d errors %d", res.Ops, res.Errors)
	}
	html, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(html, []byte(`"name":"op"`)) || !bytes.Contains(html, []byte(`"name":"bench"`)) {
		t.Error("bench report lacks its series")
	}

	out, errs, code = run("bench", "--servers", srv.Addr, "--workers", "2", "--rounds", "3", "--mode", "lock")
	if code != 0 || !strings.HasPrefix(out, "bench: 2 workers x 3 rounds") || !strings.Contains(out, "  total ops : 6\n") {
		t.Errorf("bench text (exit %d, %s):\n%s", code, errs, out)
	}
	if _, _, code := run("bench", "--mode", "kv"); code == 0 {
		t.Error("bench --mode kv should fail")
	}

	jsonFile, abReport := filepath.Join(dir, "ab.json"), filepath.Join(dir, "ab.html")
	out, errs, code = run("ab", "--a", srv.Addr, "--a-name", "dflockd", "--b", ceil, "--b-name", "ceiling",
		"--runs", "2", "--pause", "1ms", "--label", "tiny", "--json-file", jsonFile, "--report", abReport,
		"contended", "--workers", "2", "--duration", "100ms")
	if code != 0 {
		t.Fatalf("ab exit %d: %s", code, errs)
	}
	if !strings.Contains(out, "A = dflockd") || !strings.Contains(out, "hand-offs") {
		t.Errorf("ab text:\n%s", out)
	}
	html, err = os.ReadFile(abReport)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{`"name":"dflockd handoff"`, `"name":"ceiling handoff"`, `"name":"dflockd#2"`, "Grants per worker"} {
		if !bytes.Contains(html, []byte(s)) {
			t.Errorf("ab report lacks %s", s)
		}
	}
	out, errs, code = run("summary", jsonFile)
	if code != 0 || !strings.Contains(out, "tiny") || !strings.Contains(out, "hand-offs") {
		t.Errorf("summary (exit %d, %s):\n%s", code, errs, out)
	}

	if _, errs, code := run("wait", "--timeout", "2s", srv.Addr, ceil); code != 0 {
		t.Errorf("wait: %s", errs)
	}
	if out, _, code := run("freeport", "2"); code != 0 || len(strings.Fields(out)) != 2 {
		t.Errorf("freeport: %q", out)
	}
	if _, _, code := run("nosuch"); code == 0 {
		t.Error("an unknown scenario should fail")
	}
}
