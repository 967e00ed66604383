package loadtest

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// rssHelperEnv makes TestRSSHelperServerProcess a server process.
const rssHelperEnv = "LOADTEST_RSS_HELPER_SERVER"

// TestRSSHelperServerProcess is not a test: run as a child process by
// TestConnsRSSPerConnWithoutServerCPUTicks, it answers
// every request with `ok` and touches 16 KiB of fresh memory per accepted
// connection (a server whose connections cost 16 KiB of RSS each, and
// next to no CPU). It exits when its stdin closes.
func TestRSSHelperServerProcess(t *testing.T) {
	if os.Getenv(rssHelperEnv) != "1" {
		t.Skip("helper process for TestConnsRSSPerConnWithoutServerCPUTicks")
	}
	const perConn = 16 << 10
	mem, err := syscall.Mmap(-1, 0, 4096*perConn, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = os.Stdout.WriteString("ADDR " + ln.Addr().String() + "\n")
	go func() {
		_, _ = bufio.NewReader(os.Stdin).ReadString(0) // until EOF
		os.Exit(0)
	}()
	var n atomic.Int64
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		i := int(n.Add(1)-1) % 4096
		for p := 0; p < perConn; p += 4096 {
			mem[i*perConn+p] = 1
		}
		go func() {
			br := bufio.NewReader(c)
			nl := 0
			for {
				b, err := br.ReadByte()
				if err != nil {
					return
				}
				if b == '\n' {
					if nl++; nl == 3 {
						nl = 0
						_, _ = c.Write([]byte("ok\n"))
					}
				}
			}
		}()
	}
}

// startRSSHelper starts the helper server process; it is stopped (by
// its PID) in t.Cleanup.
func startRSSHelper(t *testing.T) (addr string, pid int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestRSSHelperServerProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), rssHelperEnv+"=1")
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
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if a, ok := strings.CutPrefix(sc.Text(), "ADDR "); ok {
			go func() { _, _ = bufio.NewReader(stdout).ReadString(0) }()
			return a, cmd.Process.Pid
		}
	}
	t.Fatal("helper server did not start")
	return "", 0
}

// Conns computes the RSS per connection whenever the server's RSS was
// read before and after, whether or not its CPU time moved (/proc counts
// it in 10 ms ticks): a server that used under one tick of CPU while its
// RSS grew must not be reported at 0 KiB per connection and pass the
// "<= 1 KiB" target. Here every connection costs the server 16 KiB.
func TestConnsRSSPerConnWithoutServerCPUTicks(t *testing.T) {
	for attempt := 1; attempt <= 8; attempt++ {
		addr, pid := startRSSHelper(t)
		time.Sleep(50 * time.Millisecond) // let the child's start-up CPU settle
		res, err := Conns(t.Context(), ConnsConfig{
			Common: Common{Servers: []string{addr}, Key: "rv", PIDs: []int{pid}, Interval: 20 * time.Millisecond},
			Conns:  16, Hold: time.Millisecond, Parallel: 2,
		})
		if err != nil {
			t.Fatal(err)
		}
		c := res.CPU
		grew := c.ServerRSSAfter - c.ServerRSSBefore
		t.Logf("attempt %d: server cpu %.3fs, rss %d -> %d (+%d B, %.1f KiB/conn), figure rss_per_conn %s KiB",
			attempt, c.ServerCPU, c.ServerRSSBefore, c.ServerRSSAfter, grew, float64(grew)/1024/float64(res.Conns.Opened), fmtPtr(figVal(res, "rss_per_conn")))
		if c.ServerCPU != 0 || grew <= 0 {
			continue // ticks moved this time: the figure is computed
		}
		if v := figVal(res, "rss_per_conn"); v != nil && *v <= 1 {
			t.Errorf("server RSS grew %d B over %d connections (%.1f KiB each), but rss_per_conn is reported as %.2f KiB (valid)",
				grew, res.Conns.Opened, float64(grew)/1024/float64(res.Conns.Opened), *v)
		}
		return
	}
	t.Skip("the server's CPU ticks moved in every attempt")
}

func figVal(r *Result, key string) *float64 {
	f, ok := r.Figure(key)
	if !ok {
		return nil
	}
	return f.Value
}
