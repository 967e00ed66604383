//go:build linux

package reactor

import (
	"context"
	"testing"
	"time"
)

// TestShutdownDoneCtxIdleServerReportsNothing: Shutdown "returns
// ctx.Err() if parked requests were cut off". A server with one idle
// connection (nothing parked, nothing in flight) shut down with a ctx that
// has already ended (the usual "close now, tell me if anything was cut"
// call) returns nil: Shutdown counts what its Close cut off (cutOff)
// rather than trusting that ctx ended during the barrier.
func TestShutdownDoneCtxIdleServerReportsNothing(t *testing.T) {
	const rounds = 10
	bad := 0
	var last error
	for range rounds {
		srv := hcServer(t, Config{Loops: 1})
		oneLoopOf(t, srv) // one idle connection, its ping answered
		if n := srv.parked.Load(); n != 0 {
			t.Fatalf("parked = %d before Shutdown", n)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		done := make(chan error, 1)
		go func() { done <- srv.Shutdown(ctx) }()
		select {
		case err := <-done:
			if err != nil {
				bad++
				last = err
			}
		case <-time.After(3 * time.Second):
			t.Fatal("Shutdown hung")
		}
	}
	if bad > 0 {
		t.Fatalf("Shutdown with an ended ctx on an idle server (nothing parked, nothing in flight) "+
			"returned an error in %d of %d rounds (last: %v); nothing was cut off", bad, rounds, last)
	}
}
