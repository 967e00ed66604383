//go:build linux

package reactor_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// serverSideFD finds, among this process's descriptors, the server's end of
// the client connection c (its peer is c's local address).
func serverSideFD(t *testing.T, c net.Conn) int {
	t.Helper()
	want := c.LocalAddr().(*net.TCPAddr)
	ents, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		sa, err := unix.Getpeername(fd)
		if err != nil {
			continue
		}
		if in4, ok := sa.(*unix.SockaddrInet4); ok && in4.Port == want.Port && net.IP(in4.Addr[:]).Equal(want.IP) {
			return fd
		}
	}
	t.Fatalf("server side of %v not found", want)
	return -1
}

// dialSmallBuffers dials srv (which then has want connections) with 4 KiB
// kernel buffers on both sides of the connection, so that a few large
// replies fill them (instead of megabytes).
func dialSmallBuffers(t *testing.T, srv *reactortest.Server, want int64) net.Conn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) {
			_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
	}}
	w, err := d.Dial("tcp", srv.Addr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = w.Close() })
	waitConnections(t, srv, want)
	require.NoError(t, unix.SetsockoptInt(serverSideFD(t, w), unix.SOL_SOCKET, unix.SO_SNDBUF, 4096))
	return w
}

// TestDrainWaitsForBufferedGrant: Shutdown must not close a
// connection while the grant of a request it was waiting for is still in
// the server's outbound buffer. The client is behind on reading a large
// pipelined stats reply (well within the write timeout), so the grant is
// queued behind it in gnet's outbound buffer. The drain counts the grant as
// sent as soon as it is handed to gnet.Conn.Write (session.sent in
// gconn.flush) and closes the connection; gnet's last flush attempt at close
// gets EAGAIN and the grant is dropped. The client never learns it was
// granted (with auto-release off the lock then stays held for its lease).
func TestDrainWaitsForBufferedGrant(t *testing.T) {
	srv := reactortest.Start(t, func(c *reactortest.Config) {
		c.Server.Loops = 1
		c.Server.WriteTimeout = 30 * time.Second
	})
	h := srv.Dial(t)
	holdKeys(t, h, 150) // stats replies of ~20 KB
	tok := lock(t, h, "dk")

	w := dialSmallBuffers(t, srv, 2)

	// Three stats replies (~60 KB, more than the socket buffers hold), then
	// a lock request that waits. The client reads nothing yet.
	const nStats = 3
	_, err := w.Write([]byte(strings.Repeat(req("stats", "_", "_"), nStats) + req("l", "dk", "30")))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return srv.Metrics().Parked == 1 }, 5*time.Second, time.Millisecond,
		"the lock request never parked")

	// The drain begins while the request is parked; then the holder
	// releases (allowed while draining): the grant is queued behind the
	// unread replies.
	shut := make(chan error, 1)
	var shutTook time.Duration
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		start := time.Now()
		err := srv.Shutdown(ctx)
		shutTook = time.Since(start)
		shut <- err
	}()
	require.Eventually(t, srv.Draining, 5*time.Second, time.Millisecond)
	require.Equal(t, rOK, h.Do("r", "dk", tok))
	// The client catches up a little later and reads everything.
	time.Sleep(300 * time.Millisecond)
	require.NoError(t, w.SetReadDeadline(time.Now().Add(15*time.Second)))
	got, err := io.ReadAll(w)
	require.NoError(t, err)
	require.NoError(t, <-shut)

	lines := strings.Split(strings.TrimSuffix(string(got), "\n"), "\n")
	stats := 0
	for _, l := range lines {
		if body, ok := strings.CutPrefix(l, rOK+" "); ok && json.Valid([]byte(body)) {
			stats++
		}
	}
	last := lines[len(lines)-1]
	t.Logf("Shutdown returned nil after %v; the client then received %d bytes, %d complete stats replies of %d; last line %.60q",
		shutTook, len(got), stats, nStats, last)
	require.True(t, grantRe.MatchString(last),
		"Shutdown returned nil, but the grant of the request it waited for never reached the client")
	require.Equal(t, nStats, stats)
}
