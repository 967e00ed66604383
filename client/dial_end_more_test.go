package client

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// TestConnOutlivesDialCtx: start dials under dctx (cancelled by
// endLocked and by start's own defer) and DialContext under its own
// timeout ctx (cancelled on return); nothing of the Conn (TLS, auth,
// reader, heartbeat) may stay tied to them: the hold keeps renewing a
// 1 s lease for 2.5 s after the caller's ctx is cancelled.
func TestConnOutlivesDialCtx(t *testing.T) {
	srv := reactortest.Start(t, func(c *reactortest.Config) {
		c.SelfSignedTLS = true
		c.Server.AuthToken = "sekret"
	})
	var cbs atomic.Int32
	l := &Lock{Key: "r18-outlive", LeaseTTL: 1, Servers: []string{srv.Addr}, TLSConfig: srv.ClientTLS,
		AuthToken: "sekret", OnRenewError: func(error) { cbs.Add(1) }}
	defer func() { _ = l.Close() }()
	ctx, cancel := context.WithCancel(context.Background())
	ok, err := l.Acquire(ctx)
	cancel()
	require.NoError(t, err)
	require.True(t, ok)
	select {
	case <-l.Done():
		t.Fatalf("hold ended after its ctx was cancelled: %v", l.Err())
	case <-time.After(2500 * time.Millisecond):
	}
	require.NotEmpty(t, l.Token())
	require.Zero(t, cbs.Load())
	require.True(t, lockHeld(srv, "r18-outlive"))
	require.NoError(t, l.Release(context.Background()))
	require.False(t, lockHeld(srv, "r18-outlive"))
}

// TestReleaseDuringDialThenReuse: a Release during the dial
// ends the Acquire with ErrClosed and returns nil itself; the Lock is
// then usable at once (nothing left in h.cur or h.releasing).
func TestReleaseDuringDialThenReuse(t *testing.T) {
	silent := silentServer(t)
	l := &Lock{Key: "r18-reuse", AuthToken: "secret", Servers: []string{silent}, Heartbeat: -1}
	done := make(chan error, 1)
	go func() { _, err := l.Acquire(context.Background()); done <- err }()
	time.Sleep(200 * time.Millisecond)
	require.NoError(t, l.Release(context.Background()))
	select {
	case err := <-done:
		require.ErrorIs(t, err, ErrClosed)
	case <-time.After(2 * time.Second):
		t.Fatal("Acquire not ended by Release while connecting")
	}
	require.Nil(t, l.Err())
	<-l.Done()
	srv := reactortest.Start(t)
	l.Servers = []string{srv.Addr}
	l.AuthToken = ""
	ok, err := l.Acquire(context.Background())
	require.NoError(t, err)
	require.True(t, ok)
	require.NoError(t, l.Release(context.Background()))
	require.NoError(t, l.Close())
}

// TestCloseAndCtxEndTogetherInDial: an Acquire connecting (auth
// unanswered) whose ctx deadline passes at about the moment Close is
// called must return ErrClosed (Close came first) or its own ctx.Err()
// (the ctx ended first) — not a third error (the dial's context.Canceled
// from dctx while ctx.Err() is DeadlineExceeded). Probabilistic: it
// sweeps Close across the deadline.
func TestCloseAndCtxEndTogetherInDial(t *testing.T) {
	silent := silentServer(t)
	bad := 0
	var first string
	for i := range 60 {
		l := &Lock{Key: "r18-race", AuthToken: "secret", Servers: []string{silent}, Heartbeat: -1}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
		done := make(chan error, 1)
		go func() { _, err := l.Acquire(ctx); done <- err }()
		time.Sleep(30*time.Millisecond + time.Duration(i%12-6)*150*time.Microsecond)
		_ = l.Close()
		err := <-done
		cerr := ctx.Err()
		cancel()
		closed := errors.Is(err, ErrClosed)
		ctxEnded := cerr != nil && errors.Is(err, cerr)
		if !closed && !ctxEnded {
			bad++
			if first == "" {
				first = fmt.Sprintf("round %d: Acquire returned %v (ctx.Err()=%v)", i, err, cerr)
			}
		}
	}
	require.Zero(t, bad, "%d of 60: %s", bad, first)
}
