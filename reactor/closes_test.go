package reactor_test

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/reactor"
	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// Every close the server makes is counted by its reason
// (dflockd_connections_closed_total); closes by the client are not.
func TestClosesCountedByReason(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		cases := []struct {
			name      string
			why       reactor.CloseReason
			configure func(*reactortest.Config)
			provoke   func(t *testing.T, srv *reactortest.Server)
		}{
			{"wrong secret", reactor.CloseAuthFailed, func(c *reactortest.Config) { c.Server.AuthToken = "s3cret" },
				func(t *testing.T, srv *reactortest.Server) {
					c := srv.Connect(t)
					require.Equal(t, rErrAuth, c.Do("auth", "_", "wrong"))
					c.Closed(5 * time.Second)
				}},
			{"no auth in time", reactor.CloseAuthTimeout, func(c *reactortest.Config) {
				c.Server.AuthToken = "s3cret"
				c.Server.AuthTimeout = 200 * time.Millisecond
			}, func(t *testing.T, srv *reactortest.Server) {
				c := srv.Connect(t)
				require.Equal(t, rErrAuth, c.Line())
				c.Closed(5 * time.Second)
			}},
			{"idle", reactor.CloseReadTimeout, func(c *reactortest.Config) { c.Server.ReadTimeout = 200 * time.Millisecond },
				func(t *testing.T, srv *reactortest.Server) {
					c := srv.Connect(t)
					require.Equal(t, rError, c.Line())
					c.Closed(5 * time.Second)
				}},
			{"long line", reactor.CloseLineTooLong, nil, func(t *testing.T, srv *reactortest.Server) {
				c := srv.Connect(t)
				c.Send(strings.Repeat("x", 300))
				require.Equal(t, rError, c.Line())
				c.Closed(5 * time.Second)
			}},
			{"flood behind a blocked request", reactor.CloseInboundCap, nil, func(t *testing.T, srv *reactortest.Server) {
				holder, c := srv.Connect(t), srv.Connect(t)
				lock(t, holder, "held")
				c.Request("l", "held", "30")
				waitLockWaiters(t, holder, "held", 1)
				flood := strings.Repeat(req("ping", "_", "_"), 100<<10/len(req("ping", "_", "_")))
				_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
				_, _ = c.Write([]byte(flood))
				c.Closed(5 * time.Second)
			}},
			{"replies not read", reactor.CloseWriteTimeout, func(c *reactortest.Config) { c.Server.WriteTimeout = 300 * time.Millisecond },
				func(t *testing.T, srv *reactortest.Server) {
					holdNamed(t, srv.Connect(t), 1024, escapedKey) // a 1.6 MB stats reply
					c := dialSlowReader(t, tr, srv)
					_, err := c.Write([]byte(req("stats", "_", "_")))
					require.NoError(t, err)
					require.Eventually(t, func() bool { return srv.Metrics().Closes[reactor.CloseWriteTimeout] == 1 },
						10*time.Second, 10*time.Millisecond)
				}},
		}
		if tr.tls {
			cases = append(cases, struct {
				name      string
				why       reactor.CloseReason
				configure func(*reactortest.Config)
				provoke   func(t *testing.T, srv *reactortest.Server)
			}{"not TLS", reactor.CloseTLSHandshake, nil, func(t *testing.T, srv *reactortest.Server) {
				nc, err := net.Dial("tcp", srv.Addr)
				require.NoError(t, err)
				defer func() { _ = nc.Close() }()
				_, _ = nc.Write([]byte(req("ping", "_", "_")))
				_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
				_, _ = nc.Read(make([]byte, 512)) // an alert, then EOF
			}})
		}
		for _, c := range cases {
			var configure []func(*reactortest.Config)
			if c.configure != nil {
				configure = append(configure, c.configure)
			}
			srv := tr.start(t, configure...)
			// A client's own close is no reason.
			bye := srv.Connect(t)
			_ = bye.Close()
			c.provoke(t, srv)
			require.Eventually(t, func() bool {
				m := srv.Metrics()
				return m.Closes[c.why] == 1 && m.Connections <= 1
			}, 10*time.Second, 5*time.Millisecond, "%s: closes %v", c.name, srv.Metrics().Closes)
			for r, n := range srv.Metrics().Closes {
				if reactor.CloseReason(r) != c.why {
					require.Zero(t, n, "%s: also counted %s", c.name, reactor.CloseReason(r))
				}
			}
		}
	})
}
