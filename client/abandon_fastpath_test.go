package client_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/client"
	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// parkBehind makes b's next request wait behind a blocked acquire of
// "blocker" (held by a), so that it can be abandoned before its reply.
// It returns a function that frees the blocker and waits for b's acquire.
func parkBehind(t *testing.T, srv *reactortest.Server, a, b *client.Conn) func() {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	g, err := a.Acquire(ctx, "blocker", 0)
	require.NoError(t, err)
	got := make(chan error, 1)
	go func() {
		gb, err := b.Acquire(ctx, "blocker", 8*time.Second)
		if err == nil {
			err = b.Release(ctx, gb)
		}
		got <- err
	}()
	require.Eventually(t, func() bool {
		for _, ls := range srv.Table.Stats(srv.Table.Now()).Locks {
			if ls.Key == "blocker" {
				return ls.Waiters == 1
			}
		}
		return false
	}, 5*time.Second, 5*time.Millisecond)
	return func() {
		require.NoError(t, a.Release(ctx, g))
		require.NoError(t, <-got)
	}
}

// TestAbandonedFastPathEnqueueThenEnqueueAgain: an Enqueue whose
// context ends before its "acquired" arrives is cleaned up by the reader
// (the grant released). The same connection must then be able to Enqueue
// the key again and get it: no stale two-phase entry may be left behind
// (which would answer error_already_enqueued) and nothing stays held.
func TestAbandonedFastPathEnqueueThenEnqueueAgain(t *testing.T) {
	t.Parallel()
	srv := reactortest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a, err := client.Dial(srv.Addr)
	require.NoError(t, err)
	defer func() { _ = a.Close() }()
	b, err := client.Dial(srv.Addr)
	require.NoError(t, err)
	defer func() { _ = b.Close() }()

	free := parkBehind(t, srv, a, b)
	ectx, ecancel := context.WithCancel(ctx)
	enq := make(chan error, 1)
	go func() { _, err := b.Enqueue(ectx, "k"); enq <- err }()
	time.Sleep(30 * time.Millisecond)
	ecancel()
	require.ErrorIs(t, <-enq, context.Canceled)
	free()

	g, err := b.Enqueue(ctx, "k")
	require.NoError(t, err, "second Enqueue after an abandoned fast-path one")
	require.True(t, g.Held(), "k should be free: the abandoned grant was released")
	g, err = b.Wait(ctx, g, time.Second)
	require.NoError(t, err)
	require.NoError(t, b.Release(ctx, g))
	// And a third party can take it.
	g2, err := a.Acquire(ctx, "k", time.Second)
	require.NoError(t, err)
	require.NoError(t, a.Release(ctx, g2))
	require.NoError(t, b.Err())
}

// TestAbandonedFastPathSemEnqueue: the same for a semaphore slot.
func TestAbandonedFastPathSemEnqueue(t *testing.T) {
	t.Parallel()
	srv := reactortest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a, err := client.Dial(srv.Addr)
	require.NoError(t, err)
	defer func() { _ = a.Close() }()
	b, err := client.Dial(srv.Addr)
	require.NoError(t, err)
	defer func() { _ = b.Close() }()

	free := parkBehind(t, srv, a, b)
	ectx, ecancel := context.WithCancel(ctx)
	enq := make(chan error, 1)
	go func() { _, err := b.Enqueue(ectx, "s", client.WithLimit(1)); enq <- err }()
	time.Sleep(30 * time.Millisecond)
	ecancel()
	require.ErrorIs(t, <-enq, context.Canceled)
	free()

	g, err := b.Enqueue(ctx, "s", client.WithLimit(1))
	require.NoError(t, err)
	require.True(t, g.Held())
	g, err = b.Wait(ctx, g, time.Second)
	require.NoError(t, err)
	require.NoError(t, b.Release(ctx, g))
	require.NoError(t, b.Err())
}
