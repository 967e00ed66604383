package reactor_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// TestTLSIdleConnPinsReplyBuffer: a connection that once received a
// large reply (one stats of ~310 KB here) and then sits idle must not keep
// a buffer of that size. The event loops drop an out buffer above 4 KiB
// after writing it (gconn.flush: "do not pin a large buffer on an idle
// connection"); the TLS processor only truncated it (until fixed) (t.out = t.out[:0] in
// tlsConn.process), so every TLS connection that ever asked for stats (or
// pipelined a burst: up to the 64 KiB high-water mark plus one reply)
// keeps that much heap for its whole life.
//
// 100 idle connections, each after one stats: the heap in use must not
// grow by more than 8 MB (the replies alone are ~31 MB).
func TestTLSIdleConnPinsReplyBuffer(t *testing.T) {
	forTransports(t, func(t *testing.T, tr transport) {
		srv := tr.start(t, func(c *reactortest.Config) {
			c.Core.MaxLocks = 2000
			c.Server.Loops = 2
		})
		holder := srv.Connect(t)
		bigKeysForStats(t, holder, 1000)
		statsLen := len(holder.Do("stats", "_", "_"))
		require.Greater(t, statsLen, 250_000)

		const n = 100
		conns := make([]*reactortest.Conn, n)
		for i := range conns {
			conns[i] = srv.Connect(t)
			require.Equal(t, rOK, conns[i].Do("ping", "_", "_"))
		}
		base := heapInuse()
		for i, c := range conns {
			line := c.Do("stats", "_", "_")
			require.True(t, strings.HasPrefix(line, rOK+" {"), "stats %d", i)
		}
		// Every reply is read; let the processors finish their pass.
		for _, c := range conns {
			require.Equal(t, rOK, c.Do("ping", "_", "_"))
		}
		time.Sleep(100 * time.Millisecond)
		after := heapInuse()
		grew := int64(after) - int64(base)
		t.Logf("stats reply %d bytes; heap in use grew by %d KiB for %d idle connections (%d KiB each)",
			statsLen, grew>>10, n, grew/n>>10)
		require.Less(t, grew, int64(8<<20), fmt.Sprintf(
			"%d idle connections that each read one %d-byte stats reply pin %d KiB of heap", n, statsLen, grew>>10))
	})
}
