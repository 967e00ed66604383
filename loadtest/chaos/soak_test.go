package chaos_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/loadtest"
	"github.com/lockreactor/dflockd/loadtest/chaos"
)

var (
	soakDuration = flag.Duration("soak.duration", 0, "run the soak test for this long (0: skip it)")
	soakIdle     = flag.Int("soak.idle", 10_000, "idle connections the soak holds open the whole time")
	soakBeat     = flag.Duration("soak.heartbeat", 0, "each idle connection pings once per this period, as clients' heartbeats do (0: truly idle; see README Correctness about TCP keepalive)")
	soakBinary   = flag.String("soak.server", "", "server binary for the soak (default: build ./cmd/dflockd)")
)

// TestSoak runs the chaos workload against a server subprocess for
// -soak.duration while -soak.idle mostly idle connections stay open, in
// one-minute rounds: each round's history is checked and the server must
// return to rest (holders, waiters: none; connections: the idle ones and
// the observer). Each minute it samples the server's RSS, threads, open
// descriptors and (from /metrics) goroutines. Verdict: no violation, every
// idle connection still answers, and RSS and goroutines flat.
func TestSoak(t *testing.T) {
	if *soakDuration <= 0 {
		t.Skip("soak runs only with -soak.duration (make soak DURATION=10m)")
	}
	// make soak runs without go test's timeout: bound the whole test here.
	watchdog := time.AfterFunc(*soakDuration+15*time.Minute, func() {
		panic(fmt.Sprintf("soak still running %v after its -soak.duration", 15*time.Minute))
	})
	defer watchdog.Stop()
	noFile := loadtest.RaiseNoFile()
	require.Greater(t, noFile, uint64(*soakIdle+1000), "open-file limit too low for %d idle connections", *soakIdle)
	bin := *soakBinary
	if bin == "" {
		bin = filepath.Join(t.TempDir(), "dflockd")
		out, err := exec.Command("go", "build", "-o", bin, "github.com/lockreactor/dflockd/cmd/dflockd").CombinedOutput()
		require.NoError(t, err, "build: %s", out)
	}
	port, httpPort := freePort(t), freePort(t)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	httpAddr := "127.0.0.1:" + strconv.Itoa(httpPort)
	args := []string{"--host", "127.0.0.1", "--port", strconv.Itoa(port), "--read-timeout", "0", "--max-locks", "0"}
	metrics := helpMentions(bin, "--http-addr")
	if metrics {
		args = append(args, "--http-addr", httpAddr)
	}
	cmd := exec.Command(bin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	pid := cmd.Process.Pid
	var exitErr error
	exited := make(chan struct{})
	go func() { exitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("server stderr (tail):\n%s", tailString(stderr.String(), 4000))
		}
	})
	waitListening(t, addr)
	t.Logf("server pid %d on %s (metrics: %v); open-file limit here %d", pid, addr, metrics, noFile)

	// The idle connections.
	idle := make([]*bufio.ReadWriter, 0, *soakIdle)
	var idleConns []net.Conn
	for range *soakIdle {
		// No client-side keepalive: the probes of 10,000 connections
		// opened together fire together, and this machine's loopback
		// drops such bursts (see README, Correctness).
		d := net.Dialer{Timeout: 10 * time.Second, KeepAlive: -1}
		nc, err := d.Dial("tcp", addr)
		require.NoError(t, err, "idle connection %d", len(idleConns))
		idleConns = append(idleConns, nc)
		idle = append(idle, bufio.NewReadWriter(bufio.NewReader(nc), bufio.NewWriter(nc)))
	}
	defer func() {
		for _, nc := range idleConns {
			_ = nc.Close()
		}
	}()
	bad, how := pingAll(idleConns, idle)
	require.Zero(t, bad, "idle connections not answering at the start: %s", how)
	obs, err := chaos.Observe(addr)
	require.NoError(t, err)
	defer func() { _ = obs.Close() }()
	want := int64(len(idleConns) + 1)

	s := seed()
	t.Logf("soak seed %d, %v, %d idle connections, heartbeat %v", s, *soakDuration, len(idleConns), *soakBeat)
	t.Logf("%-6s %10s %10s %8s %10s %8s %10s %6s", "minute", "ops", "ops/s", "viol", "rss_MiB", "threads", "goroutines", "fds")
	ctx, cancel := context.WithTimeout(context.Background(), *soakDuration)
	defer cancel()
	start := time.Now()
	var samples []procSample
	var total chaos.Stats
	violations := 0
	rng := rand.New(rand.NewPCG(uint64(s), 0))
	// Heartbeats: one ping per idle connection per period, spread evenly.
	beat := &heartbeat{}
	beatCtx, stopBeat := context.WithCancel(context.Background())
	var beatWG sync.WaitGroup
	if *soakBeat > 0 {
		beatWG.Add(1)
		go func() {
			defer beatWG.Done()
			beat.run(beatCtx, idleConns, idle, *soakBeat)
		}()
	}
	defer func() { stopBeat(); beatWG.Wait() }()
	for round := 0; ctx.Err() == nil; round++ {
		left := *soakDuration - time.Since(start)
		if left < 5*time.Second {
			break
		}
		cfg := chaos.Config{Addr: addr, Seed: s + int64(round), Ops: 1 << 40, Duration: min(time.Minute, left),
			KeyPrefix: fmt.Sprintf("m%d-", round)}
		roundStart := time.Now()
		h, st, err := chaos.Run(ctx, cfg)
		require.NoError(t, err, "round %d", round)
		vs := chaos.Check(h)
		_, leak := obs.WaitQuiet(30*time.Second, want)
		vs = append(vs, leak...)
		if *soakBeat > 0 {
			if n, bad, how := beat.take(); bad > 0 {
				vs = append(vs, chaos.Violation{Check: "idle", Msg: fmt.Sprintf("%d of %d heartbeats not answered: %s", bad, n, how)})
			}
		} else {
			sub := rng.Perm(len(idleConns))[:len(idleConns)/100]
			if bad, how := pingSome(idleConns, idle, sub); bad > 0 {
				vs = append(vs, chaos.Violation{Check: "idle", Msg: fmt.Sprintf("%d of %d idle connections pinged did not answer: %s", bad, len(sub), how)})
			}
		}
		for i, v := range vs {
			if i < 20 {
				t.Errorf("round %d seed %d: %s", round, cfg.Seed, h.Describe(v))
			}
		}
		h = nil
		violations += len(vs)
		total.Add(st)
		ps := sampleProc(pid, metrics, httpAddr)
		samples = append(samples, ps)
		t.Logf("%-6d %10d %10.0f %8d %10.1f %8d %10s %6d", round+1, st.Ops, float64(st.Ops)/time.Since(roundStart).Seconds(),
			len(vs), float64(ps.rss)/(1<<20), ps.threads, ps.goroutinesText(), ps.fds)
	}
	stopBeat()
	beatWG.Wait()
	if bad, how := pingAll(idleConns, idle); bad > 0 {
		violations++
		t.Errorf("%d idle connections did not answer ping at the end: %s", bad, how)
	}
	for _, nc := range idleConns {
		_ = nc.Close()
	}
	_, leak := obs.WaitQuiet(60*time.Second, 1)
	for _, v := range leak {
		violations++
		t.Error(v)
	}
	final := sampleProc(pid, metrics, httpAddr)
	t.Logf("after closing the idle connections: rss %.1f MiB, threads %d, goroutines %s, fds %d",
		float64(final.rss)/(1<<20), final.threads, final.goroutinesText(), final.fds)

	// Flat: compare the last minute with the first (the first includes
	// warm-up: buffers, free lists, the idle connections' state).
	flat := true
	if len(samples) >= 2 {
		first, last := samples[0], samples[len(samples)-1]
		if grew := last.rss - first.rss; grew > max(first.rss/5, 32<<20) {
			flat = false
			t.Errorf("server RSS grew from %.1f to %.1f MiB", float64(first.rss)/(1<<20), float64(last.rss)/(1<<20))
		}
		if first.goroutines >= 0 && last.goroutines > first.goroutines+20 {
			flat = false
			t.Errorf("server goroutines grew from %d to %d", first.goroutines, last.goroutines)
		}
		if last.fds > first.fds+20 {
			flat = false
			t.Errorf("server descriptors grew from %d to %d", first.fds, last.fds)
		}
	}

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-exited:
		require.NoError(t, exitErr, "server exit after SIGTERM")
	case <-time.After(60 * time.Second):
		t.Fatal("server did not exit after SIGTERM")
	}
	verdict := "PASS"
	if violations > 0 || !flat {
		verdict = "FAIL"
	}
	t.Logf("soak verdict %s: %s over %v; %d violations; memory flat: %v; seed %d", verdict, total,
		time.Since(start).Round(time.Second), violations, flat, s)
}

type procSample struct {
	rss        int64
	threads    int
	fds        int
	goroutines int // -1 when unknown
}

func (p procSample) goroutinesText() string {
	if p.goroutines < 0 {
		return "n/a"
	}
	return strconv.Itoa(p.goroutines)
}

func sampleProc(pid int, metrics bool, httpAddr string) procSample {
	ps := procSample{goroutines: -1}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) < 2 {
				continue
			}
			switch f[0] {
			case "VmRSS:":
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				ps.rss = kb << 10
			case "Threads:":
				ps.threads, _ = strconv.Atoi(f[1])
			}
		}
	}
	if ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); err == nil {
		ps.fds = len(ents)
	}
	if metrics {
		c := http.Client{Timeout: 5 * time.Second}
		if resp, err := c.Get("http://" + httpAddr + "/metrics"); err == nil {
			b, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			for _, line := range strings.Split(string(b), "\n") {
				if v, ok := strings.CutPrefix(line, "go_goroutines "); ok {
					f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
					ps.goroutines = int(f)
				}
			}
		}
	}
	return ps
}

// pingAll pings every connection, in parallel batches; it returns how
// many did not answer ok, and how they failed.
func pingAll(conns []net.Conn, rws []*bufio.ReadWriter) (int, string) {
	idx := make([]int, len(conns))
	for i := range idx {
		idx[i] = i
	}
	return pingSome(conns, rws, idx)
}

func pingSome(conns []net.Conn, rws []*bufio.ReadWriter, idx []int) (int, string) {
	var mu sync.Mutex
	bad := 0
	kinds := map[string]int{}
	var wg sync.WaitGroup
	batch := min(16, len(idx))
	for b := range batch {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := b; k < len(idx); k += batch {
				i := idx[k]
				_ = conns[i].SetDeadline(time.Now().Add(10 * time.Second))
				_, _ = rws[i].WriteString("ping\n_\n_\n")
				err := rws[i].Flush()
				line := ""
				if err == nil {
					line, err = rws[i].ReadString('\n')
				}
				if err != nil || line != "ok\n" {
					kind := fmt.Sprintf("reply %q", line)
					var ne net.Error
					switch {
					case errors.As(err, &ne) && ne.Timeout():
						kind = "no reply (timeout)"
					case errors.Is(err, io.EOF):
						kind = "closed (EOF)"
					case errors.Is(err, syscall.ECONNRESET):
						kind = "reset"
					case err != nil:
						kind = err.Error()
					}
					mu.Lock()
					bad++
					kinds[kind]++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return bad, fmt.Sprint(kinds)
}

// heartbeat pings idle connections one after another, each once per
// period, and counts the pings not answered.
type heartbeat struct {
	mu    sync.Mutex
	n     int
	bad   int
	kinds map[string]int
}

func (h *heartbeat) run(ctx context.Context, conns []net.Conn, rws []*bufio.ReadWriter, period time.Duration) {
	gap := period / time.Duration(len(conns))
	next := time.Now()
	for i := 0; ctx.Err() == nil; i = (i + 1) % len(conns) {
		next = next.Add(gap)
		if d := time.Until(next); d > 0 {
			time.Sleep(d)
		}
		bad, how := pingSome(conns[i:i+1], rws[i:i+1], []int{0})
		h.mu.Lock()
		h.n++
		if bad > 0 {
			if h.kinds == nil {
				h.kinds = map[string]int{}
			}
			h.bad++
			h.kinds[how]++
		}
		h.mu.Unlock()
	}
}

// take returns and resets the counts.
func (h *heartbeat) take() (n, bad int, how string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	n, bad, how = h.n, h.bad, fmt.Sprint(h.kinds)
	h.n, h.bad, h.kinds = 0, 0, nil
	return n, bad, how
}

func helpMentions(bin, flagName string) bool {
	out, _ := exec.Command(bin, "--help").CombinedOutput()
	return bytes.Contains(out, []byte(strings.TrimPrefix(flagName, "-")))
}

func waitListening(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		nc, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = nc.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("server not listening on %s: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())
	return port
}

func tailString(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
