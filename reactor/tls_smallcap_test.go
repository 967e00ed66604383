package reactor_test

import (
	"context"
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/lockcore"
	"github.com/lockreactor/dflockd/reactor"
	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// TestSmallInboundCapIncompleteRequest: Config.InboundCap takes any
// positive value. With one below the largest request (3 x 257 bytes), a
// request whose first bytes are more than the cap is not decodable yet.
// Both paths wait for the rest. The TLS reader once waited for the
// processor whenever it held more than the cap: the processor could decode
// nothing, and the two spun while the rest was never read (and
// Server.Close hung). It now leaves room for one incomplete request.
//
// The server is built here rather than with reactortest.Start, whose
// cleanup would block on the hung Close.
func TestSmallInboundCapIncompleteRequest(t *testing.T) {
	for _, withTLS := range []bool{false, true} {
		name := "tcp"
		if withTLS {
			name = "tls"
		}
		t.Run(name, func(t *testing.T) {
			cfg := reactor.Config{Addr: "127.0.0.1:0", InboundCap: 300, ReadTimeout: 23 * time.Second, Loops: 1}
			var clientTLS *tls.Config
			if withTLS {
				cfg.TLS, clientTLS = reactortest.SelfSignedTLS(t)
			}
			table := lockcore.New(lockcore.Config{AutoRelease: true})
			table.Start()
			srv, err := reactor.New(cfg, table)
			require.NoError(t, err)
			served := make(chan error, 1)
			go func() { served <- srv.Serve() }()
			closed := make(chan struct{})
			stop := func() bool {
				go func() { srv.Close(); close(closed) }()
				select {
				case <-closed:
					<-served
					table.Stop()
					return true
				case <-time.After(3 * time.Second):
					return false // leaks the server: it cannot be stopped
				}
			}

			nc, err := net.DialTimeout("tcp", srv.Addr().String(), 5*time.Second)
			require.NoError(t, err)
			defer func() { _ = nc.Close() }()
			c := nc
			if withTLS {
				tc := tls.Client(nc, clientTLS)
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				require.NoError(t, tc.HandshakeContext(ctx))
				cancel()
				c = tc
			}
			key := strings.Repeat("k", 250)
			// 2 + 251 + 61 = 314 bytes: more than the cap, and incomplete.
			_, err = c.Write([]byte("l\n" + key + "\n0" + strings.Repeat(" ", 60)))
			require.NoError(t, err)
			time.Sleep(200 * time.Millisecond)
			_, err = c.Write([]byte("\n"))
			require.NoError(t, err)
			require.NoError(t, c.SetReadDeadline(time.Now().Add(3*time.Second)))
			buf := make([]byte, 128)
			n, rerr := c.Read(buf)
			if rerr != nil || !strings.HasPrefix(string(buf[:n]), "ok ") {
				stopped := stop()
				t.Fatalf("no reply to a 314-byte request with InboundCap 300: read %q, %v; Server.Close returned within 3 s: %v",
					buf[:n], rerr, stopped)
			}
			require.True(t, stop(), "Server.Close hung")
		})
	}
}
