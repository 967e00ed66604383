package reactor_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// PROTOCOL.md "Drain": Server.Shutdown.

func TestDrain(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		t.Run("parked request completes", func(t *testing.T) {
			t.Parallel()
			srv := tr.start(t)
			obs, a, b := srv.Connect(t), srv.Connect(t), srv.Connect(t)
			tok := mustGrant(t, a.Do("l", "dr", "0 2"), rOK, 2)
			b.Send(req("l", "dr", "30") + req("ping", "_", "_"))
			waitLockWaiters(t, obs, "dr", 1)

			done := beginDrain(t, srv, obs)
			// New requests on existing connections answer error_draining.
			require.Equal(t, rErrDraining, obs.Do("l", "new", "0"))
			require.Equal(t, rErrDraining, obs.Do("stats", "_", "_"))
			// Renew and release still work: they start nothing new, and a
			// release is how the parked request gets its grant.
			require.Equal(t, "ok 2", a.Do("n", "dr", tok+" 2"))
			// New connections are refused.
			if nc, err := net.DialTimeout("tcp", srv.Addr, time.Second); err == nil {
				_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
				n, err := nc.Read(make([]byte, 1))
				require.Zero(t, n)
				require.Error(t, err)
				_ = nc.Close()
			}
			// The holder releases: the parked request is granted, and the
			// request pipelined behind it then answers error_draining.
			require.Equal(t, rOK, a.Do("r", "dr", tok))
			line, err := b.ReadLine(10 * time.Second)
			require.NoError(t, err)
			mustGrant(t, line, rOK, 33)
			require.Equal(t, rErrDraining, b.Line())
			select {
			case err := <-done:
				require.NoError(t, err)
			case <-time.After(10 * time.Second):
				t.Fatal("Shutdown did not return")
			}
			a.Closed(5 * time.Second)
			b.Closed(5 * time.Second)
		})
		// A two-phase enqueue made before the drain is a blocked request
		// too: its w (sw) finishes it and starts nothing new. Refusing the
		// w left the enqueue first in line, so the release handed the key
		// to a grant nobody could collect and the acquire queued behind it
		// waited for the shutdown timeout.
		t.Run("two-phase enqueue completes", func(t *testing.T) {
			t.Parallel()
			for _, c := range []struct{ e, w, l, r, arg string }{{"e", "w", "l", "r", ""}, {"se", "sw", "sl", "sr", " 1"}} {
				srv := tr.start(t)
				obs, a, b, d := srv.Connect(t), srv.Connect(t), srv.Connect(t), srv.Connect(t)
				tok := mustGrant(t, a.Do(c.l, "tp", "0"+c.arg), rOK, 33)
				require.Equal(t, rQueued, b.Do(c.e, "tp", strings.TrimSpace(c.arg)))
				d.Request(c.l, "tp", "30"+c.arg)
				if c.l == "sl" {
					waitSemWaiters(t, obs, "tp", 2)
				} else {
					waitLockWaiters(t, obs, "tp", 2)
				}

				done := beginDrain(t, srv, obs)
				require.Equal(t, rErrDraining, obs.Do(c.e, "other", strings.TrimSpace(c.arg)), "a new enqueue")
				require.Equal(t, rErrNotEnqueued, obs.Do(c.w, "tp", "0"), "w without an enqueue")
				// A second auth answers error, as it does outside a drain.
				require.Equal(t, rError, obs.Do("auth", "_", "x"))
				require.Equal(t, rOK, a.Do(c.r, "tp", tok))
				btok := mustGrant(t, b.Do(c.w, "tp", "10"), rOK, 33)
				require.Equal(t, rOK, b.Do(c.r, "tp", btok))
				line, err := d.ReadLine(10 * time.Second)
				require.NoError(t, err)
				mustGrant(t, line, rOK, 33)
				select {
				case err := <-done:
					require.NoError(t, err)
				case <-time.After(10 * time.Second):
					t.Fatalf("%s: Shutdown did not return", c.e)
				}
			}
		})
		t.Run("deadline cuts parked requests off", func(t *testing.T) {
			t.Parallel()
			srv := tr.start(t)
			obs, a, b := srv.Connect(t), srv.Connect(t), srv.Connect(t)
			lock(t, a, "dd")
			b.Request("l", "dd", "60")
			waitLockWaiters(t, obs, "dd", 1)
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			start := time.Now()
			err := srv.Shutdown(ctx)
			require.ErrorIs(t, err, context.DeadlineExceeded)
			require.Less(t, time.Since(start), 5*time.Second)
			b.Closed(5 * time.Second)
			a.Closed(5 * time.Second)
		})
		t.Run("nothing parked", func(t *testing.T) {
			t.Parallel()
			srv := tr.start(t)
			c := srv.Connect(t)
			lock(t, c, "held")
			start := time.Now()
			require.NoError(t, srv.Shutdown(context.Background()))
			require.Less(t, time.Since(start), 5*time.Second)
			c.Closed(5 * time.Second)
		})
	})
}

// beginDrain starts srv.Shutdown (20 s bound) and returns once obs's
// requests answer error_draining; Shutdown's result comes on the channel.
func beginDrain(t *testing.T, srv *reactortest.Server, obs *reactortest.Conn) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		done <- srv.Shutdown(ctx)
	}()
	require.Eventually(t, func() bool { return obs.Do("ping", "_", "_") == rErrDraining },
		5*time.Second, 5*time.Millisecond)
	return done
}
