package reactor_test

import (
	"context"
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// Closes the client begins are never counted in
// dflockd_connections_closed_total, on either transport: a close or a reset
// while parked, a half-close while parked, a close during a write stall,
// a close during a drain, a half-close with replies pending.
func TestClientClosesNotCounted(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		// parkedThen parks a request on a held key, then ends its
		// connection the client's way.
		parkedThen := func(end func(c net.Conn)) func(t *testing.T, srv *reactortest.Server) {
			return func(t *testing.T, srv *reactortest.Server) {
				holder := srv.Connect(t)
				lock(t, holder, "k")
				c := dialRaw(t, tr, srv)
				_, err := c.Write([]byte(req("l", "k", "30")))
				require.NoError(t, err)
				waitLockWaiters(t, holder, "k", 1)
				end(c)
				waitLockWaiters(t, holder, "k", 0)
			}
		}
		cases := []struct {
			name    string
			provoke func(t *testing.T, srv *reactortest.Server)
		}{
			{"close while parked", parkedThen(func(c net.Conn) { _ = c.Close() })},
			{"reset while parked", parkedThen(func(c net.Conn) {
				if tc, ok := c.(*tls.Conn); ok {
					c = tc.NetConn()
				}
				_ = c.(*net.TCPConn).SetLinger(0)
				_ = c.Close()
			})},
			{"half-close while parked", parkedThen(func(c net.Conn) {
				if cw, ok := c.(interface{ CloseWrite() error }); ok {
					_ = cw.CloseWrite()
				}
			})},
			{"close during a write stall", func(t *testing.T, srv *reactortest.Server) {
				holdNamed(t, srv.Connect(t), 1024, escapedKey)
				c := dialSlowReader(t, tr, srv)
				_, err := c.Write([]byte(req("stats", "_", "_")))
				require.NoError(t, err)
				time.Sleep(300 * time.Millisecond)
				_ = c.Close()
			}},
			{"half-close with replies pending", func(t *testing.T, srv *reactortest.Server) {
				holdNamed(t, srv.Connect(t), 1024, escapedKey)
				c := dialSlowReader(t, tr, srv)
				_, err := c.Write([]byte(req("stats", "_", "_") + req("ping", "_", "_")))
				require.NoError(t, err)
				if tc, ok := c.(interface{ CloseWrite() error }); ok {
					_ = tc.CloseWrite()
				}
				buf := make([]byte, 64<<10)
				_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
				for {
					if _, err := c.Read(buf); err != nil {
						break
					}
				}
			}},
		}
		for _, cs := range cases {
			srv := tr.start(t, func(c *reactortest.Config) {
				c.Server.WriteTimeout = 30 * time.Second
			})
			cs.provoke(t, srv)
			require.Eventually(t, func() bool { return srv.Connections() <= 2 }, 10*time.Second, 5*time.Millisecond)
			time.Sleep(100 * time.Millisecond)
			requireNoCloses(t, srv, tr.name+": "+cs.name)
		}

		// A close during a drain: the drain's own close is not counted
		// either.
		srv := tr.start(t)
		holder, c := srv.Connect(t), srv.Connect(t)
		tok := lock(t, holder, "k")
		c.Request("l", "k", "30")
		waitLockWaiters(t, holder, "k", 1)
		done := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			done <- srv.Shutdown(ctx)
		}()
		require.Eventually(t, func() bool { return srv.Metrics().Draining }, 5*time.Second, time.Millisecond)
		_ = c.Close()
		// Not waited for: once c's request is gone nothing is parked, and
		// the drain may close the holder's connection before it arrives.
		_, _ = holder.Write([]byte(req("r", "k", tok)))
		require.NoError(t, <-done)
		requireNoCloses(t, srv, tr.name+": drain")
	})
}
