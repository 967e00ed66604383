package reactor_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// The limit flags the README lists hold together,
// on both transports with an auth token: max-waiters for the semaphore
// commands (sl, se; a timeout-0 try counts), max-semaphore-limit, max-locks
// (at once, not after the timeout), an over-long line before auth, and
// max-connections counting unauthenticated connections.
func TestLimitsEnforcedWithAuth(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		srv := tr.start(t, func(c *reactortest.Config) {
			c.Server.AuthToken = "tok"
			c.Server.MaxConnections = 6
			c.Core.MaxWaiters = 1
			c.Core.MaxLocks = 4
			c.Core.MaxSemaphoreLimit = 2
		})
		auth := func(c *reactortest.Conn) *reactortest.Conn {
			require.Equal(t, rOK, c.Do("auth", "_", "tok"))
			return c
		}
		a, b, c := auth(srv.Connect(t)), auth(srv.Connect(t)), auth(srv.Connect(t))
		mustGrant(t, a.Do("sl", "s", "0 1"), rOK, 33)
		b.Request("sl", "s", "30 1")
		waitSemWaiters(t, a, "s", 1)
		start := time.Now()
		require.Equal(t, rErrMaxWaiters, c.Do("sl", "s", "0 1"))
		require.Equal(t, rErrMaxWaiters, c.Do("sl", "s", "30 1"))
		require.Equal(t, rErrMaxWaiters, c.Do("se", "s", "1"))
		require.Equal(t, rErrLimitMismatch, c.Do("se", "s", "2"))
		require.Equal(t, rError, c.Do("sl", "s2", "0 3"), "over max-semaphore-limit")
		require.Equal(t, rError, c.Do("se", "s2", "3"), "over max-semaphore-limit")
		require.Less(t, time.Since(start), 2*time.Second)
		for _, k := range []string{"k1", "k2", "k3"} {
			lock(t, c, k)
		}
		start = time.Now()
		require.Equal(t, rErrMaxLocks, c.Do("l", "k4", "30"))
		require.Equal(t, rErrMaxLocks, c.Do("se", "k4", "1"))
		require.Less(t, time.Since(start), 2*time.Second)

		// Before auth: an over-long line answers error_auth and closes.
		d := srv.Connect(t)
		d.Send(strings.Repeat("x", 300))
		expectClosed(t, d, rErrAuth, 5*time.Second)
		waitConnections(t, srv, 3)

		// max-connections counts unauthenticated connections; the one over
		// the cap is closed without a byte.
		for range 3 {
			srv.Dial(t)
		}
		waitConnections(t, srv, 6)
		over := srv.Dial(t)
		line, err := over.ReadLine(3 * time.Second)
		require.Error(t, err)
		require.Empty(t, line)
		require.False(t, isTimeout(err), "over the cap: closed at once")
		require.Equal(t, rOK, a.Do("ping", "_", "_"))
	})
}
