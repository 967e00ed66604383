package client

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// TestAbortReacquireSlowReleaseNotLost: a held Lock acquires again; the
// server answers the old hold's release after 1.5 s (slow, not gone).
// start() waits reacquireReleaseWait (1 s) and then closes the old
// connection itself. The hold was never lost: its lease was valid the
// whole time and the caller had already moved on. The next Release must
// not report ErrLost (before adff85b it reported the bare ErrClosed
// failure of the release).
func TestAbortReacquireSlowReleaseNotLost(t *testing.T) {
	addr := scriptedServer(t, func(i int, verb string) (string, time.Duration) {
		switch verb {
		case "l":
			return fmt.Sprintf("ok %032x 30\n", i+1), 0
		case "r":
			if i == 1 { // the old hold's release: slow
				return "ok\n", 1500 * time.Millisecond
			}
			return "ok\n", 0
		}
		return "ok\n", 0
	})
	ctx := context.Background()
	lost := make(chan error, 4)
	l := &Lock{Key: "rv2-slow", LeaseTTL: 30, Servers: []string{addr}, Heartbeat: -1,
		OnRenewError: func(err error) { lost <- err }}
	defer func() { _ = l.Close() }()
	ok, err := l.Acquire(ctx)
	require.NoError(t, err)
	require.True(t, ok)
	ok, err = l.Acquire(ctx) // releases the old hold; its answer takes 1.5 s
	require.NoError(t, err)
	require.True(t, ok)
	err = l.Release(ctx)
	t.Logf("Release returned: %v", err)
	require.False(t, errors.Is(err, ErrLost),
		"neither hold was lost (the old one was given up by the re-Acquire, its lease valid; the client closed "+
			"its connection itself after reacquireReleaseWait because the server was slow), yet Release reports "+
			"ErrLost: %v", err)
	select {
	case e := <-lost:
		t.Fatalf("OnRenewError called: %v", e)
	default:
	}
}

// halfCloseIgnoringServer parks every l/e/w (never answers them), answers
// other requests with ok, and on EOF (the client's half-close) keeps the
// connection open until the client closes it: like dflockd 1.10, or a
// proxy that does not pass a half-close on.
func halfCloseIgnoringServer(t *testing.T) (addr string, parked func() int) {
	t.Helper()
	var mu sync.Mutex
	n := 0
	done := make(chan struct{})
	addr = acceptingServer(t, func(nc net.Conn) {
		br := bufio.NewReader(nc)
		for {
			verb, err := readRequest(br)
			if err != nil {
				// EOF: keep the connection open (a parked request
				// stays parked) until the test ends.
				<-done
				_ = nc.Close()
				return
			}
			switch verb {
			case "l", "sl", "w", "sw":
				mu.Lock()
				n++
				mu.Unlock()
				continue
			case "e", "se":
				_, _ = nc.Write([]byte("queued\n"))
				continue
			}
			_, _ = nc.Write([]byte("ok\n"))
		}
	})
	t.Cleanup(func() { close(done) })
	return addr, func() int { mu.Lock(); defer mu.Unlock(); return n }
}

// noAutoReleaseHolder starts a server with auto-release off and returns
// it, a ctx bounded by d, and a connection to it (both ended at cleanup).
func noAutoReleaseHolder(t *testing.T, d time.Duration) (*reactortest.Server, context.Context, *Conn) {
	t.Helper()
	srv := reactortest.Start(t, func(c *reactortest.Config) { c.NoAutoRelease = true })
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	b, err := Dial(srv.Addr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Close() })
	return srv, ctx, b
}

// parkedOnIgnoringServer starts a Lock's Acquire of key on a server that
// ignores half-closes and returns once the server has it parked.
func parkedOnIgnoringServer(t *testing.T, key string) (*Lock, <-chan error) {
	t.Helper()
	addr, parked := halfCloseIgnoringServer(t)
	l := &Lock{Key: key, LeaseTTL: 30, AcquireTimeout: 10 * time.Second, Servers: []string{addr}, Heartbeat: -1}
	acq := make(chan error, 1)
	go func() { _, err := l.Acquire(context.Background()); acq <- err }()
	require.Eventually(t, func() bool { return parked() == 1 }, 3*time.Second, time.Millisecond)
	return l, acq
}

// TestAbortReleaseQueuedLockLatency: Release of a Lock whose Acquire is
// queued used to close the connection and return at once. It now aborts
// (half-close, read the last replies), and waits for that at most
// abortWait: a server (or proxy) that keeps the blocked request after the
// half-close made a plain `defer l.Release(context.Background())` block
// for releaseWait (5 s) per queued hold.
func TestAbortReleaseQueuedLockLatency(t *testing.T) {
	l, acq := parkedOnIgnoringServer(t, "rv2-lat")
	defer func() { _ = l.Close() }()
	start := time.Now()
	err := l.Release(context.Background())
	took := time.Since(start)
	t.Logf("Release took %v, returned %v; Acquire returned %v", took.Round(time.Millisecond), err, <-acq)
	require.Less(t, took, time.Second, "Release of a queued Lock blocked for %v (nothing was held)", took)
}

// TestAbortCloseCutsAbortPromptly: Close while a Release is aborting an
// in-flight Acquire (server ignores the half-close, so the abort would
// wait releaseWait): Close returns promptly, Release returns, and nothing
// of the Lock is left running.
func TestAbortCloseCutsAbortPromptly(t *testing.T) {
	l, acq := parkedOnIgnoringServer(t, "rv2-cut")
	rel := make(chan error, 1)
	go func() { rel <- l.Release(context.Background()) }()
	require.Eventually(t, func() bool { return goroutineBlockedIn("(*Conn).abort") }, 3*time.Second, time.Millisecond)
	start := time.Now()
	require.NoError(t, l.Close())
	require.Less(t, time.Since(start), time.Second)
	select {
	case err := <-rel:
		t.Logf("Release: %v", err)
	case <-time.After(2 * time.Second):
		t.Fatal("Release did not return after Close")
	}
	<-acq
	require.Eventually(t, func() bool {
		return !goroutineBlockedIn("(*holder).runAbort") && !goroutineBlockedIn("(*Conn).abort")
	}, time.Second, 5*time.Millisecond, "abort still running after Close: %s", allStacks())
	l.h.mu.Lock()
	require.Empty(t, l.h.releasing)
	l.h.mu.Unlock()
}

// TestAbortStressReleaseWaitRace: Enqueue (queued), then Wait and
// Release race (the holder's release racing too); exercises hold.calls.Add
// in wait() against runAbort's calls.Wait, the leave w and the writer's
// shut under -race. Every call must return promptly, Release must not
// report an error, and the key must be free once they have returned (the
// server's half-close racing a grant: reactor's
// TestHalfCloseRacingGrantIsAnswered).
func TestAbortStressReleaseWaitRace(t *testing.T) {
	srv, ctx, b := noAutoReleaseHolder(t, 15*time.Second)
	deadline := time.Now().Add(6 * time.Second)
	rounds, stuck := 0, 0
	for i := 0; time.Now().Before(deadline) && i < 200; i++ {
		rounds++
		key := fmt.Sprintf("rv2-stress-%d", i)
		gb, err := b.Acquire(ctx, key, 0, WithLeaseTTL(30))
		require.NoError(t, err)
		l := &Lock{Key: key, LeaseTTL: 30, Servers: []string{srv.Addr}, Heartbeat: -1}
		st, err := l.Enqueue(ctx)
		require.NoError(t, err)
		require.Equal(t, StatusQueued, st)
		wres := make(chan error, 1)
		go func() { _, err := l.Wait(ctx, 5*time.Second); wres <- err }()
		brel := make(chan error, 1)
		if i%2 == 0 {
			brel <- b.Release(ctx, gb)
		} else {
			go func() { brel <- b.Release(ctx, gb) }()
		}
		time.Sleep(time.Duration(i%7) * 100 * time.Microsecond)
		start := time.Now()
		rerr := l.Release(ctx)
		require.Less(t, time.Since(start), 2*time.Second)
		require.NoError(t, rerr, "round %d", i)
		select {
		case <-wres:
		case <-time.After(2 * time.Second):
			t.Fatalf("round %d: Wait did not return after Release: %s", i, allStacks())
		}
		require.NoError(t, <-brel)
		require.NoError(t, l.Close())
		g, err := b.TryAcquire(ctx, key)
		if err != nil {
			stuck++
			continue
		}
		require.NoError(t, b.Release(ctx, g))
	}
	require.Zero(t, stuck, "%d of %d rounds left the key held by nobody", stuck, rounds)
	require.Eventually(t, func() bool { return !goroutineBlockedIn("(*holder).runAbort") }, 2*time.Second, 10*time.Millisecond)
}

// TestAbortReleaseCtxBoundsAbort: against a server that ignores the
// half-close, Release is bounded by its ctx (returns ctx.Err() at once),
// the abort finishes in the background within releaseWait, and the next
// Release reports nothing.
func TestAbortReleaseCtxBoundsAbort(t *testing.T) {
	l, acq := parkedOnIgnoringServer(t, "rv2-ctx")
	defer func() { _ = l.Close() }()
	rctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := l.Release(rctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Less(t, time.Since(start), time.Second)
	<-acq
	ctx, cancel2 := context.WithTimeout(context.Background(), releaseWait+3*time.Second)
	defer cancel2()
	require.NoError(t, l.Release(ctx))
}

// TestAbortReleaseAfterCancelledAcquireAndEndedCtx: an Acquire whose
// ctx is cancelled while queued (real server) ends with an abort in the
// background; a Release with an ended ctx, then Close, then Release:
// nothing is reported as ErrLost and nothing keeps running.
func TestAbortReleaseAfterCancelledAcquireAndEndedCtx(t *testing.T) {
	srv, ctx, b := noAutoReleaseHolder(t, 10*time.Second)
	gb, err := b.Acquire(ctx, "rv2-cancel", 0)
	require.NoError(t, err)
	l := &Lock{Key: "rv2-cancel", LeaseTTL: 30, Servers: []string{srv.Addr}, Heartbeat: -1}
	actx, acancel := context.WithCancel(ctx)
	acq := make(chan error, 1)
	go func() { _, err := l.Acquire(actx); acq <- err }()
	require.Eventually(t, func() bool { _, w := lockOwner(srv, "rv2-cancel"); return w == 1 }, 3*time.Second, time.Millisecond)
	acancel()
	require.ErrorIs(t, <-acq, context.Canceled)
	ended, ecancel := context.WithCancel(ctx)
	ecancel()
	err = l.Release(ended)
	require.False(t, errors.Is(err, ErrLost), "%v", err)
	require.NoError(t, l.Close())
	require.NoError(t, l.Release(ctx))
	require.Eventually(t, func() bool { return !goroutineBlockedIn("(*holder).runAbort") }, 2*time.Second, 10*time.Millisecond)
	// Close cut the abort and closed the connection at once: the server
	// may not have seen the close yet. A release racing it would grant the
	// queued acquire of a connection that is gone, held by nobody with
	// auto-release off (Close never releases; 11 of 300 runs before this
	// wait). Wait until the server has dropped the waiter.
	require.Eventually(t, func() bool { _, w := lockOwner(srv, "rv2-cancel"); return w == 0 }, 3*time.Second, time.Millisecond)
	require.NoError(t, b.Release(ctx, gb))
	g, err := b.TryAcquire(ctx, "rv2-cancel")
	require.NoError(t, err)
	require.NoError(t, b.Release(ctx, g))
}

// releaseRacingGrant: holder b (a Conn) holds key; a Lock or Semaphore
// (limit 0 or 1) queues its Acquire behind it; b releases (so the server
// grants to the parked acquire) while the holder's Release ends the
// Acquire at about the same moment. Auto-release is off. After both
// return, the key must be free: a grant the server decided must either
// reach the client (which releases it) or not be made.
func releaseRacingGrant(t *testing.T, limit int) (stuck, rounds int) {
	srv, ctx, b := noAutoReleaseHolder(t, 15*time.Second)
	stat := func(key string) (holders, waiters int64, ok bool) {
		st := srv.Table.Stats(srv.Table.Now())
		for _, x := range st.Locks {
			if x.Key == key {
				h := int64(0)
				if x.OwnerConnID != 0 {
					h = 1
				}
				return h, x.Waiters, true
			}
		}
		for _, x := range st.Semaphores {
			if x.Key == key {
				return int64(x.Holders), x.Waiters, true
			}
		}
		return 0, 0, false
	}
	var lim []Option
	if limit > 0 {
		lim = append(lim, WithLimit(limit))
	}
	deadline := time.Now().Add(6 * time.Second)
	for i := 0; time.Now().Before(deadline) && i < 150; i++ {
		rounds++
		key := fmt.Sprintf("rv2-race-%d-%d", limit, i)
		gb, err := b.Acquire(ctx, key, 0, append(lim, WithLeaseTTL(30))...)
		require.NoError(t, err)
		var acquire func(context.Context) (bool, error)
		var release func(context.Context) error
		var closeIt func() error
		if limit == 0 {
			l := &Lock{Key: key, LeaseTTL: 30, AcquireTimeout: 5 * time.Second, Servers: []string{srv.Addr}, Heartbeat: -1}
			acquire, release, closeIt = l.Acquire, l.Release, l.Close
		} else {
			s := &Semaphore{Key: key, Limit: limit, LeaseTTL: 30, AcquireTimeout: 5 * time.Second, Servers: []string{srv.Addr}, Heartbeat: -1}
			acquire, release, closeIt = s.Acquire, s.Release, s.Close
		}
		acq := make(chan error, 1)
		go func() { _, err := acquire(ctx); acq <- err }()
		require.Eventually(t, func() bool { _, w, _ := stat(key); return w == 1 }, 3*time.Second, 200*time.Microsecond)
		brel := make(chan error, 1)
		go func() { brel <- b.Release(ctx, gb) }()
		time.Sleep(time.Duration(i%5) * 50 * time.Microsecond)
		rerr := release(ctx)
		aerr := <-acq
		require.NoError(t, <-brel)
		_ = closeIt()
		g, err := b.TryAcquire(ctx, key, lim...)
		if err != nil {
			stuck++
			h, w, _ := stat(key)
			t.Logf("round %d: key stuck (%v): Release %v, Acquire %v; server: holders %d waiters %d", i, err, rerr, aerr, h, w)
			continue
		}
		require.NoError(t, b.Release(ctx, g))
	}
	return stuck, rounds
}

// TestAbortLockReleaseRacingGrant: see releaseRacingGrant (lock).
func TestAbortLockReleaseRacingGrant(t *testing.T) {
	stuck, rounds := releaseRacingGrant(t, 0)
	require.Zero(t, stuck, "%d of %d rounds left the lock held by nobody (auto-release off) after "+
		"Lock.Release and the in-flight Acquire returned", stuck, rounds)
}

// TestAbortSemaphoreReleaseRacingGrant: the same for a semaphore slot.
func TestAbortSemaphoreReleaseRacingGrant(t *testing.T) {
	stuck, rounds := releaseRacingGrant(t, 1)
	require.Zero(t, stuck, "%d of %d rounds left the slot held by nobody (auto-release off) after "+
		"Semaphore.Release and the in-flight Acquire returned", stuck, rounds)
}
