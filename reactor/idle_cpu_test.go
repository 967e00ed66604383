package reactor_test

import (
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// cpuTime is the CPU time this process has used.
func cpuTime(t testing.TB) time.Duration {
	t.Helper()
	var ru syscall.Rusage
	require.NoError(t, syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestIncompleteRequestDoesNotSpin: a connection holding an incomplete
// request waits for more bytes without burning CPU. Not parallel: it
// measures the process's CPU time.
func TestIncompleteRequestDoesNotSpin(t *testing.T) {
	forTransports(t, func(t *testing.T, tr transport) {
		srv := tr.start(t, func(c *reactortest.Config) { c.Server.ReadTimeout = time.Minute })
		c := srv.Connect(t)
		require.Equal(t, rOK, c.Do("ping", "_", "_"))
		c.Send("l\nspin\n")
		time.Sleep(100 * time.Millisecond)
		before := cpuTime(t)
		time.Sleep(time.Second)
		used := cpuTime(t) - before
		t.Logf("CPU used in 1 s while a request is incomplete: %v", used)
		// Idle costs a few milliseconds (timer ticks); a spinning goroutine
		// costs about a full second.
		require.Less(t, used, 200*time.Millisecond, "the server spins on an incomplete request")
		c.Send("0\n")
		mustGrant(t, c.Line(), rOK, 33)
	})
}
