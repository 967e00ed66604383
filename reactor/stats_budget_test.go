package reactor_test

import (
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// escapedKey is a 256-byte key of control bytes: JSON writes each \x01 as
// \u0001, so 1,024 of them (the default --max-locks) make a stats reply
// of ~1.6 MB.
func escapedKey(i int) string {
	return strings.Repeat("\x01", 248) + fmt.Sprintf("%08d", i)
}

// dialSlowReader dials like a client across a real network that does not
// read: an Ethernet MSS and a 64 KiB receive buffer (over loopback's 64 KiB
// MSS the kernel would take megabytes of replies off the server).
func dialSlowReader(t *testing.T, tr transport, srv *reactortest.Server) net.Conn {
	t.Helper()
	return dialTuned(t, tr, srv, func(fd int) error {
		if err := syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_MAXSEG, 1460); err != nil {
			return err
		}
		return syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_RCVBUF, 64<<10)
	})
}

// One 10-byte stats request can make a reply of megabytes. Each connection
// that sent one and stopped reading kept its own copy until the write
// timeout (150 of them: 240 MB). Large stats replies now share a budget
// (32 MiB): once it is spent, stats answers error, and a reply's share
// comes back when its client has taken it or is gone.
func TestStatsLargeRepliesShareABudget(t *testing.T) {
	forTransports(t, func(t *testing.T, tr transport) {
		srv := tr.start(t, func(c *reactortest.Config) {
			c.Server.WriteTimeout = 60 * time.Second // the clients, not the timeout, end it
		})
		holder := srv.Connect(t)
		holdNamed(t, holder, 1024, escapedKey)
		reader := srv.Connect(t)
		line := reader.Do("stats", "_", "_")
		require.Greater(t, len(line), 1<<20)
		require.True(t, strings.HasPrefix(line, "ok {"))

		// 32 MiB holds about 20 such replies; allow for what the kernel
		// buffers of each.
		const most = 40
		var stuck []net.Conn
		refused := false
		for len(stuck) < most && !refused {
			c := dialSlowReader(t, tr, srv)
			stuck = append(stuck, c)
			_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			_, err := c.Write([]byte(req("stats", "_", "_")))
			require.NoError(t, err)
			refused = reader.Do("stats", "_", "_") == rError
		}
		require.True(t, refused, "%d connections each hold an unread stats reply of %d bytes, and stats is still answered", len(stuck), len(line))
		t.Logf("%s: stats refused with %d unread replies of %d bytes", tr.name, len(stuck), len(line))
		require.Equal(t, rOK, holder.Do("ping", "_", "_"), "other requests are served")

		// The stuck clients go: their shares come back.
		for _, c := range stuck {
			_ = c.Close()
		}
		require.Eventually(t, func() bool { return strings.HasPrefix(reader.Do("stats", "_", "_"), "ok {") },
			10*time.Second, 20*time.Millisecond)
	})
}

// A stats reply larger than the whole budget is still answered when no
// other large reply is unsent: stats works however many keys there are.
func TestStatsLargerThanTheBudget(t *testing.T) {
	srv := reactortest.Start(t, func(c *reactortest.Config) { c.Core.MaxLocks = 0 })
	holder := srv.Connect(t)
	holdNamed(t, holder, 22000, escapedKey)
	line := holder.Do("stats", "_", "_")
	require.Greater(t, len(line), 32<<20)
	require.True(t, strings.HasPrefix(line, "ok {"))
	require.Equal(t, rOK, holder.Do("ping", "_", "_"))
}
