package reactor_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/codec"
	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// Direct delivery: a parked result completed on another goroutine (a
// release served by another event loop, the lock table's timer) is written
// to the socket by that goroutine when the connection has nothing buffered
// either way. These tests use plain TCP (TLS connections always go through
// their own goroutine) and two event loops, so that consecutive
// connections live on different loops.

func twoLoops(c *reactortest.Config) {
	c.Server.Loops = 2
	c.Server.Metrics = true
}

// TestDirectHandoffChain passes one lock around connections spread over two
// loops: every grant arrives, in FIFO order, once; grants crossing loops are
// written directly; and each one counts as a request and a wait like a
// grant delivered by the connection's loop.
func TestDirectHandoffChain(t *testing.T) {
	t.Parallel()
	srv := reactortest.Start(t, twoLoops)
	obs := srv.Dial(t)
	const n = 8
	conns, tok := queueChain(t, srv, obs, "chain", n)
	const rounds = 3 * n
	holder := 0
	for round := range rounds {
		require.Equal(t, rOK, conns[holder].Do("r", "chain", tok), "round %d", round)
		conns[holder].Request("l", "chain", "30")
		holder = (holder + 1) % n
		tok = mustGrant(t, conns[holder].Line(), rOK, 33)
		// The grant can reach the next holder (written by the releasing
		// loop) before that loop reads the old holder's new request: wait
		// until it is queued, so that the order of the chain is known.
		waitLockWaiters(t, obs, "chain", n-1)
	}
	for i, c := range conns {
		if i != holder {
			c.NoReply(20 * time.Millisecond) // no duplicate grant anywhere
		}
	}
	m := srv.Metrics()
	require.Positive(t, m.DirectResults, "grants crossing loops are written by the releasing loop")
	// 1 immediate grant + rounds hand-offs, all counted, direct or not.
	require.Equal(t, uint64(1+rounds), m.Requests[codec.CmdLock][codec.CodeOK])
	require.Equal(t, uint64(rounds), m.Wait[codec.CmdLock].Count())
	require.Equal(t, int64(n-1), m.Parked, "the n-1 queued are parked")
}

// TestTimerResultsViaLoop: an acquire timeout fires on the lock table's
// timer, which hands it to the connection's loop instead of writing it
// itself (one goroutine fires every timer).
func TestTimerResultsViaLoop(t *testing.T) {
	t.Parallel()
	srv := reactortest.Start(t, twoLoops)
	a, b := srv.Dial(t), srv.Dial(t)
	lock(t, a, "to")
	before := srv.Metrics().DirectResults
	require.Equal(t, rTimeout, b.Do("l", "to", "1"))
	require.Equal(t, rOK, b.Do("ping", "_", "_"), "b is served again")
	require.Equal(t, before, srv.Metrics().DirectResults)
	require.Zero(t, srv.Metrics().Parked)
}

// TestDirectNotPastInput: input that arrives while a request is parked
// (pipelined with it, or sent later) is never left behind by a direct
// write: the result goes through the loop, which then serves the input,
// in order.
func TestDirectNotPastInput(t *testing.T) {
	t.Parallel()
	srv := reactortest.Start(t, twoLoops)
	obs := srv.Dial(t)
	a, b, c := srv.Dial(t), srv.Dial(t), srv.Dial(t)

	// Pipelined behind the parked request.
	tok := lock(t, a, "k")
	b.Send(req("l", "k", "30") + req("ping", "_", "_"))
	waitLockWaiters(t, obs, "k", 1)
	b.NoReply(50 * time.Millisecond)
	require.Equal(t, rOK, a.Do("r", "k", tok))
	tok = mustGrant(t, b.Line(), rOK, 33)
	require.Equal(t, rOK, b.Line())

	// Sent after the request parked (the loop had armed the connection).
	c.Request("l", "k", "30")
	waitLockWaiters(t, obs, "k", 1)
	c.Request("ping", "_", "_")
	c.NoReply(50 * time.Millisecond)
	require.Equal(t, rOK, b.Do("r", "k", tok))
	mustGrant(t, c.Line(), rOK, 33)
	require.Equal(t, rOK, c.Line(), "the ping sent while parked is answered")
}

// TestDirectReadTimeout: the read timeout is suspended while parked and
// runs again from a directly written grant, as it does from a grant the
// loop writes.
func TestDirectReadTimeout(t *testing.T) {
	t.Parallel()
	const rt = 400 * time.Millisecond
	srv := reactortest.Start(t, twoLoops, func(c *reactortest.Config) { c.Server.ReadTimeout = rt })
	obs := srv.Dial(t)
	// Several waiters, so that some live on the other loop than the holder.
	const n = 4
	conns, tok := queueChain(t, srv, obs, "rt", n)
	// Parked well past the read timeout: not closed (the holder and the
	// observer keep themselves alive).
	for range 3 {
		time.Sleep(rt / 2)
		require.Equal(t, rOK, conns[0].Do("ping", "_", "_"))
		require.Equal(t, rOK, obs.Do("ping", "_", "_"))
	}
	before := srv.Metrics().DirectResults
	for i := 1; i < n; i++ {
		require.Equal(t, rOK, conns[i-1].Do("r", "rt", tok))
		tok = mustGrant(t, conns[i].Line(), rOK, 33)
		granted := time.Now()
		// Silent after its grant: closed one read timeout later.
		if i < n-1 {
			continue // released below, by the next iteration
		}
		require.Equal(t, rError, conns[i].Line())
		conns[i].Closed(2 * time.Second)
		took := time.Since(granted)
		require.Greater(t, took, rt-50*time.Millisecond, "read timeout counts from the grant")
		require.Less(t, took, rt+time.Second)
	}
	require.Greater(t, srv.Metrics().DirectResults, before, "some grants crossed loops")
}
