package reactor_test

import (
	"bufio"
	"context"
	"math/rand"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// parkWaiters parks n raw connections on key behind holder h (each
// "l key 5"), and returns them with their readers.
func parkWaiters(t *testing.T, tr transport, srv *reactortest.Server, h *reactortest.Conn, key string, n int) ([]net.Conn, []*bufio.Reader) {
	cs := make([]net.Conn, n)
	rs := make([]*bufio.Reader, n)
	for i := range cs {
		cs[i] = dialRaw(t, tr, srv)
		rs[i] = bufio.NewReader(cs[i])
		_, err := cs[i].Write([]byte(req("l", key, "5")))
		require.NoError(t, err)
		waitLockWaiters(t, h, key, i+1)
	}
	return cs, rs
}

// A drain while the parked clients abort (half-close, as the Go client's
// Release does) and grants hand over: Shutdown ends as soon as nothing is
// parked, the parked gauge never goes negative and ends at 0, and every
// client gets at most a grant or nothing, then EOF.
func TestDrainWhileWaitersHalfClose(t *testing.T) {
	forTransports(t, func(t *testing.T, tr transport) {
		for round := 0; round < 4; round++ {
			srv := tr.start(t, func(c *reactortest.Config) { c.Server.Metrics = true })
			h := srv.Connect(t)
			const key = "rv4-drain"
			tok := lock(t, h, key)
			const n = 12
			cs, rs := parkWaiters(t, tr, srv, h, key, n)
			require.EqualValues(t, n, srv.Metrics().Parked)

			var neg atomic.Int64
			stop := make(chan struct{})
			var pollWG sync.WaitGroup
			pollWG.Add(1)
			go func() {
				defer pollWG.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					if p := srv.Metrics().Parked; p < 0 {
						neg.Store(p)
					}
					time.Sleep(100 * time.Microsecond)
				}
			}()

			shut := make(chan error, 1)
			began := time.Now()
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
				defer cancel()
				shut <- srv.Shutdown(ctx)
			}()
			rng := rand.New(rand.NewSource(int64(round)))
			var wg sync.WaitGroup
			grants := make([]string, n)
			for i := range cs {
				d := time.Duration(rng.Int63n(int64(3 * time.Millisecond)))
				wg.Add(1)
				go func() {
					defer wg.Done()
					time.Sleep(d)
					halfClose(t, cs[i])
					_ = cs[i].SetReadDeadline(time.Now().Add(6 * time.Second))
					var lines []string
					for {
						line, err := rs[i].ReadString('\n')
						if err != nil {
							break
						}
						lines = append(lines, strings.TrimSuffix(line, "\n"))
					}
					if len(lines) > 0 {
						grants[i] = lines[0]
					}
					if len(lines) > 1 {
						t.Errorf("round %d waiter %d: %q", round, i, lines)
					}
				}()
			}
			time.Sleep(time.Duration(rng.Int63n(int64(time.Millisecond))))
			require.Equal(t, rOK, h.Do("r", key, tok))
			wg.Wait()
			err := <-shut
			took := time.Since(began)
			close(stop)
			pollWG.Wait()
			require.NoError(t, err, "round %d: Shutdown cut something off", round)
			require.Less(t, took, 3*time.Second, "round %d: the drain waited for aborted waiters", round)
			require.Zero(t, neg.Load(), "round %d: the parked gauge went negative", round)
			require.Zero(t, srv.Metrics().Parked, "round %d: the parked gauge after the drain", round)
			ng := 0
			for _, g := range grants {
				if g != "" {
					mustGrant(t, g, rOK, 33)
					ng++
				}
			}
			t.Logf("round %d: %d grants reached half-closed waiters, drain took %v", round, ng, took)
		}
	})
}

// Auto-release off, grants chained through waiters that half-close at
// random moments: when everything is closed, releasing every token a
// client was told of leaves the key free (nobody holds it unknown), and
// the parked gauge is back to 0, never negative meanwhile.
func TestHalfCloseChainNoAutoRelease(t *testing.T) {
	forTransports(t, func(t *testing.T, tr transport) {
		srv := tr.start(t, func(c *reactortest.Config) { c.NoAutoRelease = true; c.Server.Metrics = true })
		h := srv.Connect(t)
		deadline := time.Now().Add(6 * time.Second)
		rng := rand.New(rand.NewSource(7))
		for round := 0; round < 30 && time.Now().Before(deadline); round++ {
			key := "rv4-chain-" + string(rune('a'+round%26))
			tok := lock(t, h, key)
			const n = 6
			cs, rs := parkWaiters(t, tr, srv, h, key, n)
			var mu sync.Mutex
			var told []string
			var wg sync.WaitGroup
			for i := range cs {
				d := time.Duration(rng.Int63n(int64(2 * time.Millisecond)))
				wg.Add(1)
				go func() {
					defer wg.Done()
					time.Sleep(d)
					halfClose(t, cs[i])
					_ = cs[i].SetReadDeadline(time.Now().Add(6 * time.Second))
					for {
						line, err := rs[i].ReadString('\n')
						if err != nil {
							break
						}
						f := strings.Fields(line)
						if len(f) == 3 {
							mu.Lock()
							told = append(told, f[1])
							mu.Unlock()
						}
					}
					_ = cs[i].Close()
				}()
			}
			time.Sleep(time.Duration(rng.Int63n(int64(time.Millisecond))))
			require.Equal(t, rOK, h.Do("r", key, tok))
			wg.Wait()
			for _, tk := range told {
				require.Equal(t, rOK, h.Do("r", key, tk), "round %d", round)
			}
			require.Eventually(t, func() bool { return srv.Metrics().Parked == 0 }, 2*time.Second, time.Millisecond, "round %d", round)
			require.GreaterOrEqual(t, srv.Metrics().Parked, int64(0))
			got := h.Do("l", key, "0")
			require.NotEqual(t, rTimeout, got, "round %d: %s held by nobody (told %d grants)", round, key, len(told))
			require.Equal(t, rOK, h.Do("r", key, mustGrant(t, got, rOK, 33)))
		}
	})
}
