package reactor_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// TestIdentityHandoff: clients on both loops hand a few locks to
// each other (direct delivery, same-loop queue, gnet wake, timer grants
// after a 1 s lease lapses, timer timeouts), pipeline pings before and
// after the result is decided, and vanish (close, reset, half-close) at
// random moments, while "sniffer" connections that never send anything
// reuse the descriptors of the closed ones. Every normal connection asks
// with a lease unique to it, so a grant (or renew reply) carrying another
// lease is a reply written to the wrong connection; a sniffer that reads
// any byte got a write meant for a closed connection. Replies must keep
// request order, no connection may get an extra reply, clients must never
// overlap as holders, and in the end nothing may be held, queued or
// parked.
func TestIdentityHandoff(t *testing.T) {
	forTransports(t, func(t *testing.T, tr transport) {
		r21Identity(t, tr)
	})
}

func r21Identity(t *testing.T, tr transport) {
	srv := tr.start(t, func(c *reactortest.Config) {
		c.Server.Loops = 2
		c.Server.Metrics = true
	})
	obs := srv.Connect(t)
	workers, dur := 48, 6*time.Second
	if tr.tls {
		workers, dur = 16, 3*time.Second
	}
	keys := []string{"k0", "k1", "k2"}
	var holders [3]atomic.Int32
	var nextLease atomic.Int64
	nextLease.Store(1000)
	var st struct {
		grants, timeouts, drops, halfs, sniffs, lapsers atomic.Int64
	}
	deadline := time.Now().Add(dur)
	errs := make(chan error, 64)
	fail := func(f string, a ...any) {
		select {
		case errs <- fmt.Errorf(f, a...):
		default:
		}
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			for time.Now().Before(deadline) {
				c, tcp, err := dialServed(tr, srv)
				if err != nil {
					fail("w%d dial: %v", w, err)
					return
				}
				switch p := rng.IntN(100); {
				case p < 12:
					r21Sniff(c, tcp, rng, fail)
					st.sniffs.Add(1)
				case p < 15:
					r21Lapser(c, rng, keys, fail)
					st.lapsers.Add(1)
				default:
					lease := nextLease.Add(1)
					r21Session(c, tcp, rng, keys, &holders, lease, fail,
						&st.grants, &st.timeouts, &st.drops, &st.halfs, deadline)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	n := 0
	for err := range errs {
		t.Error(err)
		n++
	}
	t.Logf("grants %d timeouts %d drops %d halfcloses %d sniffers %d lapsers %d directs %d",
		st.grants.Load(), st.timeouts.Load(), st.drops.Load(), st.halfs.Load(), st.sniffs.Load(),
		st.lapsers.Load(), srv.Metrics().DirectResults)
	r21Quiesce(t, srv, obs)
}

// r21Quiesce asserts that, every client gone, nothing is held,
// queued, parked or open but obs.
func r21Quiesce(t *testing.T, srv *reactortest.Server, obs *reactortest.Conn) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var last string
	for {
		s := stats(t, obs)
		m := srv.Metrics()
		ctr := srv.Table.Counters()
		last = fmt.Sprintf("conns=%d/%d parked=%d locks=%+v sems=%+v held=%v waiting=%v",
			s.Connections, m.Connections, m.Parked, s.Locks, s.Semaphores, ctr.Held, ctr.Waiting)
		if s.Connections == 1 && m.Connections == 1 && m.Parked == 0 && len(s.Locks) == 0 &&
			len(s.Semaphores) == 0 && ctr.Held == [2]int64{} && ctr.Waiting == [2]int64{} {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not quiescent: %s", last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// r21Sniff: a connection that sends nothing must receive nothing.
func r21Sniff(c net.Conn, tcp *net.TCPConn, rng *rand.Rand, fail func(string, ...any)) {
	_ = c.SetReadDeadline(time.Now().Add(time.Duration(5+rng.IntN(30)) * time.Millisecond))
	var b [256]byte
	n, err := c.Read(b[:])
	if n > 0 {
		fail("sniffer %v got %q (a reply for another connection)", c.LocalAddr(), b[:n])
	} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		fail("sniffer read: %v", err)
	}
	vanish(c, tcp, rng.IntN(2))
}

// r21Lapser takes a key with a 1 s lease and never releases it, so
// that the lock table's timer hands it on (or times out the waiters).
func r21Lapser(c net.Conn, rng *rand.Rand, keys []string, fail func(string, ...any)) {
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	key := keys[rng.IntN(len(keys))]
	if _, err := io.WriteString(c, req("l", key, "0 1")); err != nil {
		fail("lapser write: %v", err)
		return
	}
	l, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		fail("lapser read: %v", err)
		return
	}
	l = strings.TrimSuffix(l, "\n")
	if m := grantRe.FindStringSubmatch(l); m != nil {
		if m[3] != "1" {
			fail("lapser got %q: another connection's grant", l)
		}
		time.Sleep(1200 * time.Millisecond) // the lease lapses while we stay
		return
	}
	if l != rTimeout {
		fail("lapser reply %q", l)
	}
}

func r21Session(c net.Conn, tcp *net.TCPConn, rng *rand.Rand, keys []string, holders *[3]atomic.Int32,
	lease int64, fail func(string, ...any), grants, timeouts, drops, halfs *atomic.Int64, deadline time.Time) {
	br := bufio.NewReader(c)
	ls := strconv.FormatInt(lease, 10)
	id := fmt.Sprintf("conn %v lease %s", c.LocalAddr(), ls)
	read := func() (string, error) {
		_ = c.SetReadDeadline(time.Now().Add(8 * time.Second))
		l, err := br.ReadString('\n')
		return strings.TrimSuffix(l, "\n"), err
	}
	checkGrant := func(l string) (string, bool) {
		m := grantRe.FindStringSubmatch(l)
		if m == nil {
			return "", false
		}
		if m[1] != rOK || m[3] != ls {
			fail("%s: grant %q is not ours", id, l)
		}
		return m[2], true
	}
	for rounds := 1 + rng.IntN(6); rounds > 0 && time.Now().Before(deadline); rounds-- {
		ki := rng.IntN(len(keys))
		key := keys[ki]
		timeout := []string{"0", "1", "2", "5"}[rng.IntN(4)]
		lreq := req("l", key, timeout+" "+ls)
		pings := 0
		var err error
		switch rng.IntN(3) {
		case 0: // alone
			_, err = io.WriteString(c, lreq)
		case 1: // pipelined with it
			pings = 1 + rng.IntN(3)
			_, err = io.WriteString(c, lreq+strings.Repeat(req("ping", "_", "_"), pings))
		case 2: // pipelined late: races the result's delivery
			if _, err = io.WriteString(c, lreq); err == nil {
				time.Sleep(time.Duration(rng.IntN(400)) * time.Microsecond)
				pings = 1 + rng.IntN(2)
				_, err = io.WriteString(c, strings.Repeat(req("ping", "_", "_"), pings))
			}
		}
		if err != nil {
			fail("%s write: %v", id, err)
			_ = c.Close()
			return
		}
		if p := rng.IntN(100); p < 12 {
			time.Sleep(time.Duration(rng.IntN(2500)) * time.Microsecond)
			if p < 4 {
				// Half-close: what we sent before is answered in order
				// (a blocking request may be dropped), then EOF.
				halfs.Add(1)
				_ = tcp.CloseWrite()
				var lines []string
				for {
					l, err := read()
					if err != nil {
						if !errors.Is(err, io.EOF) && !strings.Contains(err.Error(), "reset") {
							fail("%s after half-close: %v (read %q)", id, err, lines)
						}
						break
					}
					lines = append(lines, l)
				}
				if len(lines) > 1+pings {
					fail("%s: %d replies to %d requests after half-close: %q", id, len(lines), 1+pings, lines)
				}
				for i, l := range lines {
					switch {
					case i == 0:
						if _, ok := checkGrant(l); !ok && l != rTimeout {
							fail("%s: first reply %q after half-close", id, l)
						}
					case l != rOK:
						fail("%s: reply %d %q after half-close (%q)", id, i, l, lines)
					}
				}
				_ = c.Close()
				return
			}
			drops.Add(1)
			vanish(c, tcp, rng.IntN(2))
			return
		}
		l, err := read()
		if err != nil {
			fail("%s read l: %v", id, err)
			_ = c.Close()
			return
		}
		tok, granted := checkGrant(l)
		if !granted && l != rTimeout {
			fail("%s: lock reply %q", id, l)
		}
		for i := range pings {
			if p, err := read(); err != nil || p != rOK {
				fail("%s: ping %d reply %q %v after %q", id, i, p, err, l)
				_ = c.Close()
				return
			}
		}
		if !granted {
			timeouts.Add(1)
			continue
		}
		grants.Add(1)
		if n := holders[ki].Add(1); n != 1 {
			fail("%s: %d holders of %s", id, n, key)
		}
		time.Sleep(time.Duration(rng.IntN(300)) * time.Microsecond)
		holders[ki].Add(-1)
		if rng.IntN(10) == 0 {
			drops.Add(1)
			vanish(c, tcp, rng.IntN(2)) // auto-release hands it on
			return
		}
		if _, err := io.WriteString(c, req("n", key, tok+" "+ls)+req("r", key, tok)+req("ping", "_", "_")); err != nil {
			fail("%s write r: %v", id, err)
			_ = c.Close()
			return
		}
		for i, want := range []string{rOK + " " + ls, rOK, rOK} {
			if got, err := read(); err != nil || got != want {
				fail("%s: reply %d %q %v, want %q", id, i, got, err, want)
				_ = c.Close()
				return
			}
		}
	}
	// Nothing more may come.
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Millisecond))
	if l, err := br.ReadString('\n'); err == nil || l != "" {
		fail("%s: extra reply %q", id, l)
	}
	vanish(c, tcp, rng.IntN(2))
}
