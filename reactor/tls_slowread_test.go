//go:build linux

package reactor_test

import (
	"bufio"
	"crypto/tls"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// Review of the TLS write path: a client that reads its replies, only
// slowly (a modest link, a busy consumer), against one large reply (stats
// with many keys). On the plain port the write timeout is a stall timer
// ("seconds a client may leave replies unread"): every drained byte is
// progress. On the TLS port one reply batch is one blocking tls.Conn.Write
// under one absolute deadline of WriteTimeout.

// dialSmallRcvBuf dials srv (TLS when tr says so) with a small
// receive buffer, so that the kernel holds little of a reply for it.
func dialSmallRcvBuf(t *testing.T, tr transport, srv *reactortest.Server) net.Conn {
	t.Helper()
	return dialTuned(t, tr, srv, func(fd int) error {
		return syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_RCVBUF, 16<<10)
	})
}

// slowReadLine reads one '\n'-terminated line from c at about rate
// bytes per second (reads of at most chunk bytes, paced so that the total
// never runs ahead of rate), and returns it with how long it took, and
// whatever was read past it. It stops at the first error.
func slowReadLine(c net.Conn, chunk, rate int, limit time.Duration) (line, rest string, took time.Duration, err error) {
	start := time.Now()
	_ = c.SetReadDeadline(start.Add(limit))
	var sb strings.Builder
	buf := make([]byte, chunk)
	for {
		n, rerr := c.Read(buf)
		sb.Write(buf[:n])
		if i := strings.IndexByte(sb.String(), '\n'); i >= 0 {
			return sb.String()[:i], sb.String()[i+1:], time.Since(start), nil
		}
		if rerr != nil {
			return sb.String(), "", time.Since(start), rerr
		}
		due := start.Add(time.Duration(int64(time.Second) * int64(sb.Len()) / int64(rate)))
		time.Sleep(time.Until(due))
	}
}

const (
	statsKeys     = 8000       // ~2.5 MB of stats JSON
	slowReadChunk = 16 << 10   // bytes per read
	slowReadRate  = 1000 << 10 // bytes per second: ~2.4 s for the reply
)

// TestTLSSlowReaderLargeReply: with a 1 s write timeout, a client
// that reads a ~2.5 MB stats reply steadily at ~1 MB/s (the reply takes
// ~2.4 s; 16 KiB drain every 16 ms) is served on the plain port, where the
// write timeout is a stall timer ("seconds a client may leave replies
// unread"); on the TLS port the server cut the connection (until fixed) 1 s into the
// reply, mid-record, because the whole reply batch must be handed to the
// kernel within one WriteTimeout deadline (tlsConn.process: one
// SetWriteDeadline, one nc.Write(t.out)). The server's socket send buffer
// is set to 64 KiB, as on a path whose kernel buffers hold far less than
// the reply (on loopback they autotune to ~4 MB; the same happens there
// with a reply of ~10 MB, e.g. stats of 30,000 keys).
func TestTLSSlowReaderLargeReply(t *testing.T) {
	forTransports(t, func(t *testing.T, tr transport) {
		srv := tr.start(t, func(c *reactortest.Config) {
			c.Core.MaxLocks = statsKeys + 100
			c.Server.WriteTimeout = time.Second
			c.Server.ReadTimeout = time.Minute
		})
		holder := srv.Connect(t)
		bigKeysForStats(t, holder, statsKeys)

		c := dialSmallRcvBuf(t, tr, srv)
		waitConnections(t, srv, 2)
		raw := c
		if tc, ok := c.(*tls.Conn); ok {
			raw = tc.NetConn()
		}
		require.NoError(t, unix.SetsockoptInt(serverSideFD(t, raw), unix.SOL_SOCKET, unix.SO_SNDBUF, 64<<10))

		_, err := c.Write([]byte(req("stats", "_", "_")))
		require.NoError(t, err)
		line, rest, took, err := slowReadLine(c, slowReadChunk, slowReadRate, 15*time.Second)
		t.Logf("stats reply: %d bytes in %v, err %v", len(line), took, err)
		require.NoError(t, err, "a client reading its reply steadily at ~1 MB/s was cut off after %d bytes (%v); the write timeout is %v",
			len(line), took, time.Second)
		require.True(t, strings.HasPrefix(line, rOK+" {"), "stats reply")
		require.Greater(t, took, 1500*time.Millisecond, "the reply was not slow to read: the test proves nothing")
		require.Empty(t, rest, "unsolicited bytes after the stats reply")

		_, err = c.Write([]byte(req("ping", "_", "_")))
		require.NoError(t, err)
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		pong, err := bufio.NewReader(c).ReadString('\n')
		require.NoError(t, err)
		require.Equal(t, rOK+"\n", pong)
	})
}
