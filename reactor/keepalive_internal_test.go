//go:build linux

package reactor

import (
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestSetKeepAlive reads back the socket options setKeepAlive sets on an
// accepted connection: on, probes every keepAliveInterval, keepAliveCount
// of them, and an idle time spread over [idle, idle+spread) so that
// connections opened together do not probe together.
func TestSetKeepAlive(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer func() { _ = ln.Close() }()
	idles := map[int]bool{}
	for range 20 {
		cc, err := net.Dial("tcp", ln.Addr().String())
		require.NoError(t, err)
		sc, err := ln.Accept()
		require.NoError(t, err)
		setKeepAlive(sc)
		rc, err := sc.(*net.TCPConn).SyscallConn()
		require.NoError(t, err)
		var on, idle, intvl, cnt int
		var gerr error
		require.NoError(t, rc.Control(func(fd uintptr) {
			get := func(level, opt int) int {
				v, err := unix.GetsockoptInt(int(fd), level, opt)
				if err != nil {
					gerr = err
				}
				return v
			}
			on = get(unix.SOL_SOCKET, unix.SO_KEEPALIVE)
			idle = get(unix.IPPROTO_TCP, unix.TCP_KEEPIDLE)
			intvl = get(unix.IPPROTO_TCP, unix.TCP_KEEPINTVL)
			cnt = get(unix.IPPROTO_TCP, unix.TCP_KEEPCNT)
		}))
		require.NoError(t, gerr)
		require.Equal(t, 1, on)
		require.Equal(t, int(keepAliveInterval/time.Second), intvl)
		require.Equal(t, keepAliveCount, cnt)
		require.GreaterOrEqual(t, idle, int(keepAliveIdle/time.Second))
		require.Less(t, idle, int((keepAliveIdle+keepAliveSpread)/time.Second)+1)
		idles[idle] = true
		_ = cc.Close()
		_ = sc.Close()
	}
	// 20 draws over a 30 s spread (whole seconds): all equal means no spread.
	require.Greater(t, len(idles), 1, "idle times not spread: %v", idles)
}
