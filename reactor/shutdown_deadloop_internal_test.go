//go:build linux

package reactor

import (
	"context"
	"testing"
	"time"

	errorx "github.com/panjf2000/gnet/v2/pkg/errors"
	"github.com/stretchr/testify/require"
)

// TestShutdownDeadLoopDoesNotWaitForCtx: an event loop that has exited
// without Close (here made to exit the way gnet's own shutdown task does;
// an epoll_wait error does the same) never runs the barrier's task, yet
// Execute returns nil. Nothing is parked or in flight: Shutdown returns
// nil at once (the barrier watches the loop's Exited) instead of waiting
// until ctx ends, for ever with context.Background().
func TestShutdownDeadLoopDoesNotWaitForCtx(t *testing.T) {
	srv := hcServer(t, Config{Loops: 1})
	lt := oneLoopOf(t, srv)
	require.NoError(t, lt.el.Execute(context.Background(), runFunc(func(context.Context) error {
		return errorx.ErrEngineShutdown // the loop exits, as on a poller error
	})))
	require.True(t, pollFor(2*time.Second, func() bool { return srv.Connections() == 0 }),
		"the dead loop closed its connections")

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- srv.Shutdown(ctx) }()
	select {
	case err := <-done:
		require.NoError(t, err, "nothing was parked or in flight")
	case <-time.After(time.Second):
		err := <-done
		t.Fatalf("Shutdown of a server whose only loop had exited (nothing parked, no connection) "+
			"waited %v, until its ctx ended, and returned %v: the barrier waits for a task the dead "+
			"loop will never run (with context.Background() it never returns)",
			time.Since(start).Round(time.Millisecond), err)
	}
}
