package reactor_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestShutdownReturnPaths: on both transports, Shutdown returns
// ctx.Err() when ctx ends while a request is parked (Close cuts it off),
// nil when the parked request was answered before ctx ended, and nil for an
// idle server shut down with an ended ctx.
func TestShutdownReturnPaths(t *testing.T) {
	forTransports(t, func(t *testing.T, tr transport) {
		t.Run("cut", func(t *testing.T) {
			srv := tr.start(t)
			h, w, obs := srv.Connect(t), srv.Connect(t), srv.Connect(t)
			lock(t, h, "k")
			w.Send(req("l", "k", "30"))
			waitLockWaiters(t, obs, "k", 1)
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			err := srv.Shutdown(ctx)
			require.True(t, errors.Is(err, context.DeadlineExceeded), "got %v", err)
		})
		t.Run("answered", func(t *testing.T) {
			srv := tr.start(t)
			h, w, obs := srv.Connect(t), srv.Connect(t), srv.Connect(t)
			tok := lock(t, h, "k")
			w.Send(req("l", "k", "30"))
			waitLockWaiters(t, obs, "k", 1)
			h.Send(req("r", "k", tok))
			_ = w.SetReadDeadline(time.Now().Add(3 * time.Second))
			mustGrant(t, w.Line(), rOK, 33)
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			require.NoError(t, srv.Shutdown(ctx))
		})
		t.Run("idle", func(t *testing.T) {
			srv := tr.start(t)
			c := srv.Connect(t)
			require.Equal(t, "ok", c.Do("ping", "_", "_"))
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			require.NoError(t, srv.Shutdown(ctx))
		})
	})
}
