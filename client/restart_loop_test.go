package client_test

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/client"
	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// A worker loop across server restarts (connection refused while down,
// connections reset while parked or held), auto-release off: the API
// never hangs, each Release returns within its ctx, the loop acquires
// again once the server is back, and no goroutine is left behind.
func TestWorkerLoopAcrossRestarts(t *testing.T) {
	cfg := func(c *reactortest.Config) { c.NoAutoRelease = true }
	srv := start(t, cfg)
	addr := srv.Addr
	base := runtime.NumGoroutine()
	l := &client.Lock{Key: "rv4-restart", LeaseTTL: 30, Servers: []string{addr}, AcquireTimeout: 2 * time.Second}
	other := &client.Lock{Key: "rv4-restart", LeaseTTL: 30, Servers: []string{addr}, AcquireTimeout: 2 * time.Second}
	var mu sync.Mutex
	cur := srv
	stopWorker := make(chan struct{})
	var wg sync.WaitGroup
	var okCount, errCount, lostCount int
	var maxRelease time.Duration
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stopWorker:
				return
			default:
			}
			r := lockCycle(l, 5*time.Millisecond)
			ok, err, rerr, d := r.ok, r.err, r.rerr, r.took
			mu.Lock()
			if ok {
				okCount++
			} else if err != nil {
				errCount++
			}
			if errors.Is(rerr, client.ErrLost) {
				lostCount++
			}
			maxRelease = max(maxRelease, d)
			mu.Unlock()
			if err != nil && !ok {
				time.Sleep(2 * time.Millisecond)
			}
		}
	}()
	// A competitor keeps the worker parked part of the time.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stopWorker:
				return
			default:
			}
			lockCycle(other, 20*time.Millisecond)
		}
	}()
	for i := 0; i < 4; i++ {
		time.Sleep(400 * time.Millisecond)
		mu.Lock()
		s := cur
		mu.Unlock()
		s.Close()
		time.Sleep(150 * time.Millisecond) // refused meanwhile
		ns := start(t, cfg, func(c *reactortest.Config) { c.Server.Addr = addr })
		mu.Lock()
		cur = ns
		mu.Unlock()
	}
	time.Sleep(400 * time.Millisecond)
	close(stopWorker)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(8 * time.Second):
		t.Fatalf("worker hung")
	}
	require.NoError(t, l.Close())
	require.NoError(t, other.Close())
	mu.Lock()
	t.Logf("ok %d, errors %d, lost reported %d, slowest Release %v", okCount, errCount, lostCount, maxRelease)
	mu.Unlock()
	require.Less(t, maxRelease, 1500*time.Millisecond)
	// The last server: free after everything returned.
	probe := dial(t, addr)
	require.True(t, probeFree(t, probe, "rv4-restart", 0), "held by nobody after the workers stopped")
	require.NoError(t, probe.Close())
	_ = base
	if !assertEventuallyGoroutines(0, 5*time.Second) {
		t.Fatalf("client goroutines left: %d\n%s", clientGoroutines(), goroutineStacks())
	}
}

// cycle is one lockCycle: Acquire's results, Release's error and how
// long Release took.
type cycle struct {
	ok        bool
	err, rerr error
	took      time.Duration
}

// lockCycle acquires l within 300 ms, holds it for hold if granted, and
// releases within 2 s.
func lockCycle(l *client.Lock, hold time.Duration) cycle {
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	var c cycle
	c.ok, c.err = l.Acquire(ctx)
	if c.ok {
		time.Sleep(hold)
	}
	cancel()
	rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer rcancel()
	began := time.Now()
	c.rerr = l.Release(rctx)
	c.took = time.Since(began)
	return c
}

// clientGoroutines counts goroutines running the client's own code
// (a frame in a non-test file of the package), not tests' goroutines
// (other tests of the package may be paused in t.Parallel meanwhile).
func clientGoroutines() int {
	n := 0
	for _, g := range strings.Split(goroutineStacks(), "\n\n") {
		for _, line := range strings.Split(g, "\n") {
			if i := strings.Index(line, "/client/"); i >= 0 && strings.Contains(line, ".go:") && !strings.Contains(line, "_test.go:") {
				n++
				break
			}
		}
	}
	return n
}

func goroutineStacks() string {
	buf := make([]byte, 4<<20)
	return string(buf[:runtime.Stack(buf, true)])
}

func assertEventuallyGoroutines(n int, d time.Duration) bool {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if clientGoroutines() <= n {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}
