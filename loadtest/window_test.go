package loadtest

import (
	"bufio"
	"context"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// integ: what the measurement windows of the scenarios count.

// A ceiling run that loses connections (B errors) runs fewer workers, so
// its throughput is lower and A's ratio higher. A here is truly half as
// fast as B (2 ms per request against 1 ms), but B drops 7 of its 10
// connections at their first request: the bench-10 throughput row holds
// at well over 0.9 of "the ceiling".
func TestReferenceErrorsDoNotFlatterRatio(t *testing.T) {
	lockReply := func(c *fakeConn, r fakeReq, d time.Duration) {
		time.Sleep(d)
		if r.cmd == "l" {
			c.reply(fakeGrant)
		} else {
			c.reply("ok")
		}
	}
	a := fakeServer(t, func(c *fakeConn, r fakeReq) { lockReply(c, r, 2*time.Millisecond) })
	b := fakeServer(t, func(c *fakeConn, r fakeReq) {
		if r.cmd == "ping" {
			c.reply("ok") // the warm-up ping of every dial
			return
		}
		if c.id < 7 {
			c.close()
			return
		}
		lockReply(c, r, time.Millisecond)
	})
	sc := &BenchConfig{Common: Common{Key: "rv", Timeout: 1, Lease: 1, Duration: 400 * time.Millisecond, Interval: 50 * time.Millisecond}, Workers: 10}
	ab, err := AB(context.Background(), ABConfig{
		A: Target{Name: "slow", Servers: []string{a}}, B: Target{Name: "ceiling", Servers: []string{b}},
		Runs: 1, Pause: time.Millisecond, Label: "bench-10",
	}, sc)
	if err != nil {
		t.Fatal(err)
	}
	f := mustFig(t, ab, "throughput")
	t.Logf("A %s ops/s (0 errors: %d), B %s ops/s with %d errors; ratio %s", fmtPtr(f.MedianA), ab.A.Errors, fmtPtr(f.MedianB), ab.B.Errors, fmtRatio(f.Ratio))
	if ab.B.Errors == 0 {
		t.Skip("B lost no connection")
	}
	l := targetRow(t, []*ABResult{ab}, "bench 10: throughput")
	t.Logf("%s", l)
	if rowHeld(l) {
		t.Errorf("A does half the work per second of an intact B, but B lost 7 of 10 workers (%d errors) and the row holds: %q", ab.B.Errors, l)
	}
}

const integAcceptEnv = "LOADTEST_INTEG_ACCEPT_HELPER"

// TestAcceptHelperProcess is not a test: run as a child process,
// it is a server that spends 10 ms of CPU setting up each accepted
// connection (one at a time, as an accept loop does) and then answers
// lock with a grant and anything else with ok at next to no CPU.
func TestAcceptHelperProcess(t *testing.T) {
	if os.Getenv(integAcceptEnv) != "1" {
		t.Skip("helper process for TestBenchCPUWindowExcludesConnectionSetup")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = os.Stdout.WriteString("ADDR " + ln.Addr().String() + "\n")
	go func() {
		_, _ = bufio.NewReader(os.Stdin).ReadString(0)
		os.Exit(0)
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		// Connection set-up: 10 ms of CPU.
		x := 0
		for t0 := time.Now(); time.Since(t0) < 10*time.Millisecond; {
			x++
		}
		_ = x
		go func() {
			br := bufio.NewReader(c)
			var lines []string
			for {
				l, err := br.ReadString('\n')
				if err != nil {
					return
				}
				lines = append(lines, l)
				if len(lines) == 3 {
					if strings.TrimSpace(lines[0]) == "l" {
						_, _ = c.Write([]byte(fakeGrant + "\n"))
					} else {
						_, _ = c.Write([]byte("ok\n"))
					}
					lines = lines[:0]
				}
			}
		}()
	}
}

// bench starts its CPU window (and its clock) as soon as the dials
// returned, which is when the kernel completed the handshakes, not when
// the server accepted and set up the connections (waiters pings every
// connection first for this reason; bench does not). The server's
// per-connection set-up is then charged to "server CPU per request": here
// 30 connections x 10 ms of set-up over 60 requests reads as ~5 ms of CPU
// per request for a server whose requests cost microseconds.
func TestBenchCPUWindowExcludesConnectionSetup(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestAcceptHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), integAcceptEnv+"=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = stdin.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	var addr string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if a, ok := strings.CutPrefix(sc.Text(), "ADDR "); ok {
			addr = a
			go func() { _, _ = bufio.NewReader(stdout).ReadString(0) }()
			break
		}
	}
	if addr == "" {
		t.Fatal("helper did not start")
	}
	time.Sleep(100 * time.Millisecond)
	res, err := Bench(context.Background(), BenchConfig{
		Common:  Common{Servers: []string{addr}, Key: "rv", Timeout: 1, Lease: 1, PIDs: []int{cmd.Process.Pid}, Interval: 20 * time.Millisecond},
		Workers: 30, Rounds: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ops %d, requests %d, errors %d, wall %.3fs, server cpu %.3fs = %.0f µs/request",
		res.Ops, res.Requests, res.Errors, res.Wall, res.CPU.ServerCPU, res.CPU.ServerUsPerReq)
	if res.CPU.ServerUsPerReq > 1000 {
		t.Errorf("server CPU per request %.0f µs: the window counted the server's connection set-up (%.0f ms of CPU for %d requests)",
			res.CPU.ServerUsPerReq, res.CPU.ServerCPU*1000, res.Requests)
	}
}
