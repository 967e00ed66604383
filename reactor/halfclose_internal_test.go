//go:build linux

package reactor

import (
	"bufio"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/lockreactor/dflockd/lockcore"
)

// hcServer starts a plain-TCP server whose accepted sockets have a
// small, fixed send buffer (inherited from the listener), as a slow or
// distant client's connection has in effect.
func hcServer(t *testing.T, cfg Config, noAutoRelease ...bool) *Server {
	t.Helper()
	tbl := lockcore.New(lockcore.Config{MaxLocks: 1024, AutoRelease: len(noAutoRelease) == 0})
	tbl.Start()
	cfg.Addr = "127.0.0.1:0"
	if cfg.ReadTimeout == 0 {
		cfg.ReadTimeout = 23 * time.Second
	}
	if cfg.Loops == 0 {
		cfg.Loops = 1
	}
	srv, err := New(cfg, tbl)
	require.NoError(t, err)
	rc, err := srv.ln.(*net.TCPListener).SyscallConn()
	require.NoError(t, err)
	require.NoError(t, rc.Control(func(fd uintptr) {
		require.NoError(t, unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, 4096))
	}))
	done := make(chan error, 1)
	go func() { done <- srv.Serve() }()
	t.Cleanup(func() {
		srv.Close()
		<-done
		tbl.Stop()
	})
	return srv
}

func hcReq(cmd, key, arg string) string { return cmd + "\n" + key + "\n" + arg + "\n" }

// hcDial dials srv with a small receive buffer.
func hcDial(t *testing.T, srv *Server) *net.TCPConn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { _ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 4096) })
	}}
	c, err := d.Dial("tcp", srv.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c.(*net.TCPConn)
}

// README ("Disconnects are noticed at once"): after a half-close, "every
// complete request sent before the half-close that does not wait is still
// served and answered (the replies before a waiting one too)". Here three
// stats replies (~17 KB each) precede a lock that has to wait, and the
// client reads late, through a small socket buffer. The server closed as
// soon as the lock parked, and gnet's close wrote only what the socket took
// then: the replies were cut mid-line. Now the connection's lock state goes
// at once and the close waits for the replies (dropAtHalfClose).
func TestHalfCloseRepliesBeforeWaitingRequestDelivered(t *testing.T) {
	srv := hcServer(t, Config{})
	hcHoldKeys(t, srv)

	c := hcDial(t, srv)
	const nStats = 3
	_, err := c.Write([]byte(strings.Repeat(hcReq("stats", "_", "_"), nStats) + hcReq("l", "held", "60")))
	require.NoError(t, err)
	require.NoError(t, c.CloseWrite())
	time.Sleep(500 * time.Millisecond) // the client reads only later (a slow reader)
	all := hcReadAll(t, c)
	var complete int
	for _, l := range strings.SplitAfter(string(all), "\n") {
		if strings.HasSuffix(l, "\n") && strings.HasPrefix(l, "ok {") {
			complete++
		}
	}
	require.Equal(t, nStats, complete,
		"replies before the waiting request: got %d of %d complete (%d bytes, last bytes %q)",
		complete, nStats, len(all), all[max(0, len(all)-40):])
}

// The same with auto-release off, where it cost a lock: the grant of a
// try-lock that did not wait (`l free 0`) was in the dropped tail, so the
// client never learned the token of a lock held for its whole lease.
func TestHalfCloseGrantBeforeWaitingRequestDelivered(t *testing.T) {
	srv := hcServer(t, Config{}, true)
	holder := hcHoldKeys(t, srv)

	c := hcDial(t, srv)
	const nStats = 3
	_, err := c.Write([]byte(strings.Repeat(hcReq("stats", "_", "_"), nStats) + hcReq("l", "free", "0") + hcReq("l", "held", "60")))
	require.NoError(t, err)
	require.NoError(t, c.CloseWrite())
	time.Sleep(500 * time.Millisecond)
	all := hcReadAll(t, c)
	granted := strings.Contains(string(all), "\nok ") && strings.HasSuffix(string(all), " 33\n")

	_, err = holder.Write([]byte(hcReq("l", "free", "0")))
	require.NoError(t, err)
	line, err := bufio.NewReader(holder).ReadString('\n')
	require.NoError(t, err)
	require.True(t, granted, "the client got %d bytes and no grant for \"free\" (another client asking for it: %q)", len(all), line)
}

func hcReadAll(t *testing.T, c net.Conn) []byte {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
	all, err := io.ReadAll(c)
	require.NoError(t, err, "the server closes after the half-close")
	return all
}

// hcHoldKeys makes stats replies ~17 KB (150 held keys) and holds
// "held"; it returns the holder's connection (nothing left to read).
func hcHoldKeys(t *testing.T, srv *Server) net.Conn {
	t.Helper()
	holder, err := net.Dial("tcp", srv.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() { _ = holder.Close() })
	var b strings.Builder
	const nKeys = 150
	for i := range nKeys {
		b.WriteString(hcReq("l", "key-with-a-reasonably-long-name-to-grow-the-stats-reply-"+strings.Repeat("x", i%7)+string(rune('a'+i%26))+string(rune('a'+i/26)), "0"))
	}
	b.WriteString(hcReq("l", "held", "0"))
	_, err = holder.Write([]byte(b.String()))
	require.NoError(t, err)
	hr := bufio.NewReader(holder)
	require.NoError(t, holder.SetReadDeadline(time.Now().Add(5*time.Second)))
	for range nKeys + 1 {
		line, err := hr.ReadString('\n')
		require.NoError(t, err)
		require.True(t, strings.HasPrefix(line, "ok "), "%q", line)
	}
	return holder
}
