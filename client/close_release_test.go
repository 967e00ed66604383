package client

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// stallDrain ends whatever release l still has in flight (the server hangs
// up) and waits for it, so nothing leaks into later tests.
func stallDrain(srv *stallServer, h *holder) {
	srv.hangUpAll()
	ctx, cancel := context.WithTimeout(context.Background(), releaseWait+2*time.Second)
	defer cancel()
	_ = h.release(ctx)
}

// TestCloseRacingReleaseCutsIt: Lock.Close "returns once" a background
// release "has stopped"; Release and Close may be called from any
// goroutine. Release registered its release only after stopRenewer, so a
// Close in between saw neither a hold nor a release and returned, and the
// release outlived it by up to releaseWait (5 s). It is now registered in
// the critical section that ends the hold (releaseLocked).
func TestCloseRacingReleaseCutsIt(t *testing.T) {
	srv := newStallServer(t)
	srv.stallRelease.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	deadline := time.Now().Add(3 * time.Second)
	iters := 0
	for time.Now().Before(deadline) {
		iters++
		l := &Lock{Key: "r3-race", LeaseTTL: 30, Servers: []string{srv.addr}, Heartbeat: -1}
		ok, err := l.Acquire(ctx)
		require.NoError(t, err)
		require.True(t, ok)

		rctx, rcancel := context.WithTimeout(ctx, 150*time.Millisecond)
		outlived := closeWhen(t, srv, l, iters, "Release",
			func() error { return l.Release(rctx) },
			func(h *holder) bool { return h.cur == nil }) // Release ended the hold
		rcancel()
		if outlived {
			return
		}
	}
	t.Logf("race not hit in %d iterations", iters)
}

// closeWhen runs op (who) in the background, calls l.Close as soon as
// ready holds (checked under l.h.mu), and reports a release still in
// flight after Close returned; it drains the stalled server's releases
// either way.
func closeWhen(t *testing.T, srv *stallServer, l *Lock, iter int, who string, op func() error, ready func(*holder) bool) bool {
	t.Helper()
	res := make(chan error, 1)
	go func() { res <- op() }()
	for {
		l.h.mu.Lock()
		ok := ready(&l.h)
		l.h.mu.Unlock()
		if ok {
			break
		}
	}
	require.NoError(t, l.Close())
	closedAt := time.Now()
	err := <-res
	defer stallDrain(srv, &l.h)
	l.h.mu.Lock()
	inFlight := len(l.h.releasing)
	l.h.mu.Unlock()
	if inFlight > 0 {
		t.Errorf("iteration %d: Close returned with no release to cut off, then %s started one: "+
			"%v after Close returned it is still in flight (%s returned %v); it lives on for up to %v",
			iter, who, time.Since(closedAt).Round(time.Millisecond), who, err, releaseWait)
		return true
	}
	return false
}

// TestCloseRacingReacquireCutsRelease: the same on the re-acquire path:
// Acquire on a held Lock ends the old hold and registers its release in
// one critical section, so a Close right after cuts that release off.
func TestCloseRacingReacquireCutsRelease(t *testing.T) {
	srv := newStallServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	deadline := time.Now().Add(3 * time.Second)
	iters := 0
	for time.Now().Before(deadline) {
		iters++
		srv.stallRelease.Store(false)
		l := &Lock{Key: "r3-reacq", LeaseTTL: 30, Servers: []string{srv.addr}, Heartbeat: -1}
		ok, err := l.Acquire(ctx)
		require.NoError(t, err)
		require.True(t, ok)
		l.h.mu.Lock()
		old := l.h.cur
		l.h.mu.Unlock()
		srv.stallRelease.Store(true)

		actx, acancel := context.WithTimeout(ctx, 200*time.Millisecond)
		outlived := closeWhen(t, srv, l, iters, "the re-acquiring Acquire",
			func() error { _, err := l.Acquire(actx); return err },
			func(h *holder) bool { return h.cur != old }) // the new hold replaced the old one
		acancel()
		if outlived {
			return
		}
	}
	t.Logf("race not hit in %d iterations", iters)
}

// TestReleaseAfterCloseReportsNothingCut: Lock.Close "closes the
// connection without releasing" and cuts a background release off "the
// same way". Closing a held lock leaves nothing for the next Release to
// report, and neither does cutting a release off (it left a bare
// ErrClosed, which the Release of a later, released hold returned).
func TestReleaseAfterCloseReportsNothingCut(t *testing.T) {
	srv := newStallServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	l := &Lock{Key: "r3-report", LeaseTTL: 30, Servers: []string{srv.addr}, Heartbeat: -1}
	defer stallDrain(srv, &l.h)
	ok, err := l.Acquire(ctx)
	require.NoError(t, err)
	require.True(t, ok)

	srv.stallRelease.Store(true)
	rctx, rcancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer rcancel()
	require.ErrorIs(t, l.Release(rctx), context.DeadlineExceeded)
	require.NoError(t, l.Close()) // cuts the background release off, as documented

	srv.stallRelease.Store(false)
	ok, err = l.Acquire(ctx) // a new hold, released below and answered "ok"
	require.NoError(t, err)
	require.True(t, ok)
	before := srv.releases.Load()
	err = l.Release(ctx)
	require.Equal(t, before+1, srv.releases.Load(), "the new hold's release was sent")
	require.NoError(t, err,
		"Release of a new hold, answered ok, returned the error Close caused by cutting off the earlier "+
			"background release (Close of a held lock leaves nothing to report)")
}

// TestSemaphoreReleaseAfterCloseReportsNothingCut: the same for
// Semaphore.Close.
func TestSemaphoreReleaseAfterCloseReportsNothingCut(t *testing.T) {
	srv := newStallServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	s := &Semaphore{Key: "r3-sem", Limit: 2, LeaseTTL: 30, Servers: []string{srv.addr}, Heartbeat: -1}
	defer stallDrain(srv, &s.h)
	ok, err := s.Acquire(ctx)
	require.NoError(t, err)
	require.True(t, ok)
	srv.stallRelease.Store(true)
	rctx, rcancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer rcancel()
	require.ErrorIs(t, s.Release(rctx), context.DeadlineExceeded)
	require.NoError(t, s.Close())
	err = s.Release(ctx)
	require.NoError(t, err, "Release after Close returned the cut-off release's error; after Close of a held slot it returns nil")
}
