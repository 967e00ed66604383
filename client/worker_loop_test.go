package client_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/client"
	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// probeFree tries key with timeout 0 from conn p: true if it was free
// (and releases it again).
func probeFree(t *testing.T, p *client.Conn, key string, limit int) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var g client.Grant
	var err error
	if limit > 0 {
		g, err = p.TryAcquire(ctx, key, client.WithLimit(limit))
	} else {
		g, err = p.TryAcquire(ctx, key)
	}
	if errors.Is(err, client.ErrTimeout) {
		return false
	}
	require.NoError(t, err)
	require.NoError(t, p.Release(ctx, g))
	return true
}

type loopMode struct {
	name string
	tls  bool
	auth string
}

func loopModes() []loopMode {
	return []loopMode{{name: "plain"}, {name: "tls+auth", tls: true, auth: "s3cret"}}
}

// A worker loop as production code writes it, on a server with
// auto-release off: Acquire under a short ctx (timing out in the queue,
// cancelled from another goroutine, or granted as a competitor releases),
// then Release; after every Release returns (with a fresh ctx), nobody
// must be left holding the key, and the goroutine count must stay flat.
func TestWorkerLoopLeavesNothingHeld(t *testing.T) {
	for _, m := range loopModes() {
		t.Run(m.name, func(t *testing.T) {
			srv := start(t, func(c *reactortest.Config) {
				c.NoAutoRelease = true
				c.SelfSignedTLS = m.tls
				c.Server.AuthToken = m.auth
			})
			var dopts []client.DialOption
			if m.tls {
				dopts = append(dopts, client.WithTLS(srv.ClientTLS))
			}
			if m.auth != "" {
				dopts = append(dopts, client.WithAuth(m.auth))
			}
			comp := dial(t, srv.Addr, dopts...)
			probe := dial(t, srv.Addr, dopts...)
			rng := rand.New(rand.NewSource(1))
			for _, limit := range []int{0, 1} {
				key := fmt.Sprintf("rv4-worker-%d", limit)
				var lk interface {
					Acquire(context.Context) (bool, error)
					Release(context.Context) error
					Close() error
				}
				if limit == 0 {
					lk = &client.Lock{Key: key, LeaseTTL: 30, Servers: []string{srv.Addr}, TLSConfig: srv.ClientTLS, AuthToken: m.auth, AcquireTimeout: 5 * time.Second}
				} else {
					lk = &client.Semaphore{Key: key, Limit: limit, LeaseTTL: 30, Servers: []string{srv.Addr}, TLSConfig: srv.ClientTLS, AuthToken: m.auth, AcquireTimeout: 5 * time.Second}
				}
				var copts []client.Option
				if limit > 0 {
					copts = append(copts, client.WithLimit(limit))
				}
				base := runtime.NumGoroutine()
				stuck, rounds := 0, 0
				deadline := time.Now().Add(3 * time.Second)
				for i := 0; time.Now().Before(deadline) && i < 120; i++ {
					rounds++
					bg := context.Background()
					g, err := comp.Acquire(bg, key, 0, append(copts, client.WithLeaseTTL(30))...)
					require.NoError(t, err)
					ctx, cancel := context.WithTimeout(bg, time.Duration(20+rng.Intn(60))*time.Millisecond)
					var wg sync.WaitGroup
					wg.Add(1)
					d1 := time.Duration(rng.Int63n(int64(60 * time.Millisecond)))
					go func() {
						defer wg.Done()
						time.Sleep(d1)
						if i%3 == 0 {
							cancel()
						}
						_ = comp.Release(bg, g)
					}()
					ok, err := lk.Acquire(ctx)
					wg.Wait()
					if ok {
						require.NoError(t, err)
					}
					// The common deferred pattern: Release with the same,
					// possibly ended ctx, then with a fresh one.
					_ = lk.Release(ctx)
					cancel()
					rctx, rcancel := context.WithTimeout(bg, 3*time.Second)
					rerr := lk.Release(rctx)
					rcancel()
					require.NoError(t, rerr, "round %d", i)
					if !probeFree(t, probe, key, limit) {
						stuck++
						t.Logf("round %d (ok=%v err=%v): key still held after Release returned", i, ok, err)
					}
				}
				require.NoError(t, lk.Close())
				require.Zero(t, stuck, "%d of %d rounds left %s held by nobody after Release returned", stuck, rounds, key)
				require.Eventually(t, func() bool { return runtime.NumGoroutine() <= base+2 }, 3*time.Second, 20*time.Millisecond,
					"goroutines: %d, base %d", runtime.NumGoroutine(), base)
			}
		})
	}
}
