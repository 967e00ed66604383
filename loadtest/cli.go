package loadtest

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/lockreactor/dflockd/codec"
)

const usage = `dflockd-loadtest: benchmark harness for dflockd-protocol servers

usage:
  dflockd-loadtest SCENARIO [flags]            run one scenario
  dflockd-loadtest ab --a ADDR --b ADDR [ab flags] SCENARIO [flags]
                                               compare two servers, A B A B …
  dflockd-loadtest ceiling --port N            no-logic responder (the ceiling)
  dflockd-loadtest summary FILE.json…          table of headline ratios of ab --json files
  dflockd-loadtest targets [--gobench F] FILE.json…
                                               check bench-compare results against the
                                               performance targets (exit 1 if one is missed)
  dflockd-loadtest wait [--timeout 10s] ADDR…  wait until each server answers ping
  dflockd-loadtest freeport [N]                print N free loopback ports

scenarios:
  bench       dflockd cmd/bench: workers x rounds of acquire+release on a key each
  contended   every worker on one key: FIFO hand-off rate, latency, fairness
  pipeline    D requests in flight per connection
  rate        open loop at a fixed rate, latency from the intended send time
  conns       many idle connections: all still answer ping? server RSS per connection
  waiters     N waiters time out on a held key: how late? lease-expiry hand-off lateness

Every scenario takes --servers, --key, --timeout, --lease, --duration, --server-pid,
--json, --json-file, --report FILE.html, --no-progress; see SCENARIO --help.
`

// Main is the dflockd-loadtest command line; it returns the exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		_, _ = fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	code := 0
	switch cmd := args[0]; cmd {
	case "-h", "--help", "help":
		_, _ = fmt.Fprint(stdout, usage)
		return 0
	case "ab":
		code, err = mainAB(ctx, args[1:], stdout, stderr)
	case "ceiling":
		err = mainCeiling(ctx, args[1:], stdout, stderr)
	case "summary":
		err = mainSummary(args[1:], stdout)
	case "targets":
		code, err = mainTargets(args[1:], stdout, stderr)
	case "wait":
		err = mainWait(ctx, args[1:], stderr)
	case "freeport":
		err = mainFreeport(args[1:], stdout)
	default:
		code, err = mainScenario(ctx, cmd, args[1:], stdout, stderr)
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		_, _ = fmt.Fprintln(stderr, "dflockd-loadtest:", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// output holds the output flags.
type output struct {
	json       bool
	jsonFile   string
	report     string
	assets     string
	noProgress bool
}

func (o *output) register(fs *flag.FlagSet) {
	fs.BoolVar(&o.json, "json", false, "print machine-readable JSON results instead of text")
	fs.StringVar(&o.jsonFile, "json-file", "", "also write the JSON results to `FILE`")
	fs.StringVar(&o.report, "report", "", "write an HTML report with charts to `FILE.html`")
	fs.StringVar(&o.assets, "report-assets", "", "`URL` prefix of echarts.min.js for the report (default: the go-echarts CDN)")
	fs.BoolVar(&o.noProgress, "no-progress", false, "no progress bar (it is off anyway when stderr is not a terminal)")
}

func (o *output) merge(p *output) {
	o.json = o.json || p.json
	o.noProgress = o.noProgress || p.noProgress
	if o.jsonFile == "" {
		o.jsonFile = p.jsonFile
	}
	if o.report == "" {
		o.report = p.report
	}
	if o.assets == "" {
		o.assets = p.assets
	}
}

func (o *output) progress(stderr io.Writer) io.Writer {
	if o.noProgress {
		return nil
	}
	if f, ok := stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		return stderr
	}
	return nil
}

// scenarioFlags binds a scenario's flags.
type scenarioFlags struct {
	fs      *flag.FlagSet
	runner  Runner
	out     output
	servers string
	pids    string
}

func newScenarioFlags(name string, stderr io.Writer) (*scenarioFlags, error) {
	sf := &scenarioFlags{fs: flag.NewFlagSet(name, flag.ContinueOnError)}
	fs := sf.fs
	fs.SetOutput(stderr)
	var c *Common
	defDuration := 3 * time.Second
	switch name {
	case "bench":
		b := &BenchConfig{}
		fs.IntVar(&b.Workers, "workers", 10, "number of concurrent workers")
		fs.IntVar(&b.Rounds, "rounds", 50, "acquire/release rounds per worker (ignored with --duration)")
		fs.IntVar(&b.Connections, "connections", 0, "connections per worker (0 = 1 persistent conn)")
		fs.Func("mode", "benchmark mode (dflockd cmd/bench compatibility: only lock)", func(s string) error {
			if s != "lock" {
				return fmt.Errorf("mode %q is not supported by this protocol (only lock)", s)
			}
			return nil
		})
		c, sf.runner, defDuration = &b.Common, b, 0
	case "contended":
		b := &ContendedConfig{}
		fs.IntVar(&b.Workers, "workers", 10, "number of workers contending for the one key")
		c, sf.runner = &b.Common, b
	case "pipeline":
		b := &PipelineConfig{}
		fs.IntVar(&b.Connections, "connections", 4, "connections")
		fs.IntVar(&b.Depth, "depth", 16, "requests in flight per connection")
		fs.StringVar(&b.Op, "op", "lock", "lock (acquire/release cycles, one key per slot) or ping")
		c, sf.runner = &b.Common, b
	case "rate":
		b := &RateConfig{}
		fs.Float64Var(&b.Rate, "rate", 1000, "target ops (acquire+release) per second")
		fs.IntVar(&b.Connections, "connections", 4, "connections")
		fs.IntVar(&b.Slots, "slots", 64, "ops in progress per connection at most (one key each)")
		c, sf.runner = &b.Common, b
	case "conns":
		b := &ConnsConfig{}
		fs.IntVar(&b.Conns, "conns", 1000, "connections to open")
		fs.Func("sources", "comma-separated source addresses (default 127.0.0.1, 127.0.0.2, … as ports run out)", func(s string) error {
			b.Sources = splitList(s)
			return nil
		})
		fs.IntVar(&b.PerSource, "per-source", 0, "connections per source address at most (0 = port range less 1000)")
		fs.DurationVar(&b.Hold, "hold", time.Second, "idle time before each ping sweep (keep below the server's read timeout)")
		fs.IntVar(&b.Sweeps, "sweeps", 1, "ping sweeps over every connection")
		fs.IntVar(&b.Parallel, "parallel", 64, "concurrent dials and sweep goroutines")
		c, sf.runner = &b.Common, b
	case "waiters":
		b := &WaitersConfig{}
		fs.IntVar(&b.Waiters, "waiters", 1000, "waiters parked on the held key")
		fs.Int64Var(&b.WaitTimeout, "wait-timeout", 2, "the waiters' acquire timeout T (s)")
		fs.DurationVar(&b.Spread, "spread", 0, "send the waiters' requests evenly over this long (0 = all at once; below the wait timeout)")
		fs.IntVar(&b.Handoffs, "handoffs", 10, "lease-expiry hand-off pairs (negative: skip)")
		fs.Int64Var(&b.HandoffLease, "handoff-lease", 1, "the hand-off holders' lease (s)")
		fs.IntVar(&b.Parallel, "parallel", 64, "concurrent dials and readers")
		c, sf.runner = &b.Common, b
	default:
		return nil, fmt.Errorf("unknown scenario %q (bench, contended, pipeline, rate, conns, waiters)", name)
	}
	fs.StringVar(&sf.servers, "servers", "127.0.0.1:6388", "comma-separated host:port pairs (keys sharded by CRC32)")
	fs.StringVar(&c.Key, "key", "bench", "lock key prefix")
	fs.Int64Var(&c.Timeout, "timeout", 30, "acquire timeout in seconds")
	fs.Int64Var(&c.Lease, "lease", 10, "lease TTL in seconds")
	fs.DurationVar(&c.Duration, "duration", defDuration, "measured time (bench: 0 = run --rounds)")
	fs.DurationVar(&c.Interval, "interval", 100*time.Millisecond, "throughput sampling interval")
	fs.StringVar(&sf.pids, "server-pid", "", "server PID(s), comma-separated: CPU per request and RSS from /proc")
	sf.out.register(fs)
	return sf, nil
}

func (sf *scenarioFlags) parse(args []string) error {
	if err := sf.fs.Parse(args); err != nil {
		return err
	}
	if sf.fs.NArg() > 0 {
		return fmt.Errorf("%s: unexpected argument %q", sf.fs.Name(), sf.fs.Arg(0))
	}
	c := sf.runner.Settings()
	c.Servers = splitList(sf.servers)
	pids, err := parsePIDs(sf.pids)
	if err != nil {
		return err
	}
	c.PIDs = pids
	if c.Timeout < 0 || c.Lease < 0 {
		return errors.New("--timeout and --lease must not be negative")
	}
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func parsePIDs(s string) ([]int, error) {
	var pids []int
	for _, p := range splitList(s) {
		n, err := strconv.Atoi(p)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("bad PID %q", p)
		}
		pids = append(pids, n)
	}
	return pids, nil
}

func mainScenario(ctx context.Context, name string, args []string, stdout, stderr io.Writer) (int, error) {
	sf, err := newScenarioFlags(name, stderr)
	if err != nil {
		_, _ = fmt.Fprint(stderr, usage)
		return 2, err
	}
	if err := sf.parse(args); err != nil {
		return 2, err
	}
	sf.runner.Settings().Progress = sf.out.progress(stderr)
	res, err := sf.runner.Run(ctx)
	if err != nil {
		return 1, err
	}
	if err := writeOutputs(&sf.out, stdout, res.WriteJSON, res.WriteText, func(w io.Writer) error { return WriteReport(w, res, ReportConfig{AssetsHost: sf.out.assets}) }); err != nil {
		return 1, err
	}
	if res.Errors > 0 {
		return 1, nil
	}
	return 0, nil
}

func writeOutputs(o *output, stdout io.Writer, js func(io.Writer) error, text func(io.Writer), report func(io.Writer) error) error {
	if o.json {
		if err := js(stdout); err != nil {
			return err
		}
	} else {
		text(stdout)
	}
	if o.jsonFile != "" {
		if err := writeFile(o.jsonFile, js); err != nil {
			return err
		}
	}
	if o.report != "" {
		if err := writeFile(o.report, report); err != nil {
			return err
		}
	}
	return nil
}

func writeFile(name string, fn func(io.Writer) error) error {
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	if err := fn(f); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

func mainAB(ctx context.Context, args []string, stdout, stderr io.Writer) (int, error) {
	fs := flag.NewFlagSet("ab", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cfg          ABConfig
		a, b         string
		aPID, bPID   string
		out          output
		quiet        bool
		pauseDefault = 500 * time.Millisecond
	)
	fs.StringVar(&a, "a", "", "server A: host:port (comma list for a sharded set)")
	fs.StringVar(&b, "b", "", "server B: host:port (comma list for a sharded set)")
	fs.StringVar(&cfg.A.Name, "a-name", "A", "name of A in reports")
	fs.StringVar(&cfg.B.Name, "b-name", "B", "name of B in reports")
	fs.StringVar(&aPID, "a-pid", "", "PID(s) of A, for server CPU and RSS")
	fs.StringVar(&bPID, "b-pid", "", "PID(s) of B, for server CPU and RSS")
	fs.IntVar(&cfg.Runs, "runs", 3, "rounds; each round runs A then B")
	fs.DurationVar(&cfg.Pause, "pause", pauseDefault, "pause between runs")
	fs.StringVar(&cfg.Label, "label", "", "label of this comparison in summaries")
	fs.BoolVar(&quiet, "quiet", false, "no per-run lines on stderr")
	out.register(fs)
	if err := fs.Parse(args); err != nil {
		return 2, err
	}
	if a == "" || b == "" || fs.NArg() == 0 {
		return 2, errors.New("ab: usage: ab --a HOST:PORT --b HOST:PORT [flags] SCENARIO [scenario flags]")
	}
	cfg.A.Servers, cfg.B.Servers = splitList(a), splitList(b)
	var err error
	if cfg.A.PIDs, err = parsePIDs(aPID); err != nil {
		return 2, err
	}
	if cfg.B.PIDs, err = parsePIDs(bPID); err != nil {
		return 2, err
	}
	sf, err := newScenarioFlags(fs.Arg(0), stderr)
	if err != nil {
		return 2, err
	}
	if err := sf.parse(fs.Args()[1:]); err != nil {
		return 2, err
	}
	out.merge(&sf.out)
	sf.runner.Settings().Progress = out.progress(stderr)
	if !quiet {
		cfg.Log = stderr
	}
	res, err := AB(ctx, cfg, sf.runner)
	if err != nil {
		return 1, err
	}
	return 0, writeOutputs(&out, stdout, res.WriteJSON, res.WriteText, func(w io.Writer) error { return WriteABReport(w, res, ReportConfig{AssetsHost: out.assets}) })
}

func mainCeiling(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("ceiling", flag.ContinueOnError)
	fs.SetOutput(stderr)
	host := fs.String("host", "127.0.0.1", "listen address")
	port := fs.Int("port", 6390, "listen port (0 picks a free one)")
	loops := fs.Int("loops", 0, "event loops (0 = one per CPU)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, err := StartCeiling(net.JoinHostPort(*host, strconv.Itoa(*port)), *loops)
	if err != nil {
		return err
	}
	_, _ = fmt.Fprintf(stdout, "ceiling listening on %s (pid %d)\n", c.Addr(), os.Getpid())
	select {
	case <-ctx.Done():
		return c.Close()
	case <-c.done:
		if c.err != nil {
			return c.err
		}
		return errors.New("ceiling: gnet stopped unexpectedly")
	}
}

func mainSummary(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New("summary: give ab --json files")
	}
	abs, err := readABFiles(args)
	if err != nil {
		return err
	}
	WriteSummary(stdout, abs)
	return nil
}

func readABFiles(names []string) ([]*ABResult, error) {
	var abs []*ABResult
	for _, name := range names {
		b, err := os.ReadFile(name)
		if err != nil {
			return nil, err
		}
		var ab ABResult
		if err := json.Unmarshal(b, &ab); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		abs = append(abs, &ab)
	}
	return abs, nil
}

func mainTargets(args []string, stdout, stderr io.Writer) (int, error) {
	fs := flag.NewFlagSet("targets", flag.ContinueOnError)
	fs.SetOutput(stderr)
	goBench := fs.String("gobench", "", "output of go test -bench BenchmarkInProcessServer (allocations per request)")
	if err := fs.Parse(args); err != nil {
		return 2, err
	}
	if fs.NArg() == 0 {
		return 2, errors.New("targets: give ab --json files")
	}
	abs, err := readABFiles(fs.Args())
	if err != nil {
		return 1, err
	}
	ok, err := WriteTargets(stdout, abs, *goBench)
	if err != nil {
		return 1, err
	}
	if !ok {
		return 1, nil
	}
	return 0, nil
}

// WriteSummary prints one table of the headline figures of several A/B
// comparisons.
func WriteSummary(w io.Writer, abs []*ABResult) {
	if len(abs) == 0 {
		return
	}
	aName, bName := abs[0].A.Name, abs[0].B.Name
	_, _ = fmt.Fprintf(w, "%-26s %-34s %-8s %12s %12s %8s  %s\n", "scenario", "figure", "unit", aName, bName, "A/B", "rounds A/B")
	_, _ = fmt.Fprintf(w, "%s\n", strings.Repeat("-", 122))
	for _, ab := range abs {
		label := ab.Label
		if label == "" {
			label = ab.Scenario
		}
		for _, f := range ab.Figures {
			if !f.Headline {
				continue
			}
			var rounds []string
			for _, r := range f.Ratios {
				rounds = append(rounds, fmtRatio(r))
			}
			name := f.Label
			if f.FirstRound {
				name += " (round 1)"
			}
			_, _ = fmt.Fprintf(w, "%-26s %-34s %-8s %12s %12s %8s  %s\n", label, name, f.Unit, fmtPtr(f.MedianA), fmtPtr(f.MedianB),
				fmtRatio(f.Ratio), strings.Join(rounds, " "))
			label = ""
		}
		if ab.A.Errors > 0 || ab.B.Errors > 0 {
			_, _ = fmt.Fprintf(w, "%-26s %-34s %-8s %12d %12d\n", "", "errors (all rounds)", "", ab.A.Errors, ab.B.Errors)
		}
	}
}

func mainWait(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("wait", flag.ContinueOnError)
	fs.SetOutput(stderr)
	timeout := fs.Duration("timeout", 10*time.Second, "give up after")
	if err := fs.Parse(args); err != nil {
		return err
	}
	deadline := time.Now().Add(*timeout)
	for _, addr := range fs.Args() {
		for {
			if err := pingOnce(ctx, addr); err == nil {
				break
			} else if time.Now().After(deadline) || ctx.Err() != nil {
				return fmt.Errorf("wait: %s: %w", addr, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

// pingOnce dials addr and expects `ok` to a ping.
func pingOnce(ctx context.Context, addr string) error {
	d := dialer{}
	d.d.Timeout = time.Second
	c, err := d.dial(ctx, addr, true)
	if err != nil {
		return err
	}
	defer c.close()
	_ = c.nc.SetDeadline(time.Now().Add(2 * time.Second))
	rep, err := c.roundTrip(&codec.Request{Cmd: codec.CmdPing}, "ping")
	if err != nil {
		return err
	}
	if !isOK(rep) {
		return unexpected("ping", rep)
	}
	return nil
}

func mainFreeport(args []string, stdout io.Writer) error {
	n := 1
	if len(args) > 0 {
		var err error
		if n, err = strconv.Atoi(args[0]); err != nil || n < 1 || n > 100 {
			return fmt.Errorf("freeport: bad count %q", args[0])
		}
	}
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			_ = ln.Close()
		}
	}()
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		lns = append(lns, ln)
		_, _ = fmt.Fprintln(stdout, ln.Addr().(*net.TCPAddr).Port)
	}
	return nil
}
