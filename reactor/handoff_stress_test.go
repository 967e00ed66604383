package reactor_test

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// TestHandoffStress: workers on two loops contend for a few keys with
// pipelined requests behind blocking ones, disconnecting (FIN or RST) at
// random while holding or parked. Checks: replies in order and well formed,
// mutual exclusion, and that at the end nothing is held, queued, parked or
// counted as open.
func TestHandoffStress(t *testing.T) {
	srv := reactortest.Start(t, func(c *reactortest.Config) {
		c.Server.Loops = 2
		c.Server.Metrics = true
	})
	obs := srv.Dial(t)
	const workers = 12
	keys := []string{"s0", "s1"}
	var holders [2]atomic.Int32
	var grants, timeouts, drops atomic.Int64
	deadline := time.Now().Add(3 * time.Second)
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			var nc net.Conn
			var r *bufio.Reader
			dial := func() error {
				c, err := net.Dial("tcp", srv.Addr)
				if err != nil {
					return err
				}
				nc, r = c, bufio.NewReader(c)
				return nil
			}
			drop := func() {
				if rng.IntN(2) == 0 {
					_ = nc.(*net.TCPConn).SetLinger(0)
				}
				_ = nc.Close()
				nc = nil
				drops.Add(1)
			}
			read := func() (string, error) {
				_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
				l, err := r.ReadString('\n')
				return strings.TrimSuffix(l, "\n"), err
			}
			fail := func(f string, a ...any) { errs <- fmt.Errorf("worker %d: "+f, append([]any{w}, a...)...) }
			defer func() {
				if nc != nil {
					_ = nc.Close()
				}
			}()
			for time.Now().Before(deadline) {
				if nc == nil {
					if err := dial(); err != nil {
						fail("dial: %v", err)
						return
					}
				}
				ki := rng.IntN(len(keys))
				key := keys[ki]
				pipe := rng.IntN(2) == 0
				msg := req("l", key, "1")
				if pipe {
					msg += req("ping", "_", "_")
				}
				if _, err := nc.Write([]byte(msg)); err != nil {
					fail("write: %v", err)
					return
				}
				if rng.IntN(10) == 0 {
					// Disconnect while (probably) parked.
					time.Sleep(time.Duration(rng.IntN(3000)) * time.Microsecond)
					drop()
					continue
				}
				l1, err := read()
				if err != nil {
					fail("read l: %v", err)
					return
				}
				if pipe {
					l2, err := read()
					if err != nil {
						fail("read ping: %v (after %q)", err, l1)
						return
					}
					if l2 != rOK {
						fail("ping reply %q after %q", l2, l1)
						return
					}
				}
				if l1 == rTimeout {
					timeouts.Add(1)
					continue
				}
				m := grantRe.FindStringSubmatch(l1)
				if m == nil || m[1] != rOK {
					fail("lock reply %q", l1)
					return
				}
				grants.Add(1)
				if n := holders[ki].Add(1); n != 1 {
					fail("%d holders of %s", n, key)
					return
				}
				time.Sleep(time.Duration(rng.IntN(300)) * time.Microsecond)
				holders[ki].Add(-1)
				if rng.IntN(8) == 0 {
					drop()
					continue
				}
				if _, err := nc.Write([]byte(req("r", key, m[2]) + req("ping", "_", "_"))); err != nil {
					fail("write r: %v", err)
					return
				}
				if l, err := read(); err != nil || l != rOK {
					fail("release reply %q %v", l, err)
					return
				}
				if l, err := read(); err != nil || l != rOK {
					fail("ping reply %q %v", l, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("grants %d timeouts %d drops %d directs %d", grants.Load(), timeouts.Load(), drops.Load(), srv.Metrics().DirectResults)
	waitConnections(t, srv, 1)
	waitStats(t, obs, "no holders or waiters", func(s statsReply) bool { return len(s.Locks) == 0 })
	require.Eventually(t, func() bool { return srv.Metrics().Parked == 0 }, 5*time.Second, 10*time.Millisecond,
		"parked %d", srv.Metrics().Parked)
}
