//go:build linux

package reactor

import (
	"bufio"
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// oneLoopOf dials srv once (so its one loop is in s.loops) and returns
// that loop.
func oneLoopOf(t *testing.T, srv *Server) *loopTimers {
	t.Helper()
	c, err := net.Dial("tcp", srv.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	_, err = c.Write([]byte(hcReq("ping", "_", "_")))
	require.NoError(t, err)
	line, err := bufio.NewReader(c).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "ok\n", line)
	srv.loopsMu.Lock()
	defer srv.loopsMu.Unlock()
	require.Len(t, srv.loops, 1)
	for _, lt := range srv.loops {
		return lt
	}
	return nil
}

// TestShutdownDuringCloseReturns: Shutdown called while Close is stopping
// the event loops. gnet's Execute still accepts a task then, queued behind
// the shutdown task, and the loop exits without running it: the barrier
// waited for it until ctx ended (for ever, for a ctx without deadline, as
// cmd/dflockd uses with shutdown_timeout 0). It now stops waiting when
// Close begins.
//
// The loop is held busy in a callback (here a task; a stats snapshot on
// a big table, or any long callback, does the same) so that Close is
// inside cli.Stop when Shutdown queues its task.
func TestShutdownDuringCloseReturns(t *testing.T) {
	srv := hcServer(t, Config{Loops: 1})
	lt := oneLoopOf(t, srv)

	entered, unblock := make(chan struct{}), make(chan struct{})
	require.NoError(t, lt.el.Execute(context.Background(), runFunc(func(context.Context) error {
		close(entered)
		<-unblock
		return nil
	})))
	<-entered

	closed := make(chan struct{})
	go func() { srv.Close(); close(closed) }()
	<-srv.stopCh
	time.Sleep(100 * time.Millisecond) // Close is in cli.Stop, waiting for the busy loop

	const ctxTimeout = 3 * time.Second
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), ctxTimeout)
		defer cancel()
		shut <- srv.Shutdown(ctx)
	}()
	time.Sleep(100 * time.Millisecond) // Shutdown has queued its barrier task
	close(unblock)

	select {
	case <-closed:
	case <-time.After(3 * time.Second):
		t.Fatal("Close did not return")
	}
	closedAt := time.Now()
	select {
	case err := <-shut:
		require.NoError(t, err)
		require.Less(t, time.Since(closedAt), time.Second)
	case <-time.After(2 * time.Second):
		err := <-shut // at ctxTimeout: the barrier gives up only on ctx
		t.Fatalf("Shutdown did not return within 2 s of Close stopping the server (nothing parked); "+
			"it returned %v only when its %v ctx ended, %v after Close returned: its barrier task was "+
			"queued behind gnet's shutdown task and never ran (with context.Background() it never returns)",
			err, ctxTimeout, time.Since(closedAt).Round(time.Millisecond))
	}
}

// Shutdown after Close has returned: Execute refuses (the engine is in
// shutdown), so the barrier waits for nothing. (Holds.)
func TestShutdownAfterCloseReturns(t *testing.T) {
	srv := hcServer(t, Config{Loops: 2})
	oneLoopOf(t, srv)
	srv.Close()
	done := make(chan error, 1)
	go func() { done <- srv.Shutdown(context.Background()) }()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(3 * time.Second):
		t.Fatal("Shutdown after Close hung")
	}
	// And twice in a row.
	go func() { done <- srv.Shutdown(context.Background()) }()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(3 * time.Second):
		t.Fatal("second Shutdown hung")
	}
}

// Two Shutdowns started together (ctx without deadline): both return.
// (Holds: both barrier tasks are queued before either Close.)
func TestConcurrentShutdownsReturn(t *testing.T) {
	srv := hcServer(t, Config{Loops: 2})
	oneLoopOf(t, srv)
	done := make(chan error, 2)
	for range 2 {
		go func() { done <- srv.Shutdown(context.Background()) }()
	}
	for range 2 {
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(3 * time.Second):
			t.Fatal("a concurrent Shutdown hung")
		}
	}
}

// TestShutdownCtxEndsInBarrierReportsIt: a request read before the drain,
// its loop held up on the shard lock by a stats snapshot of a big table,
// and a Shutdown ctx that ends while the barrier still waits for that
// loop. Whether anything is cut off is unknown then: Shutdown returns
// ctx.Err() (it returned nil while the request was cut off unanswered).
func TestShutdownCtxEndsInBarrierReportsIt(t *testing.T) {
	r := startDrainRace(t, 150000, "r4-held")
	srv, w, wr, snap := r.srv, r.w, r.wr, r.snap

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	start := time.Now()
	shutErr := srv.Shutdown(ctx)
	took := time.Since(start)
	_ = w.SetReadDeadline(time.Now().Add(3 * time.Second))
	got, _ := io.ReadAll(wr)
	snapTook := <-snap
	t.Logf("snapshot %v; Shutdown returned %v after %v; the waiter got %q", snapTook, shutErr, took, got)
	if string(got) != "ok\n" {
		t.Skipf("the lock request was not read before the drain and cut off (got %q): race not hit", got)
	}
	require.ErrorIs(t, shutErr, context.DeadlineExceeded,
		"Shutdown cut off the lock request read before the drain (the client got only %q, the connection closed "+
			"without a reply) and returned %v", got, shutErr)
}
