package client

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestReleaseInFlightCutByCloseReportsIt: Lock.Release "returns ... the
// failure of a release that could not be confirmed"; Close cuts off
// silently only "a release still going on in the background (a Release
// whose ctx ended first)". Here Release still waits, within its ctx, for
// the server to answer, when another goroutine calls Close: the release is
// never confirmed, and Release says so (it returned nil).
func TestReleaseInFlightCutByCloseReportsIt(t *testing.T) {
	srv := newStallServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	l := &Lock{Key: "r4-inflight", LeaseTTL: 30, Servers: []string{srv.addr}, Heartbeat: -1}
	defer stallDrain(srv, &l.h)
	ok, err := l.Acquire(ctx)
	require.NoError(t, err)
	require.True(t, ok)

	srv.stallRelease.Store(true) // the server never answers the release
	rerr := make(chan error, 1)
	go func() { rerr <- l.Release(ctx) }() // ctx has 5 s left: Release waits in the foreground
	deadline := time.Now().Add(2 * time.Second)
	for srv.releases.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	require.EqualValues(t, 1, srv.releases.Load(), "the release was sent")
	time.Sleep(20 * time.Millisecond)
	select {
	case err := <-rerr:
		t.Fatalf("Release returned %v before any answer", err)
	default:
	}

	require.NoError(t, l.Close())
	select {
	case err := <-rerr:
		require.Error(t, err, "Release, waiting within its ctx for its own release to be answered, "+
			"returned nil after a concurrent Close cut that release off: the server never confirmed it")
	case <-time.After(3 * time.Second):
		t.Fatal("Release did not return after Close")
	}
}

// Close twice while a background release is in flight, and Release
// afterwards: nothing hangs, nothing is reported. (Holds.)
func TestDoubleCloseWithBackgroundRelease(t *testing.T) {
	srv := newStallServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	l := &Lock{Key: "r4-double", LeaseTTL: 30, Servers: []string{srv.addr}, Heartbeat: -1}
	defer stallDrain(srv, &l.h)
	ok, err := l.Acquire(ctx)
	require.NoError(t, err)
	require.True(t, ok)
	srv.stallRelease.Store(true)
	rctx, rcancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer rcancel()
	require.ErrorIs(t, l.Release(rctx), context.DeadlineExceeded)
	done := make(chan struct{})
	go func() {
		defer close(done)
		errs := make(chan error, 2)
		for range 2 {
			go func() { errs <- l.Close() }()
		}
		for range 2 {
			require.NoError(t, <-errs)
		}
		require.NoError(t, l.Close())
	}()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		t.Fatal("concurrent Close hung")
	}
	l.h.mu.Lock()
	n := len(l.h.releasing)
	l.h.mu.Unlock()
	require.Zero(t, n)
	require.NoError(t, l.Release(ctx))
}

// Close racing Release and re-Acquire many times (run with -race): no
// op is left registered, Close never waits forever. (Holds.)
func TestCloseRaceNoLeftoverOps(t *testing.T) {
	srv := newStallServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Second)
	defer cancel()
	end := time.Now().Add(2 * time.Second)
	for i := 0; time.Now().Before(end); i++ {
		srv.stallRelease.Store(i%2 == 0)
		l := &Lock{Key: "r4-race", LeaseTTL: 30, Servers: []string{srv.addr}, Heartbeat: -1}
		ok, err := l.Acquire(ctx)
		require.NoError(t, err)
		require.True(t, ok)
		opCtx, opCancel := context.WithTimeout(ctx, 100*time.Millisecond)
		res := make(chan struct{})
		go func() {
			defer close(res)
			if i%3 == 0 {
				_, _ = l.Acquire(opCtx)
			} else {
				_ = l.Release(opCtx)
			}
		}()
		if i%4 == 0 {
			time.Sleep(time.Duration(i%7) * 100 * time.Microsecond)
		}
		cdone := make(chan struct{})
		go func() { _ = l.Close(); close(cdone) }()
		select {
		case <-cdone:
		case <-time.After(3 * time.Second):
			t.Fatalf("iteration %d: Close hung", i)
		}
		<-res
		opCancel()
		_ = l.Close()
		l.h.mu.Lock()
		n := len(l.h.releasing)
		l.h.mu.Unlock()
		require.Zero(t, n, "iteration %d", i)
	}
}
