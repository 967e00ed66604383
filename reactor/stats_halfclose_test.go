package reactor_test

import (
	"bufio"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/reactor"
	"github.com/lockreactor/dflockd/reactor/reactortest"
)

type closeWriter interface{ CloseWrite() error }

// Stats (6.4 MB, a share of the budget) pipelined with pings, then a
// half-close (printf ... | nc -N), the client reading late and slowly: the
// whole stats reply, every ping's ok, then EOF; no close counted against
// the client; the budget given back.
func TestStatsPipelinedThenHalfClose(t *testing.T) {
	forTransports(t, func(t *testing.T, tr transport) {
		srv := tr.start(t, func(c *reactortest.Config) { c.Core.MaxLocks = 4096 })
		holder := srv.Connect(t)
		holdNamed(t, holder, 4096, escapedKey)
		c := dialSlowReader(t, tr, srv)
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		const pings = 50
		var b strings.Builder
		b.WriteString(req("stats", "_", "_"))
		for range pings {
			b.WriteString(req("ping", "_", "_"))
		}
		_, err := c.Write([]byte(b.String()))
		require.NoError(t, err)
		require.NoError(t, c.(closeWriter).CloseWrite())
		time.Sleep(300 * time.Millisecond)
		br := bufio.NewReaderSize(c, 1<<20)
		l, err := br.ReadString('\n')
		require.NoError(t, err)
		require.True(t, strings.HasPrefix(l, "ok {"), "%.40q", l)
		for i := range pings {
			l, err := br.ReadString('\n')
			require.NoError(t, err, "ping %d; closes %v", i, srv.Metrics().Closes)
			require.Equal(t, rOK+"\n", l)
		}
		_, err = br.ReadString('\n')
		require.ErrorIs(t, err, io.EOF)
		require.Equal(t, [reactor.NumCloseReasons]uint64{}, srv.Metrics().Closes)
		// The budget is back: a second client gets a full reply at once.
		c2 := srv.Connect(t)
		l2 := c2.Do("stats", "_", "_")
		require.True(t, strings.HasPrefix(l2, "ok {"), "%.40q", l2)
	})
}
