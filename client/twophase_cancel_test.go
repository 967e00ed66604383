package client_test

import (
	"context"
	"fmt"
	"math/rand"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/client"
	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// Two-phase with cancel, auto-release off: Enqueue (queued behind a
// competitor), Wait under a ctx cancelled at a random moment while the
// competitor releases; or Release from another goroutine during Wait.
// After Release returns, nobody holds the key.
func TestTwoPhaseCancelLeavesNothingHeld(t *testing.T) {
	srv := start(t, func(c *reactortest.Config) { c.NoAutoRelease = true })
	comp := dial(t, srv.Addr)
	probe := dial(t, srv.Addr)
	rng := rand.New(rand.NewSource(2))
	base := runtime.NumGoroutine()
	stuck, rounds := 0, 0
	deadline := time.Now().Add(5 * time.Second)
	bg := context.Background()
	for i := 0; time.Now().Before(deadline) && i < 150; i++ {
		rounds++
		key := fmt.Sprintf("rv4-2p-%d", i%5)
		g, err := comp.Acquire(bg, key, 0, client.WithLeaseTTL(30))
		require.NoError(t, err)
		l := &client.Lock{Key: key, LeaseTTL: 30, Servers: []string{srv.Addr}, Heartbeat: -1}
		st, err := l.Enqueue(bg)
		require.NoError(t, err)
		require.Equal(t, client.StatusQueued, st)
		wctx, wcancel := context.WithCancel(bg)
		res := make(chan error, 1)
		go func() { _, err := l.Wait(wctx, 5*time.Second); res <- err }()
		d1 := time.Duration(rng.Int63n(int64(2 * time.Millisecond)))
		go func() {
			time.Sleep(d1)
			_ = comp.Release(bg, g)
		}()
		time.Sleep(time.Duration(rng.Int63n(int64(2 * time.Millisecond))))
		switch i % 3 {
		case 0:
			wcancel()
			<-res
		case 1:
			rerr := l.Release(bg)
			require.NoError(t, rerr, "round %d", i)
			<-res
		case 2:
			<-res // granted (or not)
		}
		wcancel()
		rctx, rcancel := context.WithTimeout(bg, 3*time.Second)
		require.NoError(t, l.Release(rctx), "round %d", i)
		rcancel()
		require.NoError(t, l.Close())
		// the competitor's release must have been applied before probing
		require.Eventually(t, func() bool { return probeFree(t, probe, key, 0) }, time.Second, 5*time.Millisecond,
			"round %d: %s held by nobody after Release returned", i, key)
	}
	t.Logf("%d rounds, %d stuck", rounds, stuck)
	require.Eventually(t, func() bool { return runtime.NumGoroutine() <= base+2 }, 3*time.Second, 20*time.Millisecond,
		"goroutines: %d, base %d", runtime.NumGoroutine(), base)
}
