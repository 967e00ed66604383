package reactor_test

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// PROTOCOL.md "Limits", "Connections" (max-connections, read timeout) and
// "Auth and TLS".

func TestMaxLocks(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		srv := tr.start(t, func(c *reactortest.Config) { c.Core.MaxLocks = 3 })
		c := srv.Connect(t)
		ta := lock(t, c, "a")
		tb := lock(t, c, "b")
		ts := mustGrant(t, c.Do("sl", "s", "0 2"), rOK, 33)
		// At the cap, a new key is refused at once, not after its timeout.
		start := time.Now()
		require.Equal(t, rErrMaxLocks, c.Do("l", "new", "30"))
		require.Equal(t, rErrMaxLocks, c.Do("sl", "new", "30 1"))
		require.Equal(t, rErrMaxLocks, c.Do("e", "new", ""))
		require.Equal(t, rErrMaxLocks, c.Do("se", "new", "2"))
		require.Less(t, time.Since(start), 3*time.Second)
		// Existing keys still work.
		require.Equal(t, rTimeout, c.Do("l", "a", "0"))
		ts2 := mustGrant(t, c.Do("sl", "s", "0 2"), rOK, 33)
		require.Equal(t, rOK, c.Do("sr", "s", ts2))
		// A released key is idle and is reclaimed for a new one at once.
		require.Equal(t, rOK, c.Do("r", "a", ta))
		tn := lock(t, c, "new")
		require.Equal(t, rErrMaxLocks, c.Do("l", "new2", "0"))
		require.Equal(t, rOK, c.Do("sr", "s", ts))
		mustGrant(t, c.Do("se", "new2", "1"), "acquired", 33)
		require.Equal(t, rOK, c.Do("r", "b", tb))
		require.Equal(t, rOK, c.Do("r", "new", tn))
		s := stats(t, c)
		require.LessOrEqual(t, len(s.Locks)+len(s.Semaphores)+len(s.IdleLocks)+len(s.IdleSems), 3, "stats %+v", s)
	})
}

// TestLapsedTwoPhaseAfterReclaim: PROTOCOL.md: "w whose grant already
// expired answers error_lease_expired". That holds after the key, idle
// with only the expired grant's tombstone, was reclaimed for another key
// at the --max-locks cap (it answered error_not_enqueued before): once,
// then error_not_enqueued.
func TestLapsedTwoPhaseAfterReclaim(t *testing.T) {
	srv := reactortest.Start(t, func(c *reactortest.Config) { c.Core.MaxLocks = 1 })
	a, b := srv.Connect(t), srv.Connect(t)
	mustGrant(t, a.Do("e", "lapse", "1"), "acquired", 1)
	time.Sleep(1100 * time.Millisecond) // the grant's 1 s lease runs out
	tb := lock(t, b, "other")           // reclaims "lapse" and its tombstone
	require.Equal(t, "error_not_enqueued", b.Do("w", "lapse", "0"), "another connection")
	require.Equal(t, "error_lease_expired", a.Do("w", "lapse", "0"))
	require.Equal(t, "error_not_enqueued", a.Do("w", "lapse", "0"))
	require.Equal(t, rOK, b.Do("r", "other", tb))
}

func TestMaxWaiters(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		srv := tr.start(t, func(c *reactortest.Config) { c.Core.MaxWaiters = 1 })
		obs := srv.Connect(t)
		a, b, c := srv.Connect(t), srv.Connect(t), srv.Connect(t)
		tok := lock(t, a, "mw")
		b.Request("l", "mw", "30")
		waitLockWaiters(t, obs, "mw", 1)
		start := time.Now()
		require.Equal(t, rErrMaxWaiters, c.Do("l", "mw", "0"), "a timeout-0 try counts")
		require.Equal(t, rErrMaxWaiters, c.Do("l", "mw", "30"))
		require.Equal(t, rErrMaxWaiters, c.Do("e", "mw", ""))
		require.Less(t, time.Since(start), 3*time.Second)
		require.Equal(t, rOK, a.Do("r", "mw", tok))
		mustGrant(t, b.Line(), rOK, 33)
		// The queue is empty again.
		require.Equal(t, rQueued, c.Do("e", "mw", ""))

		ts := mustGrant(t, a.Do("sl", "mws", "0 1"), rOK, 33)
		require.Equal(t, rQueued, b.Do("se", "mws", "1"))
		require.Equal(t, rErrMaxWaiters, c.Do("sl", "mws", "0 1"))
		require.Equal(t, rErrMaxWaiters, c.Do("se", "mws", "1"))
		require.Equal(t, rOK, a.Do("sr", "mws", ts))
		mustGrant(t, b.Do("sw", "mws", "0"), rOK, 33)
	})
}

func TestMaxConnections(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		srv := tr.start(t, func(c *reactortest.Config) { c.Server.MaxConnections = 2 })
		a, b := srv.Connect(t), srv.Connect(t)
		require.Equal(t, rOK, a.Do("ping", "_", "_"))
		require.Equal(t, rOK, b.Do("ping", "_", "_"))

		// The extra connection is accepted and closed without a byte
		// (before any TLS handshake).
		extra := srv.Dial(t)
		buf := make([]byte, 64)
		require.NoError(t, extra.SetReadDeadline(time.Now().Add(5*time.Second)))
		n, err := extra.Read(buf)
		require.Zero(t, n, "got %q", buf[:n])
		require.ErrorIs(t, err, io.EOF)
		require.Equal(t, rOK, a.Do("ping", "_", "_"))

		// A freed slot is usable again.
		require.NoError(t, b.Close())
		waitConnections(t, srv.Server, 1)
		c := srv.Connect(t)
		require.Equal(t, rOK, c.Do("ping", "_", "_"))
	})
}

func TestReadTimeout(t *testing.T) {
	rt := func(c *reactortest.Config) { c.Server.ReadTimeout = time.Second }
	eachTransport(t, func(t *testing.T, tr transport) {
		srv := tr.start(t, rt)

		for _, tc := range []struct{ name, partial string }{
			{"idle", ""},
			{"one line", "l\n"},
			{"two lines", "l\nk\n"},
			{"half a line", "l\nk\n1"},
			{"after a reply", req("ping", "_", "_")},
		} {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				c := srv.Connect(t)
				start := time.Now()
				if tc.partial != "" {
					c.Send(tc.partial)
				}
				if strings.HasPrefix(tc.partial, "ping") {
					require.Equal(t, rOK, c.Line())
				}
				expectClosed(t, c, rError, 5*time.Second)
				require.Greater(t, time.Since(start), 700*time.Millisecond)
			})
		}
		t.Run("dribbling does not extend it", func(t *testing.T) {
			t.Parallel()
			c := srv.Connect(t)
			start := time.Now()
			c.Send("l\nk\n")
			done := make(chan struct{})
			defer close(done)
			go func() {
				// One byte of the argument line every 100 ms for 6 s.
				for range 60 {
					select {
					case <-done:
						return
					case <-time.After(100 * time.Millisecond):
					}
					if _, err := c.Write([]byte("1")); err != nil {
						return
					}
				}
			}()
			expectClosed(t, c, rError, 5*time.Second)
			require.Less(t, time.Since(start), 3500*time.Millisecond)
		})
		t.Run("each line restarts it", func(t *testing.T) {
			t.Parallel()
			c := srv.Connect(t)
			// Lines 500 ms apart: the request takes 1.5 s in all but no
			// line is late.
			for _, line := range []string{"l\n", "lines\n", "0\n"} {
				time.Sleep(500 * time.Millisecond)
				c.Send(line)
			}
			mustGrant(t, c.Line(), rOK, 33)
			for range 3 {
				time.Sleep(500 * time.Millisecond)
				require.Equal(t, rOK, c.Do("ping", "_", "_"))
			}
		})
		t.Run("not while parked", func(t *testing.T) {
			t.Parallel()
			obs, a, b := srv.Connect(t), srv.Connect(t), srv.Connect(t)
			tok := lock(t, a, "rt")
			// a keeps its connection alive; b parks longer than the read
			// timeout.
			b.Request("l", "rt", "30")
			waitLockWaiters(t, obs, "rt", 1)
			for range 5 {
				time.Sleep(500 * time.Millisecond)
				require.Equal(t, rOK, a.Do("ping", "_", "_"))
			}
			require.Equal(t, rOK, a.Do("r", "rt", tok))
			btok := mustGrant(t, b.Line(), rOK, 33)
			// The clock restarts at the reply.
			require.Equal(t, rOK, b.Do("r", "rt", btok))
			expectClosed(t, b, rError, 5*time.Second)
		})
	})
}

func TestAuth(t *testing.T) {
	const secret = "s3cret"
	withToken := func(c *reactortest.Config) {
		c.Server.AuthToken = secret
		c.Server.ReadTimeout = time.Second
	}
	eachTransport(t, func(t *testing.T, tr transport) {
		srv := tr.start(t, withToken)

		t.Run("good", func(t *testing.T) {
			t.Parallel()
			c := srv.Connect(t)
			require.Equal(t, rOK, c.Do("auth", "_", secret))
			require.Equal(t, rOK, c.Do("ping", "_", "_"))
			lock(t, c, "auth")
			// A second auth answers error and keeps the connection.
			require.Equal(t, rError, c.Do("auth", "_", secret))
			require.Equal(t, rError, c.Do("auth", "_", "wrong"))
			require.Equal(t, rOK, c.Do("ping", "_", "_"))
		})
		t.Run("trimmed, any key", func(t *testing.T) {
			t.Parallel()
			c := srv.Connect(t)
			require.Equal(t, rOK, c.Do("auth", "", " \t"+secret+"  "))
			require.Equal(t, rOK, c.Do("ping", "_", "_"))
			d := srv.Connect(t)
			d.Send("auth\r\nx\r\n" + secret + "\r\n")
			require.Equal(t, rOK, d.Line())
		})
		for _, tc := range []struct{ name, raw string }{
			{"wrong secret", req("auth", "_", "s3cre")},
			{"empty secret", req("auth", "_", "")},
			{"secret prefix", req("auth", "_", secret+"x")},
			{"other command first", req("ping", "_", "_")},
			{"lock first", req("l", "k", "0")},
			{"malformed first", req("x", "_", "_")},
			{"over-long first", strings.Repeat("a", 300)},
		} {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				c := srv.Connect(t)
				// Anything pipelined behind it is not served.
				c.Send(tc.raw + req("auth", "_", secret) + req("ping", "_", "_"))
				// The close comes after the anti-brute-force pause
				// (~100 ms; timers never fire early).
				pause := replyThenClose(t, c, rErrAuth, 5*time.Second)
				require.GreaterOrEqual(t, pause, 80*time.Millisecond)
			})
		}
		t.Run("idle before auth", func(t *testing.T) {
			t.Parallel()
			c := srv.Connect(t)
			pause := replyThenClose(t, c, rErrAuth, 5*time.Second)
			require.GreaterOrEqual(t, pause, 80*time.Millisecond)
		})
		t.Run("partial request before auth", func(t *testing.T) {
			t.Parallel()
			c := srv.Connect(t)
			c.Send("auth\n_\n")
			pause := replyThenClose(t, c, rErrAuth, 5*time.Second)
			require.GreaterOrEqual(t, pause, 80*time.Millisecond)
		})
	})
}
