package reactor_test

import (
	"crypto/tls"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// TestExpiryMeetsResetStorm: a lock and a semaphore whose holders'
// 1 s leases run out while every parked waiter resets its connection in
// a burst spread around the expiry (some before, some as the grant is
// decided, some after). Grants handed to connections that are going away
// must go with them (auto-release on): afterwards nothing is held, queued
// or parked, the connection count is back, and a newcomer gets both at
// once.
func TestExpiryMeetsResetStorm(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		srv := tr.start(t)
		obs := srv.Connect(t)
		holder := srv.Connect(t)
		mustGrant(t, holder.Do("l", "storm", "0 1"), rOK, 1)
		for range 2 {
			mustGrant(t, holder.Do("sl", "storms", "0 2 1"), rOK, 1)
		}
		const n = 24
		var ws []*reactortest.Conn
		for i := range n {
			w := srv.Connect(t)
			if i%2 == 0 {
				w.Request("l", "storm", "30 60")
			} else {
				w.Request("sl", "storms", "30 2 60")
			}
			ws = append(ws, w)
		}
		waitStats(t, obs, "all parked", func(s statsReply) bool {
			l, ok1 := s.lock("storm")
			m, ok2 := s.sem("storms")
			return ok1 && ok2 && l.Waiters == n/2 && m.Waiters == n/2
		})
		// The leases end ~1 s after the grants; reset the waiters from
		// 60 ms before to 60 ms after, spread evenly.
		s := stats(t, obs)
		l, _ := s.lock("storm")
		expiry := time.Now().Add(time.Duration(l.LeaseExpiresInS * float64(time.Second)))
		var wg sync.WaitGroup
		for i, w := range ws {
			at := expiry.Add(time.Duration(i-n/2) * 5 * time.Millisecond)
			wg.Add(1)
			go func() {
				defer wg.Done()
				time.Sleep(time.Until(at))
				nc := w.Conn
				if tc, ok := nc.(*tls.Conn); ok {
					nc = tc.NetConn()
				}
				_ = nc.(*net.TCPConn).SetLinger(0)
				_ = nc.Close()
			}()
		}
		wg.Wait()
		waitConnections(t, srv.Server, 2)
		require.Eventually(t, func() bool { return srv.Metrics().Parked == 0 }, 5*time.Second, 5*time.Millisecond,
			"parked %d", srv.Metrics().Parked)
		waitStats(t, obs, "nothing held or queued", func(s statsReply) bool {
			return len(s.Locks) == 0 && len(s.Semaphores) == 0
		})
		c := srv.Connect(t)
		lock(t, c, "storm")
		mustGrant(t, c.Do("sl", "storms", "0 2"), rOK, 33)
		mustGrant(t, c.Do("sl", "storms", "0 2"), rOK, 33)
	})
}
