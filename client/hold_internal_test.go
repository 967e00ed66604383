package client

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// lockHeld reports whether some connection holds lock key on srv.
func lockHeld(srv *reactortest.Server, key string) bool {
	for _, ls := range srv.Table.Stats(srv.Table.Now()).Locks {
		if ls.Key == key {
			return ls.OwnerConnID != 0
		}
	}
	return false
}

// TestLockReleaseEndedCtxStillReleases: Release with a context that has
// already ended still sends the release (the Lock forgets the hold at
// once, so nothing could release it later): with the server's
// auto-release off the lock must not stay held for its whole lease. The
// call returns ctx.Err(); a retried Release reports the outcome (nil).
func TestLockReleaseEndedCtxStillReleases(t *testing.T) {
	t.Parallel()
	srv := reactortest.Start(t, func(c *reactortest.Config) { c.NoAutoRelease = true })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l := &Lock{Key: "rel-cancel", LeaseTTL: 30, Servers: []string{srv.Addr}, Heartbeat: -1}
	ok, err := l.Acquire(ctx)
	require.NoError(t, err)
	require.True(t, ok)

	ended, endNow := context.WithCancel(ctx)
	endNow() // e.g. `defer l.Release(r.Context())` after the request was cancelled
	err = l.Release(ended)
	require.ErrorIs(t, err, context.Canceled)

	// The caller retries with a live context: it waits for the release
	// and reports it...
	require.NoError(t, l.Release(ctx), "retried Release")
	// ...which the server did get: the lock is free, not held for the rest
	// of its 30 s lease.
	time.Sleep(100 * time.Millisecond)
	require.False(t, lockHeld(srv, "rel-cancel"),
		"lock still held on the server after Release returned (and after a retried Release returned nil); nobody can release it now")
}

// TestLockWaitRenewCheckCtxEndKeepsHold: Lock.Wait on a fast-path grant
// whose place was already collected (error_not_enqueued) checks the hold
// with a renewal. If ctx ends during that renewal the hold must stay, as
// Lock.Wait promises: "If ctx ends while Wait collects a grant Enqueue
// already got (StatusAcquired), the lock stays held and Wait may be called
// again."
func TestLockWaitRenewCheckCtxEndKeepsHold(t *testing.T) {
	t.Parallel()
	tok := fmt.Sprintf("%016x%016x", 5, 9)
	addr := scriptedServer(t, func(i int, verb string) (string, time.Duration) {
		switch verb {
		case "e":
			return "acquired " + tok + " 30\n", 0
		case "w":
			return "error_not_enqueued\n", 0 // an earlier abandoned w collected it
		case "n":
			return "ok 30\n", 400 * time.Millisecond // a slow renewal answer
		case "r":
			return "ok\n", 0
		}
		return "ok\n", 0
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rec := make(chan error, 1)
	l := &Lock{Key: "wk", LeaseTTL: 30, Servers: []string{addr}, Heartbeat: -1,
		OnRenewError: func(err error) { rec <- err }}
	st, err := l.Enqueue(ctx)
	require.NoError(t, err)
	require.Equal(t, StatusAcquired, st)

	wctx, wcancel := context.WithTimeout(ctx, 150*time.Millisecond)
	defer wcancel()
	_, err = l.Wait(wctx, time.Second)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Equal(t, tok, l.Token(), "the fast-path grant must stay held when Wait's ctx ends")
	select {
	case <-l.Done():
		t.Fatal("hold ended")
	default:
	}
	_ = l.Release(ctx)
}

// TestLockReleaseReportsLossAcrossReacquire: Release returns, once, the
// ErrLost error of a hold lost since the last Release, also when a new
// Acquire (a retry loop) came between.
func TestLockReleaseReportsLossAcrossReacquire(t *testing.T) {
	t.Parallel()
	srv := reactortest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	lost := make(chan error, 2)
	l := &Lock{Key: "lr", LeaseTTL: 1, Servers: []string{srv.Addr}, Heartbeat: -1,
		OnRenewError: func(err error) { lost <- err }}
	ok, err := l.Acquire(ctx)
	require.NoError(t, err)
	require.True(t, ok)
	g, _ := l.Grant()
	thief, err := Dial(srv.Addr)
	require.NoError(t, err)
	defer func() { _ = thief.Close() }()
	require.NoError(t, thief.Release(ctx, g)) // bearer token: the hold is gone
	select {
	case err := <-lost:
		require.ErrorIs(t, err, ErrLost)
	case <-time.After(3 * time.Second):
		t.Fatal("loss not detected")
	}
	ok, err = l.Acquire(ctx) // a retry loop acquires again
	require.NoError(t, err)
	require.True(t, ok)
	err = l.Release(ctx)
	require.True(t, errors.Is(err, ErrLost), "Release after a loss (no Release since) returned %v", err)
	require.NoError(t, l.Release(ctx), "the loss is reported once")
}

// pastDeadlineCtx is a context in the state every context.WithDeadline is
// in for a moment: its deadline has passed but its timer has not fired yet,
// so Err() is still nil and Done() still open.
type pastDeadlineCtx struct{ context.Context }

func (pastDeadlineCtx) Deadline() (time.Time, bool) { return time.Now().Add(-time.Millisecond), true }

// TestLockWaitPastDeadlineKeepsHold: Lock.Wait on a fast-path grant whose
// ctx deadline has passed but whose Err() is not yet set (the window
// before the context's timer fires) gets context.DeadlineExceeded from
// waitSeconds; that is a context error like any other and must keep the
// StatusAcquired hold, as the doc promises.
func TestLockWaitPastDeadlineKeepsHold(t *testing.T) {
	t.Parallel()
	srv := reactortest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l := &Lock{Key: "wdl", Servers: []string{srv.Addr}, Heartbeat: -1}
	st, err := l.Enqueue(ctx)
	require.NoError(t, err)
	require.Equal(t, StatusAcquired, st)
	tok := l.Token()

	_, err = l.Wait(pastDeadlineCtx{ctx}, time.Second)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Equal(t, tok, l.Token(), "the StatusAcquired hold was dropped by a Wait whose ctx ended")
	require.NoError(t, l.Release(ctx))
}

// TestLockReacquireEndedCtxReleasesOld: acquiring a held Lock again drops
// the old hold. With a context that has already ended the new acquire
// fails, but the old hold must still be released, not only have its
// connection closed: with the server's auto-release off that would leave
// it held for its whole lease, by a Lock that no longer knows it.
func TestLockReacquireEndedCtxReleasesOld(t *testing.T) {
	t.Parallel()
	srv := reactortest.Start(t, func(c *reactortest.Config) { c.NoAutoRelease = true })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l := &Lock{Key: "reacq-cancel", LeaseTTL: 30, Servers: []string{srv.Addr}, Heartbeat: -1}
	ok, err := l.Acquire(ctx)
	require.NoError(t, err)
	require.True(t, ok)

	ended, endNow := context.WithCancel(ctx)
	endNow()
	ok, err = l.Acquire(ended)
	require.ErrorIs(t, err, context.Canceled)
	require.False(t, ok)
	require.Eventually(t, func() bool { return !lockHeld(srv, "reacq-cancel") }, 2*time.Second, 10*time.Millisecond,
		"the old hold is still held on the server")
	require.NoError(t, l.Release(ctx), "the old hold's release succeeded; nothing to report")
}
