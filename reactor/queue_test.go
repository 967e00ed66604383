package reactor_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// Fairness, leases and disconnects (PROTOCOL.md "Fairness, leases,
// two-phase" and "Connections").

func TestLockFIFO(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		srv := tr.start(t)
		obs := srv.Connect(t)
		holder := srv.Connect(t)
		tok := lock(t, holder, "fifo")

		const n = 4
		waiters := make([]*reactortest.Conn, n)
		for i := range waiters {
			waiters[i] = srv.Connect(t)
			waiters[i].Request("l", "fifo", "30")
			waitLockWaiters(t, obs, "fifo", i+1)
		}
		for i, w := range waiters {
			require.Equal(t, rOK, holder.Do("r", "fifo", tok))
			tok = mustGrant(t, w.Line(), rOK, 33)
			// Nobody behind it has been granted.
			for _, later := range waiters[i+1:] {
				later.NoReply(20 * time.Millisecond)
			}
			waitLockWaiters(t, obs, "fifo", n-i-1)
		}
		require.Equal(t, rOK, holder.Do("r", "fifo", tok))
	})
}

func TestSemaphoreFIFO(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		srv := tr.start(t)
		obs := srv.Connect(t)
		h := srv.Connect(t)
		toks := []string{
			mustGrant(t, h.Do("sl", "sem", "0 2"), rOK, 33),
			mustGrant(t, h.Do("sl", "sem", "0 2"), rOK, 33),
		}
		const n = 5
		waiters := make([]*reactortest.Conn, n)
		for i := range waiters {
			waiters[i] = srv.Connect(t)
			// sl and se share the one queue of the key.
			if i == 2 {
				require.Equal(t, rQueued, waiters[i].Do("se", "sem", "2"))
			} else {
				waiters[i].Request("sl", "sem", "30 2")
			}
			waitSemWaiters(t, obs, "sem", i+1)
		}
		waiters[2].Request("sw", "sem", "30")
		for i, w := range waiters {
			require.Equal(t, rOK, h.Do("sr", "sem", toks[0]))
			toks = append(toks[1:], mustGrant(t, w.Line(), rOK, 33))
			for _, later := range waiters[i+1:] {
				later.NoReply(20 * time.Millisecond)
			}
		}
		s := stats(t, obs)
		st, ok := s.sem("sem")
		require.True(t, ok)
		require.Equal(t, semStat{Key: "sem", Limit: 2, Holders: 2, Waiters: 0}, st)
	})
}

func TestLeaseHandOver(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		srv := tr.start(t)
		a, b := srv.Connect(t), srv.Connect(t)
		start := time.Now() // before the lease starts
		tok := mustGrant(t, a.Do("l", "lease", "0 1"), rOK, 1)
		b.Request("l", "lease", "10")
		line, err := b.ReadLine(5 * time.Second)
		require.NoError(t, err)
		mustGrant(t, line, rOK, 33)
		elapsed := time.Since(start)
		// Loose bounds: leases never end early; the hand-over comes soon
		// after.
		require.GreaterOrEqual(t, elapsed, 950*time.Millisecond)
		require.Less(t, elapsed, 4*time.Second)
		require.Equal(t, rError, a.Do("r", "lease", tok), "an expired token is dead")
	})
}

func TestAcquireTimeout(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		srv := tr.start(t)
		obs := srv.Connect(t)
		a, b := srv.Connect(t), srv.Connect(t)
		lock(t, a, "to")
		start := time.Now()
		require.Equal(t, rTimeout, b.Do("l", "to", "1"))
		require.Greater(t, time.Since(start), 500*time.Millisecond)
		// The timed-out waiter left the queue.
		waitLockWaiters(t, obs, "to", 0)
		require.Equal(t, rOK, b.Do("ping", "_", "_"), "b is still served")
	})
}

func TestParkedPipelineOrder(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		srv := tr.start(t)
		obs := srv.Connect(t)
		a, b := srv.Connect(t), srv.Connect(t)
		tok := lock(t, a, "pk")
		lock(t, a, "x")
		// b parks on its first request; the rest wait behind it.
		b.Send(req("l", "pk", "30") + req("ping", "_", "_") + req("l", "other", "0") + req("l", "x", "0") + req("bad", "_", "_"))
		waitLockWaiters(t, obs, "pk", 1)
		b.NoReply(200 * time.Millisecond)
		require.Equal(t, rOK, a.Do("r", "pk", tok))
		mustGrant(t, b.Line(), rOK, 33)
		require.Equal(t, rOK, b.Line())
		mustGrant(t, b.Line(), rOK, 33)
		require.Equal(t, rTimeout, b.Line())
		require.Equal(t, rError, b.Line())
	})
}

func TestHolderDisconnectReleases(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		srv := tr.start(t)
		obs := srv.Connect(t)
		a, b := srv.Connect(t), srv.Connect(t)
		lock(t, a, "dc")
		mustGrant(t, a.Do("sl", "dcs", "0 1"), rOK, 33)
		b.Request("l", "dc", "30")
		waitLockWaiters(t, obs, "dc", 1)
		require.NoError(t, a.Close())
		mustGrant(t, b.Line(), rOK, 33)
		// Its semaphore slot was released too. (Wait for it: a close
		// releases its keys shard by shard, so the grant of dc can reach b
		// before the slot of dcs, in another shard, is free.)
		mustGrant(t, b.Do("sl", "dcs", "5 1"), rOK, 33)
	})
}

func TestParkedWaiterDisconnect(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		srv := tr.start(t)
		obs := srv.Connect(t)
		a := srv.Connect(t)
		tok := lock(t, a, "pw")
		stok := mustGrant(t, a.Do("sl", "pws", "0 1"), rOK, 33)
		b := srv.Connect(t)
		b.Request("l", "pw", "60")
		b.Request("sl", "pws", "60 1") // held back behind the parked l
		waitLockWaiters(t, obs, "pw", 1)
		c := srv.Connect(t)
		require.Equal(t, rQueued, c.Do("se", "pws", "1"))
		waitSemWaiters(t, obs, "pws", 1)

		require.NoError(t, b.Close())
		require.NoError(t, c.Close())
		// Dropped at once, not when the waits would have timed out.
		waitLockWaiters(t, obs, "pw", 0)
		waitSemWaiters(t, obs, "pws", 0)
		// A later release does not grant a dead waiter: the key is free.
		require.Equal(t, rOK, a.Do("r", "pw", tok))
		require.Equal(t, rOK, a.Do("sr", "pws", stok))
		d := srv.Connect(t)
		lock(t, d, "pw")
		mustGrant(t, d.Do("sl", "pws", "0 1"), rOK, 33)
	})
}

// TestHalfCloseWhileParked: TCP cannot tell a half-close from a closed
// client, so a client that shuts down its sending side while its request
// waits (ncat, nc -N at the end of their input) is treated as gone: no
// reply, the connection closes, and its request leaves the queue (a
// documented difference from dflockd 1.10, see the README).
func TestHalfCloseWhileParked(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		srv := tr.start(t)
		obs := srv.Connect(t)
		a := srv.Connect(t)
		tok := lock(t, a, "hc")
		b := srv.Connect(t)
		b.Request("l", "hc", "60")
		waitLockWaiters(t, obs, "hc", 1)
		cw, ok := b.Conn.(interface{ CloseWrite() error })
		require.True(t, ok, "%T has no CloseWrite", b.Conn)
		require.NoError(t, cw.CloseWrite())
		b.Closed(5 * time.Second)
		waitLockWaiters(t, obs, "hc", 0)
		require.Equal(t, rOK, a.Do("r", "hc", tok))
	})
}

func TestAutoReleaseOff(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		srv := tr.start(t, func(c *reactortest.Config) { c.NoAutoRelease = true })
		obs := srv.Connect(t)
		a := srv.Connect(t)
		tok := mustGrant(t, a.Do("l", "ar", "0 3"), rOK, 3)
		lock(t, obs, "ar2")
		w := srv.Connect(t)
		w.Request("l", "ar2", "60") // a parked waiter is still dropped at once
		waitLockWaiters(t, obs, "ar2", 1)
		require.NoError(t, a.Close())
		require.NoError(t, w.Close())
		waitConnections(t, srv.Server, 1)
		waitLockWaiters(t, obs, "ar2", 0)

		b := srv.Connect(t)
		require.Equal(t, rTimeout, b.Do("l", "ar", "0"), "the lock survives its holder's disconnect")
		s := stats(t, obs)
		l, ok := s.lock("ar")
		require.True(t, ok, "stats %+v", s)
		require.NotZero(t, l.OwnerConnID)
		// Until its lease runs out.
		start := time.Now()
		mustGrant(t, b.Do("l", "ar", "10"), rOK, 33)
		require.Less(t, time.Since(start), 5*time.Second)
		require.Equal(t, rError, b.Do("r", "ar", tok))
	})
}

func TestNamespaces(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		srv := tr.start(t)
		c := srv.Connect(t)
		ltok := lock(t, c, "foo")
		stok := mustGrant(t, c.Do("sl", "foo", "0 3"), rOK, 33)
		require.Equal(t, rError, c.Do("r", "foo", stok), "r never releases a semaphore slot")
		require.Equal(t, rError, c.Do("sr", "foo", ltok), "sr never releases a lock")
		require.Equal(t, rError, c.Do("n", "foo", stok))
		require.Equal(t, rError, c.Do("sn", "foo", ltok))
		// Both still held.
		require.Equal(t, rTimeout, c.Do("l", "foo", "0"))
		s := stats(t, c)
		require.Len(t, s.Locks, 1)
		require.Len(t, s.Semaphores, 1)
		require.Equal(t, rOK, c.Do("r", "foo", ltok))
		require.Equal(t, rOK, c.Do("sr", "foo", stok))
		// A semaphore "bar" does not fix a limit for a lock "bar".
		mustGrant(t, c.Do("sl", "bar", "0 5"), rOK, 33)
		lock(t, c, "bar")
		require.Equal(t, rQueued, c.Do("e", "bar", ""))
	})
}

func TestTwoPhase(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		srv := tr.start(t)

		t.Run("acquired then wait", func(t *testing.T) {
			c := srv.Connect(t)
			tok := mustGrant(t, c.Do("e", "tp1", ""), "acquired", 33)
			require.Equal(t, rErrAlreadyEnq, c.Do("e", "tp1", ""))
			require.Equal(t, "ok "+tok+" 33", c.Do("w", "tp1", "5"), "w answers the same token")
			require.Equal(t, rErrNotEnqueued, c.Do("w", "tp1", "5"), "the two-phase state is consumed")
			require.Equal(t, rOK, c.Do("r", "tp1", tok))
			// Custom lease.
			tok = mustGrant(t, c.Do("e", "tp1", "7"), "acquired", 7)
			require.Equal(t, "ok "+tok+" 7", c.Do("w", "tp1", "0"))
		})
		t.Run("queued then wait parks", func(t *testing.T) {
			obs, a, b := srv.Connect(t), srv.Connect(t), srv.Connect(t)
			tok := lock(t, a, "tp2")
			require.Equal(t, rQueued, b.Do("e", "tp2", "9"))
			require.Equal(t, rErrAlreadyEnq, b.Do("e", "tp2", "9"))
			b.Request("w", "tp2", "30")
			b.NoReply(100 * time.Millisecond)
			waitLockWaiters(t, obs, "tp2", 1)
			require.Equal(t, rOK, a.Do("r", "tp2", tok))
			btok := mustGrant(t, b.Line(), rOK, 9)
			require.Equal(t, rOK, b.Do("r", "tp2", btok))
		})
		t.Run("wait timeout 0 leaves the queue", func(t *testing.T) {
			obs, a, b := srv.Connect(t), srv.Connect(t), srv.Connect(t)
			tok := lock(t, a, "tp3")
			require.Equal(t, rQueued, b.Do("e", "tp3", ""))
			require.Equal(t, rTimeout, b.Do("w", "tp3", "0"))
			require.Equal(t, rErrNotEnqueued, b.Do("w", "tp3", "0"))
			waitLockWaiters(t, obs, "tp3", 0)
			require.Equal(t, rOK, a.Do("r", "tp3", tok))
			lock(t, obs, "tp3")
		})
		t.Run("wait times out", func(t *testing.T) {
			a, b := srv.Connect(t), srv.Connect(t)
			lock(t, a, "tp4")
			require.Equal(t, rQueued, b.Do("e", "tp4", ""))
			require.Equal(t, rTimeout, b.Do("w", "tp4", "1"))
			require.Equal(t, rErrNotEnqueued, b.Do("w", "tp4", "1"))
		})
		t.Run("wait without enqueue", func(t *testing.T) {
			c := srv.Connect(t)
			require.Equal(t, rErrNotEnqueued, c.Do("w", "tp5", "1"))
			lock(t, c, "tp5")
			require.Equal(t, rErrNotEnqueued, c.Do("w", "tp5", "1"))
			require.Equal(t, rErrNotEnqueued, c.Do("sw", "tp5", "1"))
		})
		t.Run("fast-path grant expired", func(t *testing.T) {
			c := srv.Connect(t)
			mustGrant(t, c.Do("e", "tp6", "1"), "acquired", 1)
			time.Sleep(1300 * time.Millisecond)
			require.Equal(t, rErrLeaseExpired, c.Do("w", "tp6", "5"))
			require.Equal(t, rErrNotEnqueued, c.Do("w", "tp6", "5"))
			lock(t, srv.Connect(t), "tp6")
		})
		t.Run("queued grant expired before wait", func(t *testing.T) {
			obs, a, b := srv.Connect(t), srv.Connect(t), srv.Connect(t)
			tok := lock(t, a, "tp7")
			require.Equal(t, rQueued, b.Do("e", "tp7", "1"))
			require.Equal(t, rOK, a.Do("r", "tp7", tok)) // b is granted, lease 1 s
			waitStats(t, obs, "tp7 held by b", func(s statsReply) bool {
				l, ok := s.lock("tp7")
				return ok && l.OwnerConnID != 0
			})
			time.Sleep(1300 * time.Millisecond)
			require.Equal(t, rErrLeaseExpired, b.Do("w", "tp7", "5"))
			lock(t, a, "tp7")
		})
		t.Run("enqueue again after wait", func(t *testing.T) {
			c := srv.Connect(t)
			tok := mustGrant(t, c.Do("e", "tp8", ""), "acquired", 33)
			require.Equal(t, "ok "+tok+" 33", c.Do("w", "tp8", "1"))
			// Not re-entrant: the new e queues behind c's own hold.
			require.Equal(t, rQueued, c.Do("e", "tp8", ""))
			require.Equal(t, rOK, c.Do("r", "tp8", tok))
			tok2 := mustGrant(t, c.Do("w", "tp8", "5"), rOK, 33)
			require.NotEqual(t, tok, tok2)
		})
		t.Run("semaphore", func(t *testing.T) {
			a, b, c := srv.Connect(t), srv.Connect(t), srv.Connect(t)
			ta := mustGrant(t, a.Do("se", "tps", "2"), "acquired", 33)
			mustGrant(t, b.Do("se", "tps", "2 4"), "acquired", 4)
			require.Equal(t, rQueued, c.Do("se", "tps", "2"))
			require.Equal(t, rErrAlreadyEnq, c.Do("se", "tps", "2"))
			require.Equal(t, "ok "+ta+" 33", a.Do("sw", "tps", "0"))
			c.Request("sw", "tps", "30")
			c.NoReply(100 * time.Millisecond)
			require.Equal(t, rOK, a.Do("sr", "tps", ta))
			mustGrant(t, c.Line(), rOK, 33)
			require.Equal(t, rErrNotEnqueued, a.Do("w", "tps", "0"), "namespaces are separate")
		})
		t.Run("parked wait disconnect", func(t *testing.T) {
			obs, a, b := srv.Connect(t), srv.Connect(t), srv.Connect(t)
			tok := lock(t, a, "tp9")
			require.Equal(t, rQueued, b.Do("e", "tp9", ""))
			b.Request("w", "tp9", "60")
			waitLockWaiters(t, obs, "tp9", 1)
			require.NoError(t, b.Close())
			waitLockWaiters(t, obs, "tp9", 0)
			require.Equal(t, rOK, a.Do("r", "tp9", tok))
			lock(t, obs, "tp9")
		})
	})
}

// TestManyWaitersManyKeys checks FIFO under concurrency: many clients queue
// on a few keys; every grant goes to the oldest waiter.
func TestManyWaitersManyKeys(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		srv := tr.start(t)
		obs := srv.Connect(t)
		const keys, per = 4, 6
		holders := make([]*reactortest.Conn, keys)
		toks := make([]string, keys)
		waiters := make([][]*reactortest.Conn, keys)
		for k := range keys {
			key := fmt.Sprintf("mk%d", k)
			holders[k] = srv.Connect(t)
			toks[k] = lock(t, holders[k], key)
		}
		for i := range per {
			for k := range keys {
				key := fmt.Sprintf("mk%d", k)
				w := srv.Connect(t)
				w.Request("l", key, "60")
				waiters[k] = append(waiters[k], w)
				waitLockWaiters(t, obs, key, i+1)
			}
		}
		for i := range per {
			for k := range keys {
				key := fmt.Sprintf("mk%d", k)
				require.Equal(t, rOK, obs.Do("r", key, toks[k]))
				toks[k] = mustGrant(t, waiters[k][i].Line(), rOK, 33)
			}
		}
	})
}

// TestSameLoopHandoffChain passes one lock around connections that all live
// on a single event loop, so every grant is delivered on the loop that
// served the release (the same-loop path, no gnet task), including grants
// that arrive while the loop is closing a connection.
func TestSameLoopHandoffChain(t *testing.T) {
	srv := reactortest.Start(t, func(c *reactortest.Config) { c.Server.Loops = 1 })
	obs := srv.Connect(t)
	const n = 8
	conns, tok := queueChain(t, srv, obs, "chain", n)
	// Each holder releases; the next in line gets the grant, in order, and
	// then queues again behind the others.
	holder := 0
	for round := range 3 * n {
		require.Equal(t, rOK, conns[holder].Do("r", "chain", tok), "round %d", round)
		conns[holder].Request("l", "chain", "30")
		holder = (holder + 1) % n
		tok = mustGrant(t, conns[holder].Line(), rOK, 33)
	}
	// A holder that disconnects hands the lock on from inside OnClose.
	_ = conns[holder].Close()
	next := (holder + 1) % n
	mustGrant(t, conns[next].Line(), rOK, 33)
}
