package reactor_test

import (
	"crypto/tls"
	"net"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// resetConn closes c with a TCP reset (SO_LINGER 0) instead of a FIN.
func resetConn(t *testing.T, c *reactortest.Conn) {
	t.Helper()
	nc := c.Conn
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	require.NoError(t, nc.(*net.TCPConn).SetLinger(0))
	require.NoError(t, c.Close())
}

// TestParkedWaitersReset: of 16 waiters parked in a key's queue, every
// other one resets its connection. The reset ones leave the queue at once
// and the rest are granted in their original order, one per release.
func TestParkedWaitersReset(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		srv := tr.start(t)
		obs := srv.Connect(t)
		holder := srv.Connect(t)
		tok := lock(t, holder, "rk")
		var waiters []*reactortest.Conn
		for i := range 16 {
			w := srv.Connect(t)
			w.Request("l", "rk", "60 5")
			waitLockWaiters(t, obs, "rk", i+1) // queue order = i
			waiters = append(waiters, w)
		}
		for i := 1; i < len(waiters); i += 2 {
			resetConn(t, waiters[i])
		}
		waitLockWaiters(t, obs, "rk", len(waiters)/2)
		require.Equal(t, rOK, holder.Do("r", "rk", tok))
		for i := 0; i < len(waiters); i += 2 {
			next := mustGrant(t, waiters[i].Line(), rOK, 5)
			require.Equal(t, rOK, waiters[i].Do("r", "rk", next), "waiter %d", i)
		}
		lock(t, holder, "rk")
	})
}
