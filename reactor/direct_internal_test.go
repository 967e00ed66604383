package reactor

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestDirectClaimStates walks the direct-delivery state machine between a
// loop (claim, claimWait) and a completer (the Busy window of tryDirect).
func TestDirectClaimStates(t *testing.T) {
	var g gconn

	// Off: the loop has it.
	require.True(t, g.claim())

	// Armed: the loop takes it back.
	g.direct.Store(directArmed)
	require.True(t, g.claim())
	require.Equal(t, directOff, g.direct.Load())

	// Busy: the loop leaves it and asks to be woken; asking again changes
	// nothing.
	g.direct.Store(directBusy)
	require.False(t, g.claim())
	require.Equal(t, directWanted, g.direct.Load())
	require.False(t, g.claim())
	require.Equal(t, directWanted, g.direct.Load())

	// A closing loop waits out the completer and tells it so.
	for _, busy := range []uint32{directBusy, directWanted} {
		g.direct.Store(busy)
		done := make(chan struct{})
		go func() {
			g.claimWait()
			close(done)
		}()
		require.Eventually(t, func() bool { return g.direct.Load() == directClosing }, time.Second, time.Millisecond)
		select {
		case <-done:
			t.Fatal("claimWait returned while the completer was busy")
		case <-time.After(20 * time.Millisecond):
		}
		require.Equal(t, directClosing, g.direct.Swap(directOff), "what the completer sees when done")
		<-done
	}

	// tryDirect does nothing unless armed.
	g.direct.Store(directOff)
	require.False(t, g.tryDirect())
	require.Equal(t, directOff, g.direct.Load())
}
