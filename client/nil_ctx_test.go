package client_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/client"
)

// TestNilContextIsBackground: Lock and Semaphore take a nil ctx as
// context.Background(). Before, Release(nil) on a held lock panicked in
// the goroutine that sends the release, which no caller can recover: the
// process died and the lock stayed held.
func TestNilContextIsBackground(t *testing.T) {
	srv := start(t)
	var nilCtx context.Context // a nil context, as a careless caller passes
	l := &client.Lock{Key: "nilctx", Servers: []string{srv.Addr}, Heartbeat: -1}
	ok, err := l.Acquire(nilCtx)
	require.NoError(t, err)
	require.True(t, ok)
	require.True(t, held(srv, "nilctx"))
	require.NoError(t, l.Release(nilCtx))
	require.False(t, held(srv, "nilctx"), "Release(nil) returned before the release was answered")

	st, err := l.Enqueue(nilCtx)
	require.NoError(t, err)
	require.Equal(t, client.StatusAcquired, st)
	ok, err = l.Wait(nilCtx, time.Second)
	require.NoError(t, err)
	require.True(t, ok)
	require.NoError(t, l.Release(nilCtx))
	require.False(t, held(srv, "nilctx"))

	s := &client.Semaphore{Key: "nilctx", Limit: 2, Servers: []string{srv.Addr}, Heartbeat: -1}
	ok, err = s.TryAcquire(nilCtx)
	require.NoError(t, err)
	require.True(t, ok)
	require.NoError(t, s.Release(nilCtx))
	require.NoError(t, s.Close())
	require.NoError(t, l.Close())
}
