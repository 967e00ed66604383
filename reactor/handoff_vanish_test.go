package reactor_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// TestHandoffVanish: many clients contend for a few locks and
// semaphores with 600 s leases; each vanishes at a random moment: while
// parked, as its grant is being written, right after it, with a close, a
// reset or a half-close. With auto-release on, once every client is gone
// nothing may be held, queued or parked: a grant given to a connection
// that is going away must be released with it.
func TestHandoffVanish(t *testing.T) {
	forTransports(t, func(t *testing.T, tr transport) {
		workers, perWorker := 150, 25
		if tr.tls {
			workers, perWorker = 60, 12
		}
		srv := tr.start(t, func(c *reactortest.Config) {
			c.Core.GCInterval = 100 * time.Millisecond
			c.Core.GCMaxIdle = 200 * time.Millisecond
			c.Server.Metrics = true
			c.Server.Loops = 2
		})
		obs := srv.Connect(t)
		var grants, dials atomic.Int64
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				for j := range perWorker {
					c, tcp, err := dialServed(tr, srv)
					if err != nil {
						t.Logf("dial: %v", err)
						continue
					}
					dials.Add(1)
					_ = c.SetDeadline(time.Now().Add(15 * time.Second))
					br := bufio.NewReader(c)
					key := fmt.Sprintf("h%d", (w+j)%3)
					var r string
					switch rand.IntN(4) {
					case 0:
						r = req("l", key, "10 600")
					case 1:
						r = req("sl", "s"+key, "10 2 600")
					case 2:
						r = req("e", key, "600") + req("w", key, "10")
					case 3:
						r = req("se", "s"+key, "2 600") + req("sw", "s"+key, "10")
					}
					_, _ = io.WriteString(c, r)
					// Hold or wait for a random while, sometimes reading the grant.
					switch rand.IntN(3) {
					case 0:
						time.Sleep(time.Duration(rand.IntN(3000)) * time.Microsecond)
					case 1:
						_ = c.SetReadDeadline(time.Now().Add(time.Duration(rand.IntN(5)+1) * time.Millisecond))
						if l, err := br.ReadString('\n'); err == nil && (strings.HasPrefix(l, "ok ") || strings.HasPrefix(l, "acquired ")) {
							grants.Add(1)
						}
					case 2:
					}
					vanish(c, tcp, rand.IntN(3))
				}
			})
		}
		wg.Wait()
		t.Logf("%d connections, %d grants seen", dials.Load(), grants.Load())
		var last string
		deadline := time.Now().Add(10 * time.Second)
		for {
			s := stats(t, obs)
			m := srv.Metrics()
			ctr := srv.Table.Counters()
			last = fmt.Sprintf("conns=%d parked=%d locks=%+v sems=%+v held=%v waiting=%v timers=%d keys=%d",
				s.Connections, m.Parked, s.Locks, s.Semaphores, ctr.Held, ctr.Waiting, ctr.Timers, ctr.Keys)
			if s.Connections == 1 && m.Connections == 1 && m.Parked == 0 && len(s.Locks) == 0 && len(s.Semaphores) == 0 &&
				ctr.Held == [2]int64{} && ctr.Waiting == [2]int64{} && ctr.Timers == 0 && ctr.Keys == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("not back at rest: %s", last)
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

// dialServed connects the way tr serves srv and returns the app-level
// connection and the TCP connection under it.
func dialServed(tr transport, srv *reactortest.Server) (net.Conn, *net.TCPConn, error) {
	nc, err := net.DialTimeout("tcp", srv.Addr, 10*time.Second)
	if err != nil {
		return nil, nil, err
	}
	tcp := nc.(*net.TCPConn)
	if !tr.tls {
		return nc, tcp, nil
	}
	tc := tls.Client(nc, srv.ClientTLS)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = nc.Close()
		return nil, nil, err
	}
	return tc, tcp, nil
}

// vanish ends a client connection in one of three ways.
func vanish(c net.Conn, tcp *net.TCPConn, how int) {
	switch how % 3 {
	case 0:
		_ = c.Close()
	case 1:
		_ = tcp.SetLinger(0)
		_ = tcp.Close()
	case 2:
		_ = tcp.CloseWrite()
		time.Sleep(time.Duration(rand.IntN(20)) * time.Millisecond)
		_ = c.Close()
	}
}
