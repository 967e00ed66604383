package reactor_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// TestDrainParkedWaitTimesOut: a two-phase `w` parked before the
// drain whose own timeout ends during it is answered `timeout`, and the
// drain then ends at once (not at the shutdown deadline).
func TestDrainParkedWaitTimesOut(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		srv := tr.start(t)
		obs, a, b := srv.Connect(t), srv.Connect(t), srv.Connect(t)
		lock(t, a, "pw")
		require.Equal(t, rQueued, b.Do("e", "pw", ""))
		b.Request("w", "pw", "1")
		time.Sleep(100 * time.Millisecond)
		start := time.Now()
		done := beginDrain(t, srv, obs)
		line, err := b.ReadLine(5 * time.Second)
		require.NoError(t, err)
		require.Equal(t, rTimeout, line)
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(5 * time.Second):
			t.Fatal("Shutdown did not return after the parked w timed out")
		}
		require.Less(t, time.Since(start), 3*time.Second)
		b.Closed(5 * time.Second)
	})
}

// TestDrainLeaseExpiryGrantsWaiter: a holder that neither
// releases nor disconnects: its lease ends during the drain and the
// parked waiter is granted, then the drain ends.
func TestDrainLeaseExpiryGrantsWaiter(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		srv := tr.start(t)
		obs, a, b := srv.Connect(t), srv.Connect(t), srv.Connect(t)
		mustGrant(t, a.Do("l", "le", "0 1"), rOK, 1)
		b.Request("l", "le", "30")
		waitLockWaiters(t, obs, "le", 1)
		done := beginDrain(t, srv, obs)
		line, err := b.ReadLine(5 * time.Second)
		require.NoError(t, err)
		mustGrant(t, line, rOK, 33)
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(5 * time.Second):
			t.Fatal("Shutdown did not return")
		}
	})
}

// TestDrainPreAuthTimeout: with an auth token, a connection opened
// before the drain that never authenticates is still closed by the auth
// timeout (error_auth) while a parked request keeps the drain going; a
// slow authenticator (lines 150 ms apart) still gets in and may release.
func TestDrainPreAuthTimeout(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		srv := tr.start(t, func(c *reactortest.Config) {
			c.Server.AuthToken = "tok"
			c.Server.AuthTimeout = 800 * time.Millisecond
			c.Server.ReadTimeout = 0
		})
		auth := func(c *reactortest.Conn) *reactortest.Conn {
			require.Equal(t, rOK, c.Do("auth", "_", "tok"))
			return c
		}
		obs, a, b := auth(srv.Connect(t)), auth(srv.Connect(t)), auth(srv.Connect(t))
		tok := lock(t, a, "pa")
		b.Request("l", "pa", "30")
		waitLockWaiters(t, obs, "pa", 1)
		idle := srv.Connect(t)
		slow := srv.Connect(t)
		opened := time.Now()
		// Accepted before the drain: a connection still in the listen
		// backlog when the listener closes is reset, not drained.
		require.Eventually(t, func() bool { return srv.Connections() == 5 }, 2*time.Second, time.Millisecond)
		done := beginDrain(t, srv, obs)

		slow.Send("auth\n")
		time.Sleep(150 * time.Millisecond)
		slow.Send("_\n")
		time.Sleep(150 * time.Millisecond)
		slow.Send("tok\n")
		require.Equal(t, rOK, slow.Line())

		line, err := idle.ReadLine(3 * time.Second)
		require.NoError(t, err)
		require.Equal(t, rErrAuth, line)
		idle.Closed(2 * time.Second)
		require.Less(t, time.Since(opened), 2500*time.Millisecond)

		// Authenticated after the drain began, past the auth timeout: the
		// slow one is not cut off by it and can release (bearer token).
		time.Sleep(time.Until(opened.Add(time.Second)))
		require.Equal(t, rOK, slow.Do("r", "pa", tok))
		line, err = b.ReadLine(5 * time.Second)
		require.NoError(t, err)
		mustGrant(t, line, rOK, 33)
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(5 * time.Second):
			t.Fatal("Shutdown did not return")
		}
	})
}
