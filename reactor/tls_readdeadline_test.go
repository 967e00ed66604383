//go:build linux

package reactor_test

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// TestTLSReadTimeoutAfterLongReply: README: --read-timeout is
// "seconds for each request line while not blocked"; replies drained count
// as progress. A client reads a ~40 KB stats reply slowly (~15 KB/s,
// ~2.6 s; 4 KiB kernel buffers, as on a path that holds little in flight) and then goes silent with the socket open. It
// must be timed out at most --read-timeout after it read the last byte
// (the server's last write, the last progress, came before that; the plain
// port: ~1.9 s after, TLS before 99c8c78 ~1.4 s, the kernel buffers
// holding the last ~0.6 s of it; the test allows rt - 200 ms).
//
// The TLS port waited (until fixed) the read timeout plus the time the reply took to
// write: writeOut moves lastProgress to the end of the write, but process
// then calls setReadDeadline(now) with the now taken before the write, so
// the socket deadline is time.Now() + (lastProgress+rt - now) = end of
// write + rt + write duration. (A batch of at least OutboundHighWater is
// followed by a second pass, whose fresh now hides this; a reply under
// 64 KiB is not.)
func TestTLSReadTimeoutAfterLongReply(t *testing.T) {
	const rt = 2500 * time.Millisecond
	forTransports(t, func(t *testing.T, tr transport) {
		srv := tr.start(t, func(c *reactortest.Config) {
			c.Server.ReadTimeout = rt
			c.Server.WriteTimeout = 5 * time.Second
		})
		holder := srv.Connect(t)
		bigKeysForStats(t, holder, 130)

		c := dialTinyBuffers(t, tr, srv.Addr, srv.ClientTLS, srv.Connections, 2)

		// A ping first: the read deadline the reader waits with is then
		// fresh (rt from now), and outlasts the slow write below.
		_, err := c.Write([]byte(req("ping", "_", "_")))
		require.NoError(t, err)
		line, rest, _, err := slowReadLine(c, 64, 1<<20, 5*time.Second)
		require.NoError(t, err)
		require.Equal(t, rOK, line)
		require.Empty(t, rest)

		_, err = c.Write([]byte(req("stats", "_", "_")))
		require.NoError(t, err)
		line, rest, took, err := slowReadLine(c, 1<<10, 15<<10, 10*time.Second)
		require.NoError(t, err)
		require.True(t, strings.HasPrefix(line, rOK+" {"))
		require.Less(t, len(line), 64<<10)
		require.Empty(t, rest)
		read := time.Now()

		// Silent from now on: the next thing is the read timeout's error.
		_ = c.SetReadDeadline(time.Now().Add(15 * time.Second))
		b, err := io.ReadAll(c)
		after := time.Since(read)
		t.Logf("%s: stats of %d bytes read in %v; read timeout (%v) fired %v after the reply was read (%q, %v)",
			tr.name, len(line), took, rt, after, b, err)
		require.Equal(t, rError+"\n", string(b))
		require.Less(t, after, rt-200*time.Millisecond,
			"an idle client was timed out %v after its reply was delivered; --read-timeout is %v", after, rt)
	})
}
