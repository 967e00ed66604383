package client

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestAbortReleaseBoundsEveryAbort: against a server that keeps a
// blocked request after a half-close (dflockd 1.10), Release is documented
// to wait at most abortWait (0.5 s) for an abort. With two aborts in
// flight (the first left in the background by an earlier Release) the
// second Release must still return within about abortWait.
func TestAbortReleaseBoundsEveryAbort(t *testing.T) {
	addr, parked := halfCloseIgnoringServer(t)
	l := &Lock{Key: "r3-two-aborts", LeaseTTL: 30, AcquireTimeout: 10 * time.Second, Servers: []string{addr}, Heartbeat: -1}
	defer func() { _ = l.Close() }()

	for round := 1; round <= 2; round++ {
		go func() { _, _ = l.Acquire(context.Background()) }()
		require.Eventually(t, func() bool { return parked() == round }, 3*time.Second, time.Millisecond)
		l.h.mu.Lock()
		inFlight := len(l.h.releasing)
		l.h.mu.Unlock()
		start := time.Now()
		err := l.Release(context.Background())
		took := time.Since(start)
		t.Logf("round %d: %d aborts in the background before; Release took %v, returned %v", round, inFlight, took.Round(time.Millisecond), err)
		require.Less(t, took, 1500*time.Millisecond,
			"round %d: Release blocked %v with %d earlier abort(s) in the background (abortWait is 0.5 s)", round, took, inFlight)
	}
}
