package main

import (
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestSecondSignalDuringDrain: a second SIGTERM/SIGINT while a drain
// waits on a parked request neither kills the process nor cuts the drain
// short; the grant is still written and the exit code is 0.
func TestSecondSignalDuringDrain(t *testing.T) {
	t.Parallel()
	s := startDrainScenario(t, "0") // wait forever
	s.sigterm(t)
	s.srv.signal(t, syscall.SIGTERM)
	s.srv.signal(t, syscall.SIGINT)
	s.srv.signal(t, syscall.SIGTERM)
	time.Sleep(300 * time.Millisecond)
	require.True(t, s.srv.running(), "a second signal ended the drain")
	require.Equal(t, "ok", s.holder.do("r", "k", s.token))
	line, err := s.waiter.readLine(ioTimeout)
	require.NoError(t, err)
	requireGrant(t, line, 33)
	require.Equal(t, 0, s.srv.waitExit(t, 5*time.Second))
}
