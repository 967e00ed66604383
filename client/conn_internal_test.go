package client

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// TestConnAbandonedGrantReleasedBeforeSameKeyAcquire: Conn promises that
// an abandoned acquire's "late grant is released as soon as it arrives".
// A later acquire of the same key on the same Conn (a retry, or another
// goroutine sharing the Conn) must not be sent ahead of that release: the
// server, answering in order, would block it on the abandoned grant until
// it timed out, although the lock was free. It is held back until the
// abandoned reply is in and its release queued.
func TestConnAbandonedGrantReleasedBeforeSameKeyAcquire(t *testing.T) {
	t.Parallel()
	srv := reactortest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	other, err := Dial(srv.Addr)
	require.NoError(t, err)
	defer func() { _ = other.Close() }()
	g0, err := other.Acquire(ctx, "k", 0)
	require.NoError(t, err)

	c, err := Dial(srv.Addr)
	require.NoError(t, err)
	defer func() { _ = c.Close() }()

	// Goroutine A: an acquire whose caller goes away (no deadline).
	actx, acancel := context.WithCancel(ctx)
	aerr := make(chan error, 1)
	go func() { _, err := c.Acquire(actx, "k", 2*time.Second); aerr <- err }()
	require.Eventually(t, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.pending.len() == 1
	}, 2*time.Second, time.Millisecond)
	time.Sleep(20 * time.Millisecond)
	acancel()
	require.ErrorIs(t, <-aerr, context.Canceled)

	// Goroutine B (or A's retry): the same key on the same Conn.
	type res struct {
		g   Grant
		err error
	}
	bres := make(chan res, 1)
	start := time.Now()
	go func() { g, err := c.Acquire(ctx, "k", 2*time.Second); bres <- res{g, err} }()
	time.Sleep(50 * time.Millisecond)
	require.NoError(t, other.Release(ctx, g0)) // k is free now

	r := <-bres
	took := time.Since(start)
	require.NoError(t, r.err, "B waited %v for a lock nobody held (A's abandoned grant was only released after B timed out)", took)
	require.Less(t, took, time.Second)
}

// TestConnCtxHonouredWhileWriteBlocked: "A call whose context ends before
// its reply arrives returns ctx.Err() at once", also when the socket's
// buffers are full (a stalled server, a half-open connection) and the
// request cannot even be written: the Conn's writer goroutine writes, with
// the write deadline (DefaultWriteTimeout, 10 s) as its bound, and the
// caller only waits for its reply or its context.
func TestConnCtxHonouredWhileWriteBlocked(t *testing.T) {
	t.Parallel()
	addr := silentNoReadServer(t)
	c, err := Dial(addr)
	require.NoError(t, err)
	defer func() { _ = c.Close() }()
	// Fill the send and receive buffers: the server is not reading.
	junk := make([]byte, 1<<20)
	for _, n := range []int{1 << 20, 4096, 64, 1} {
		for {
			_ = c.nc.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
			if _, err := c.nc.Write(junk[:n]); err != nil {
				break
			}
		}
	}
	_ = c.nc.SetWriteDeadline(time.Time{})

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- c.Ping(ctx) }()
	select {
	case err := <-done:
		t.Logf("returned after %v: %v; conn err %v", time.Since(start), err, c.Err())
		require.ErrorIs(t, err, context.DeadlineExceeded)
	case <-time.After(1500 * time.Millisecond):
		_ = c.Close() // unblock
		<-done
		t.Fatalf("Ping with a 200 ms context still blocked after %v", time.Since(start))
	}
}
