package client

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestCloseEndsAcquireStuckInDial: Lock's doc says Release and
// Close "may be called from any goroutine, also while an Acquire or Wait is
// in flight (which they end)". An Acquire still connecting (here: waiting
// for the answer to auth from a server that accepted the connection but
// never answers) is not ended: it goes on until its ctx or the dial's own
// 10 s bound ends it. The test's ctx ends 3.5 s in; Close/Release comes
// at 0.3 s and Acquire should return well within a second of it.
func TestCloseEndsAcquireStuckInDial(t *testing.T) {
	for _, end := range []string{"Close", "Release"} {
		t.Run(end, func(t *testing.T) {
			t.Parallel()
			addr := silentServer(t)
			l := &Lock{Key: "r17-dial", AuthToken: "secret", Servers: []string{addr}, Heartbeat: -1}
			ctx, cancel := context.WithTimeout(context.Background(), 3500*time.Millisecond)
			defer cancel()
			done := make(chan error, 1)
			go func() { _, err := l.Acquire(ctx); done <- err }()
			time.Sleep(300 * time.Millisecond) // connected; auth sent and unanswered
			start := time.Now()
			if end == "Close" {
				require.NoError(t, l.Close())
			} else {
				require.NoError(t, l.Release(context.Background()))
			}
			err := <-done
			took := time.Since(start)
			require.Error(t, err)
			require.Less(t, took, time.Second,
				"Acquire was not ended by %s while connecting: it returned after %v with %v (its ctx's end)", end, took, err)
		})
	}
}
