package reactor_test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// review13a: lock-core timing and semantics at the edges, over the wire.

// Timeouts and leases at and past the largest values: up to the largest
// int64 they are clamped to 100 years (README "Differences"), one more is
// a bad integer answering error with the connection open; the stats of a
// 100-year lease are sane; --max-semaphore-limit is exact.
func TestHugeNumbersOverWire(t *testing.T) {
	srv := reactortest.Start(t, func(c *reactortest.Config) { c.Core.MaxSemaphoreLimit = 1024 })
	c := srv.Dial(t)
	const max = "9223372036854775807"
	const over = "9223372036854775808"
	tok := mustGrant(t, c.Do("l", "k", max+" "+max), rOK, 3155760000)
	require.Equal(t, "ok 3155760000", c.Do("n", "k", tok+" +"+max))
	require.Equal(t, rError, c.Do("n", "k", tok+" "+over))
	require.Equal(t, rError, c.Do("l", "k2", over))
	require.Equal(t, rError, c.Do("l", "k2", "0 "+over))
	require.Equal(t, rError, c.Do("l", "k2", "99999999999999999999999999"))
	require.Equal(t, rError, c.Do("sl", "s", "0 1025"))
	require.Equal(t, rError, c.Do("se", "s", max))
	mustGrant(t, c.Do("sl", "s", "0 1024 "+max), rOK, 3155760000)
	require.Equal(t, rErrLimitMismatch, c.Do("sl", "s", "0 1023"))
	mustGrant(t, c.Do("e", "e", "+"+max), "acquired", 3155760000)
	got := mustGrant(t, c.Do("w", "e", max), rOK, 3155760000)
	require.Len(t, got, 32)
	s := stats(t, c)
	l, ok := s.lock("k")
	require.True(t, ok)
	require.InDelta(t, 3155760000, l.LeaseExpiresInS, 5)
	// A second client waits with the largest timeout and gets the lock at
	// the release.
	d := srv.Dial(t)
	d.Request("l", "k", max)
	waitLockWaiters(t, c, "k", 1)
	require.Equal(t, rOK, c.Do("r", "k", tok))
	mustGrant(t, d.Line(), rOK, 33)
	require.Equal(t, rOK, c.Do("ping", "_", "_"))
}

// A waiter that disconnects is never granted: the lock goes to the next
// live waiter at the lease end, with auto-release on and off; a
// disconnected two-phase waiter likewise.
func TestClosedWaiterNeverGranted(t *testing.T) {
	for _, noAuto := range []bool{false, true} {
		t.Run("noauto="+strconv.FormatBool(noAuto), func(t *testing.T) {
			srv := reactortest.Start(t, func(c *reactortest.Config) { c.NoAutoRelease = noAuto })
			obs := srv.Dial(t)
			a := srv.Dial(t)
			mustGrant(t, a.Do("l", "k", "0 1"), rOK, 1)
			b := srv.Dial(t)
			b.Request("l", "k", "10")
			waitLockWaiters(t, obs, "k", 1)
			e := srv.Dial(t)
			require.Equal(t, rQueued, e.Do("e", "k", "1"))
			waitLockWaiters(t, obs, "k", 2)
			f := srv.Dial(t)
			f.Request("l", "k", "10")
			waitLockWaiters(t, obs, "k", 3)
			_ = b.Close()
			_ = e.Close()
			waitLockWaiters(t, obs, "k", 1)
			tok := mustGrant(t, f.Line(), rOK, 33)
			require.Equal(t, rOK, f.Do("r", "k", tok))
			waitStats(t, obs, "k free", func(s statsReply) bool { _, ok := s.lock("k"); return !ok })
		})
	}
}

// Two-phase over the wire at the edges: a fast-path grant that expires
// before w answers error_lease_expired, then error_not_enqueued; e starts
// afresh; w with timeout 0 on a queued entry times out and leaves.
func TestTwoPhaseExpiryOverWire(t *testing.T) {
	srv := reactortest.Start(t)
	c := srv.Dial(t)
	mustGrant(t, c.Do("e", "k", "1"), "acquired", 1)
	mustGrant(t, c.Do("se", "s", "2 1"), "acquired", 1)
	time.Sleep(1100 * time.Millisecond)
	require.Equal(t, rErrLeaseExpired, c.Do("w", "k", "5"))
	require.Equal(t, rErrNotEnqueued, c.Do("w", "k", "5"))
	require.Equal(t, rErrLeaseExpired, c.Do("sw", "s", "0"))
	require.Equal(t, rErrNotEnqueued, c.Do("sw", "s", "0"))
	tok := mustGrant(t, c.Do("e", "k", ""), "acquired", 33)
	d := srv.Dial(t)
	require.Equal(t, rQueued, d.Do("e", "k", "2"))
	require.Equal(t, rTimeout, d.Do("w", "k", "0"))
	require.Equal(t, rErrNotEnqueued, d.Do("w", "k", "0"))
	require.Equal(t, tok, mustGrant(t, c.Do("w", "k", "0"), rOK, 33))
	require.Equal(t, rOK, c.Do("r", "k", tok))
}

// Once everything is released, closed or expired, stats shows nothing at
// all after GC: exactly the empty server's line.
func TestStatsEmptyAfterEverything(t *testing.T) {
	srv := reactortest.Start(t, func(c *reactortest.Config) {
		c.Core.GCInterval = 20 * time.Millisecond
		c.Core.GCMaxIdle = 100 * time.Millisecond
		c.NoAutoRelease = true
	})
	a, b, x := srv.Dial(t), srv.Dial(t), srv.Dial(t)
	tok := mustGrant(t, a.Do("l", "k", "0 1"), rOK, 1)
	mustGrant(t, a.Do("sl", "s", "0 2 1"), rOK, 1)
	mustGrant(t, a.Do("sl", "s", "0 2 1"), rOK, 1)
	require.Equal(t, rQueued, x.Do("e", "k", "1"))
	require.Equal(t, rQueued, b.Do("se", "s", "2 1"))
	mustGrant(t, a.Do("e", "e1", "1"), "acquired", 1)
	b.Request("l", "k", "5 1")
	_ = x.Close() // its queued e goes
	require.Equal(t, rOK, a.Do("r", "k", tok))
	mustGrant(t, b.Line(), rOK, 1) // held by b, orphaned at its close (auto-release off)
	_ = a.Close()
	_ = b.Close()
	obs := srv.Dial(t)
	deadline := time.Now().Add(5 * time.Second)
	want := `ok {"connections":1,"locks":[],"semaphores":[],"idle_locks":[],"idle_semaphores":[]}`
	var last string
	for time.Now().Before(deadline) {
		last = obs.Do("stats", "_", "_")
		if last == want {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	require.Equal(t, want, last)
	require.Zero(t, srv.Table.Keys())
	cn := srv.Table.Counters()
	require.Zero(t, cn.Timers)
	require.Equal(t, [2]int64{}, cn.Held)
	require.Equal(t, [2]int64{}, cn.Waiting)
	require.False(t, strings.Contains(last, "null"))
}
