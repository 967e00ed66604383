package loadtest

import (
	"bufio"
	"context"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeReq is one three-line request seen by fakeServer.
type fakeReq struct{ cmd, key, arg string }

// fakeConn is one connection of fakeServer: reply writes a line (safe
// from any goroutine), close drops the connection.
type fakeConn struct {
	id int
	nc net.Conn
	mu sync.Mutex
}

func (c *fakeConn) reply(line string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, _ = c.nc.Write([]byte(line + "\n"))
}

func (c *fakeConn) close() { _ = c.nc.Close() }

// fakeServer is a scriptable protocol responder: handle is called for
// every complete request, in order, per connection. It returns the
// listening address; everything stops in t.Cleanup.
func fakeServer(t *testing.T, handle func(c *fakeConn, r fakeReq)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var ids atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, nc)
			mu.Unlock()
			c := &fakeConn{id: int(ids.Add(1) - 1), nc: nc}
			wg.Go(func() {
				defer func() { _ = nc.Close() }()
				br := bufio.NewReader(nc)
				var lines []string
				for {
					l, err := br.ReadString('\n')
					if err != nil {
						return
					}
					lines = append(lines, strings.TrimSuffix(l, "\n"))
					if len(lines) == 3 {
						handle(c, fakeReq{lines[0], lines[1], lines[2]})
						lines = lines[:0]
					}
				}
			})
		}
	})
	return ln.Addr().String()
}

// fakeGrant is a well-formed grant reply.
const fakeGrant = "ok 0123456789abcdeffedcba9876543210 33"

// runAB runs sc once per side against addr (both sides the same server)
// and labels the comparison.
func runAB(t *testing.T, label string, addr string, pids []int, sc Runner) *ABResult {
	t.Helper()
	ab, err := AB(context.Background(), ABConfig{
		A:    Target{Name: "server", Servers: []string{addr}, PIDs: pids},
		B:    Target{Name: "ceiling", Servers: []string{addr}, PIDs: pids},
		Runs: 1, Pause: time.Millisecond, Label: label,
	}, sc)
	if err != nil {
		t.Fatal(err)
	}
	return ab
}

// targetRow returns the WriteTargets line whose requirement contains row.
func targetRow(t *testing.T, abs []*ABResult, row string) string {
	t.Helper()
	var out strings.Builder
	if _, err := WriteTargets(&out, abs, ""); err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(out.String(), "\n") {
		if strings.Contains(l, row) {
			return l
		}
	}
	t.Fatalf("no target row %q in\n%s", row, out.String())
	return ""
}

// rowHeld tells whether a WriteTargets line says ok.
func rowHeld(l string) bool { return strings.HasSuffix(strings.TrimSpace(l), " ok") }
