package main

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestEnvLimitsReachServer: the limits given only in the
// environment reach the running server, exactly at their boundary, and a
// flag given on the command line wins over its variable (PROTOCOL.md
// "Configuration"). DFLOCKD_MAX_LOCKS=1 is overridden by --max-locks 3;
// DFLOCKD_MAX_WAITERS=2 and DFLOCKD_MAX_SEMAPHORE_LIMIT=3 apply as set.
func TestEnvLimitsReachServer(t *testing.T) {
	t.Parallel()
	srv := startServer(t, procConfig{
		args: []string{"--max-locks", "3"},
		env: []string{
			"DFLOCKD_MAX_LOCKS=1",
			"DFLOCKD_MAX_WAITERS=2",
			"DFLOCKD_MAX_SEMAPHORE_LIMIT=3",
			"DFLOCKD_DEFAULT_LEASE_TTL_S=+9", // a leading + is a number
		},
	})
	c := dialServer(t, srv.addr)

	// Semaphore limit: 3 is allowed, 4 is not (the connection stays).
	require.Equal(t, "error", c.do("sl", "s", "0 4"))
	for range 3 {
		requireGrant(t, c.do("sl", "s", "0 3"), 9)
	}
	require.Equal(t, "timeout", c.do("sl", "s", "0 3"))
	require.Equal(t, "ok", c.do("ping", "_", "_"))

	// Max locks: the flag's 3, not the variable's 1 (s is one of them).
	requireGrant(t, c.do("l", "a", "0"), 9)
	requireGrant(t, c.do("l", "b", "0"), 9)
	require.Equal(t, "error_max_locks", c.do("l", "c", "0"))

	// Max waiters: exactly 2 queue on a, the third is refused at once.
	for i := range 2 {
		w := dialServer(t, srv.addr)
		w.send("l", "a", "10")
		waitWaiters(t, c, "a", i+1)
	}
	require.Equal(t, "error_max_waiters", dialServer(t, srv.addr).do("l", "a", "0"))
	require.Equal(t, "error_max_waiters", dialServer(t, srv.addr).do("e", "a", ""))
}
