package reactor_test

import (
	"bufio"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// A connection holding a share of the large-reply budget is not decoded,
// and gnet empties its buffer without telling the server: the share came
// back only at the next stall check (50 ms). A client that sent stats,
// read the whole reply and sent its next request waited 28-41 ms for it
// (median). The share now comes back as soon as serve sees gnet's buffer
// empty.
func TestStatsRequestAfterReplyNotHeld(t *testing.T) {
	tr := transport{name: "tcp"}
	srv := tr.start(t, func(c *reactortest.Config) { c.Core.MaxLocks = 4096 })
	holder := srv.Connect(t)
	// 6.4 MB of stats: more than the kernel's socket buffers take at
	// once (tcp_wmem max 4 MB), so the tail waits in gnet's buffer.
	holdNamed(t, holder, 4096, escapedKey)

	c := dialSlowReader(t, tr, srv) // a 64 KiB receive buffer: the reply does not fit the socket at once
	br := bufio.NewReaderSize(c, 1<<20)
	do := func(cmd string) (string, time.Duration) {
		start := time.Now()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		_, err := c.Write([]byte(req(cmd, "_", "_")))
		require.NoError(t, err)
		if cmd == "stats" {
			// The client is busy for a moment (or the network is slow):
			// part of the reply waits in gnet's buffer. Then it reads it
			// all as fast as it can.
			time.Sleep(10 * time.Millisecond)
		}
		l, err := br.ReadString('\n')
		require.NoError(t, err)
		return l, time.Since(start)
	}
	var plain, afterStats []time.Duration
	for range 20 {
		_, d := do("ping")
		plain = append(plain, d)
	}
	for range 10 {
		l, _ := do("stats")
		require.True(t, strings.HasPrefix(l, "ok {"), "%.40q", l)
		require.Greater(t, len(l), 64<<10)
		l, d := do("ping")
		require.Equal(t, rOK+"\n", l)
		afterStats = append(afterStats, d)
	}
	slices.Sort(plain)
	slices.Sort(afterStats)
	t.Logf("ping: median %v max %v; ping right after a stats reply was read: median %v max %v",
		plain[len(plain)/2], plain[len(plain)-1], afterStats[len(afterStats)/2], afterStats[len(afterStats)-1])
	t.Logf("all: %v", afterStats)
	require.Less(t, afterStats[len(afterStats)/2], plain[len(plain)/2]+10*time.Millisecond,
		"a request sent after the client read the whole stats reply waits for the stall check (50 ms) to give the share back")
}

// Pipelined stats and ping are answered in order. (The ping's reply can
// come up to a stall check, 50 ms, after the stats reply has left gnet's
// buffer: gnet reports no drained buffer. Not asserted.)
func TestStatsPipelinedOrder(t *testing.T) {
	tr := transport{name: "tcp"}
	srv := tr.start(t, func(c *reactortest.Config) { c.Core.MaxLocks = 4096 })
	holder := srv.Connect(t)
	holdNamed(t, holder, 4096, escapedKey) // 6.4 MB of stats
	c := dialSlowReader(t, tr, srv)
	br := bufio.NewReaderSize(c, 1<<20)
	var gaps []time.Duration
	for range 10 {
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		_, err := c.Write([]byte(req("stats", "_", "_") + req("ping", "_", "_") + req("stats", "_", "_") + req("ping", "_", "_")))
		require.NoError(t, err)
		for range 2 {
			l, err := br.ReadString('\n')
			require.NoError(t, err)
			require.True(t, strings.HasPrefix(l, "ok {"), "%.40q", l)
			got := time.Now()
			l, err = br.ReadString('\n')
			require.NoError(t, err)
			require.Equal(t, rOK+"\n", l)
			gaps = append(gaps, time.Since(got))
		}
	}
	slices.Sort(gaps)
	t.Logf("pipelined stats+ping: gap between the stats reply and the ping's: median %v max %v", gaps[len(gaps)/2], gaps[len(gaps)-1])
}

// A client that reads the whole stats reply and then sends a batch of
// requests larger than the inbound cap (64 KiB: 8,000 pings), reading the
// replies as they come, is served. It was closed (inbound_cap) when the
// batch arrived while its share was still held (up to a stall check after
// the reply was written), counted as "not decoding" although it had read
// everything.
func TestStatsBatchAfterReplyNotClosed(t *testing.T) {
	tr := transport{name: "tcp"}
	srv := tr.start(t, func(c *reactortest.Config) { c.Core.MaxLocks = 4096 })
	holder := srv.Connect(t)
	holdNamed(t, holder, 4096, escapedKey)
	const pings = 8000
	var batch strings.Builder
	for range pings {
		batch.WriteString(req("ping", "_", "_"))
	}
	for i := range 5 {
		c := dialSlowReader(t, tr, srv)
		br := bufio.NewReaderSize(c, 1<<20)
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		_, err := c.Write([]byte(req("stats", "_", "_")))
		require.NoError(t, err)
		time.Sleep(10 * time.Millisecond)
		l, err := br.ReadString('\n')
		require.NoError(t, err)
		require.True(t, strings.HasPrefix(l, "ok {"), "%.40q", l)
		werr := make(chan error, 1)
		go func() { _, err := c.Write([]byte(batch.String())); werr <- err }()
		for j := range pings {
			l, err := br.ReadString('\n')
			require.NoError(t, err, "round %d: reply %d of %d to a client that read all its replies; closes counted: %v", i, j, pings, srv.Metrics().Closes)
			require.Equal(t, rOK+"\n", l)
		}
		require.NoError(t, <-werr)
		_ = c.Close()
	}
}
