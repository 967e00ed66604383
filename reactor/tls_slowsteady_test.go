//go:build linux

package reactor_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// TestTLSSlowSteadyReaderWriteTimeout: README: --write-timeout is
// "seconds replies may make no progress (the socket's kernel buffer full,
// the client not reading) before the client is dropped". A client reads a
// ~62 KB stats reply steadily at ~12 KB/s (1 KiB every 83 ms: progress
// all the time) with --write-timeout 1; 4 KiB kernel buffers, as on a slow
// path. The plain port serves it (its stall check sees drain progress every
// 50 ms). The TLS port cut it mid-reply (until progressConn): each 16 KiB chunk must be taken
// by the kernel within one write timeout (writeOut: one SetWriteDeadline
// per tlsWriteChunk), which bounds throughput (16 KiB per write timeout),
// not a stall.
func TestTLSSlowSteadyReaderWriteTimeout(t *testing.T) {
	forTransports(t, func(t *testing.T, tr transport) {
		srv := tr.start(t, func(c *reactortest.Config) {
			c.Server.WriteTimeout = time.Second
			c.Server.ReadTimeout = time.Minute
		})
		holder := srv.Connect(t)
		bigKeysForStats(t, holder, 200)
		c := dialTinyBuffers(t, tr, srv.Addr, srv.ClientTLS, srv.Connections, 2)
		_, err := c.Write([]byte(req("stats", "_", "_")))
		require.NoError(t, err)
		line, rest, took, err := slowReadLine(c, 1<<10, 12<<10, 10*time.Second)
		t.Logf("%s: stats reply: %d bytes in %v, err %v", tr.name, len(line), took, err)
		require.NoError(t, err, "a client reading its reply steadily at ~12 KB/s was cut off after %d bytes (%v); write timeout 1s", len(line), took)
		require.True(t, strings.HasPrefix(line, rOK+" {"))
		require.Greater(t, took, 2*time.Second, "the reply was not slow to read: the test proves nothing")
		require.Empty(t, rest)
	})
}
