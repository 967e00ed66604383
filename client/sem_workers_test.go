package client_test

import (
	"context"
	"fmt"
	"math/rand"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/client"
	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// Several workers contend for a semaphore (auto-release off, TLS + auth
// and plain), with ctx timeouts, ctx cancels, two-phase waits and
// Releases from another goroutine mid-acquire. When every worker has
// stopped and its last Release returned, all slots are free.
func TestSemaphoreWorkersFreeAllSlots(t *testing.T) {
	for _, m := range loopModes() {
		t.Run(m.name, func(t *testing.T) {
			srv := start(t, func(c *reactortest.Config) {
				c.NoAutoRelease = true
				c.SelfSignedTLS = m.tls
				c.Server.AuthToken = m.auth
			})
			const limit, workers = 2, 5
			key := "rv4-sem"
			var wg sync.WaitGroup
			stop := time.Now().Add(4 * time.Second)
			errs := make(chan error, workers)
			var mu sync.Mutex
			counts := map[string]int{}
			for w := 0; w < workers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rng := rand.New(rand.NewSource(int64(w)))
					s := &client.Semaphore{Key: key, Limit: limit, LeaseTTL: 30, Servers: []string{srv.Addr},
						TLSConfig: srv.ClientTLS, AuthToken: m.auth, AcquireTimeout: 3 * time.Second}
					defer func() { _ = s.Close() }()
					for time.Now().Before(stop) {
						ctx, cancel := context.WithTimeout(context.Background(), time.Duration(5+rng.Intn(40))*time.Millisecond)
						var ok bool
						var err error
						mode := rng.Intn(3)
						switch mode {
						case 0:
							ok, err = s.Acquire(ctx)
						case 1:
							var st string
							st, err = s.Enqueue(ctx)
							if err == nil && st == client.StatusQueued {
								ok, err = s.Wait(ctx, time.Second)
							} else if err == nil {
								ok = true
							}
						case 2:
							d := time.Duration(rng.Intn(20)) * time.Millisecond
							go func() { time.Sleep(d); _ = s.Release(context.Background()) }()
							ok, err = s.Acquire(context.Background())
						}
						if ok {
							time.Sleep(time.Duration(rng.Intn(3)) * time.Millisecond)
						}
						cancel()
						rctx, rcancel := context.WithTimeout(context.Background(), 3*time.Second)
						rerr := s.Release(rctx)
						rcancel()
						if rerr != nil {
							errs <- fmt.Errorf("worker %d mode %d: Release: %w", w, mode, rerr)
							return
						}
						mu.Lock()
						counts[fmt.Sprintf("mode%d ok=%v err=%v", mode, ok, err != nil)]++
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			t.Logf("%v", counts)
			// Mode 2's background Release may still be running for a
			// moment: allow it to finish.
			probe := dial(t, srv.Addr, loopDialOpts(srv, m)...)
			ctx := ctxT(t, 5*time.Second)
			var gs []client.Grant
			require.Eventually(t, func() bool {
				for len(gs) < limit {
					g, err := probe.TryAcquire(ctx, key, client.WithLimit(limit))
					if err != nil {
						return false
					}
					gs = append(gs, g)
				}
				return true
			}, 2*time.Second, 10*time.Millisecond, "only %d of %d slots free after every worker returned", len(gs), limit)
			for _, g := range gs {
				require.NoError(t, probe.Release(ctx, g))
			}
		})
	}
}

func loopDialOpts(srv *reactortest.Server, m loopMode) []client.DialOption {
	var o []client.DialOption
	if m.tls {
		o = append(o, client.WithTLS(srv.ClientTLS))
	}
	if m.auth != "" {
		o = append(o, client.WithAuth(m.auth))
	}
	return o
}
