package client_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/client"
	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// A call this process ended matches net.ErrClosed on every path, as
// dflockd's client's did (found by review 12), and one the server ended
// does not.

func blockedLockAcquire(t *testing.T, srv *reactortest.Server, key string) (*client.Lock, chan error, func()) {
	holder := dial(t, srv.Addr)
	tok, _, err := client.Acquire(holder, key, time.Second)
	require.NoError(t, err)
	l := &client.Lock{Key: key, Servers: []string{srv.Addr}, AcquireTimeout: 10 * time.Second}
	res := make(chan error, 1)
	go func() { _, err := l.Acquire(context.Background()); res <- err }()
	require.Eventually(t, func() bool { st, ok := lockStat(srv, key); return ok && st.Waiters == 1 },
		5*time.Second, time.Millisecond)
	return l, res, func() { _ = client.Release(holder, key, tok) }
}

// TestReleaseEndingAcquireMatchesNetErrClosed: a Lock's Release ending
// its Acquire in flight.
func TestReleaseEndingAcquireMatchesNetErrClosed(t *testing.T) {
	srv := reactortest.Start(t)
	l, res, done := blockedLockAcquire(t, srv, "lce-release")
	defer done()
	require.NoError(t, l.Release(context.Background()))
	select {
	case err := <-res:
		require.ErrorIs(t, err, client.ErrClosed)
		require.ErrorIs(t, err, net.ErrClosed, "%v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("Acquire did not return after Release")
	}
}

// TestCloseEndingAcquireMatchesNetErrClosed: a Lock's Close ending its
// Acquire in flight.
func TestCloseEndingAcquireMatchesNetErrClosed(t *testing.T) {
	srv := reactortest.Start(t)
	l, res, done := blockedLockAcquire(t, srv, "lce-close")
	defer done()
	require.NoError(t, l.Close())
	err := <-res
	require.ErrorIs(t, err, net.ErrClosed)
}

// TestReleaseEndingWaitMatchesNetErrClosed: Release ending a two-phase
// Wait in flight. A Release that wins the race with the Wait's start makes
// it answer ErrNotQueued instead; such a round is retried.
func TestReleaseEndingWaitMatchesNetErrClosed(t *testing.T) {
	srv := reactortest.Start(t)
	holder := dial(t, srv.Addr)
	tok, _, err := client.Acquire(holder, "lce-wait", time.Second)
	require.NoError(t, err)
	defer func() { _ = client.Release(holder, "lce-wait", tok) }()
	for round := 0; ; round++ {
		require.Less(t, round, 20, "the Wait never got under way before the Release")
		l := &client.Lock{Key: "lce-wait", Servers: []string{srv.Addr}}
		st, err := l.Enqueue(context.Background())
		require.NoError(t, err)
		require.Equal(t, client.StatusQueued, st)
		res := make(chan error, 1)
		go func() { _, err := l.Wait(context.Background(), 10*time.Second); res <- err }()
		time.Sleep(20 * time.Millisecond)
		require.NoError(t, l.Release(context.Background()))
		err = <-res
		if errors.Is(err, client.ErrNotQueued) {
			continue
		}
		require.ErrorIs(t, err, client.ErrClosed)
		require.ErrorIs(t, err, net.ErrClosed, "%v", err)
		return
	}
}

// TestReleaseAfterQueuedEnqueueIsNil: Release of a Lock whose Enqueue only
// queued leaves the queue and returns nil (README; 1.10 returned an
// ErrServer error).
func TestReleaseAfterQueuedEnqueueIsNil(t *testing.T) {
	srv := reactortest.Start(t)
	holder := dial(t, srv.Addr)
	tok, _, err := client.Acquire(holder, "lce-q", time.Second)
	require.NoError(t, err)
	l := &client.Lock{Key: "lce-q", Servers: []string{srv.Addr}}
	st, err := l.Enqueue(context.Background())
	require.NoError(t, err)
	require.Equal(t, client.StatusQueued, st)
	require.NoError(t, l.Release(context.Background()))
	require.Eventually(t, func() bool { s, _ := lockStat(srv, "lce-q"); return s.Waiters == 0 }, 2*time.Second, time.Millisecond)
	require.NoError(t, client.Release(holder, "lce-q", tok))
}

// TestServerCloseNotNetErrClosed: a Lock whose server goes away while
// its Acquire waits: ErrClosed, not net.ErrClosed.
func TestServerCloseNotNetErrClosed(t *testing.T) {
	l := &client.Lock{Key: "lce-gone", Servers: []string{hangUpAfterRequest(t)}}
	_, err := l.Acquire(context.Background())
	require.ErrorIs(t, err, client.ErrClosed)
	require.False(t, errors.Is(err, net.ErrClosed), "%v", err)
}

// TestReacquireEndingAcquireMatchesNetErrClosed: a second Acquire
// on the same Lock ends the first one in flight (this process closed it;
// dflockd's client returned net.ErrClosed there too).
func TestReacquireEndingAcquireMatchesNetErrClosed(t *testing.T) {
	srv := reactortest.Start(t)
	l, res, done := blockedLockAcquire(t, srv, "lce-reacq")
	defer done()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	go func() { _, _ = l.Acquire(ctx) }()
	select {
	case err := <-res:
		require.ErrorIs(t, err, client.ErrClosed)
		require.ErrorIs(t, err, net.ErrClosed, "%v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("first Acquire did not return")
	}
	_ = l.Close()
}

// hangUpAfterRequest is the address of a server that reads a request and
// closes the connection 50 ms later without answering.
func hangUpAfterRequest(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		nc, err := ln.Accept()
		if err == nil {
			buf := make([]byte, 64)
			_, _ = nc.Read(buf)
			time.Sleep(50 * time.Millisecond)
			_ = nc.Close()
		}
	}()
	return ln.Addr().String()
}
