//go:build linux

// dflockd patch: tests of ReadEOFHandler (see PATCHES.md).

package gnet

import (
	"io"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// halfCloser echoes what it reads, but only once the peer half-closes:
// then it writes everything it buffered (more than the socket takes at
// once, so part of it waits in the outbound buffer) and closes when asked.
type halfCloser struct {
	BuiltinEventEngine
	eofs    atomic.Int32
	traffic atomic.Int32
	reply   int // bytes written back at EOF
	closeAt chan Conn
}

func (h *halfCloser) OnTraffic(Conn) Action {
	h.traffic.Add(1)
	return None // leave the input buffered
}

func (h *halfCloser) OnReadEOF(c Conn) Action {
	h.eofs.Add(1)
	in, _ := c.Next(-1)
	out := make([]byte, 0, h.reply)
	for len(out) < h.reply {
		out = append(out, in...)
	}
	_, _ = c.Write(out[:h.reply])
	h.closeAt <- c
	return None
}

func TestReadEOFServesHalfClosedConn(t *testing.T) {
	h := &halfCloser{reply: 8 << 20, closeAt: make(chan Conn, 1)}
	cli, err := NewClient(h, WithNumEventLoop(1))
	require.NoError(t, err)
	require.NoError(t, cli.Start())
	t.Cleanup(func() { _ = cli.Stop() })

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	peer, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer peer.Close()
	srvSide, err := ln.Accept()
	require.NoError(t, err)
	_, err = cli.Enroll(srvSide)
	require.NoError(t, err)

	_, err = peer.Write([]byte("0123456789abcdef"))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return h.traffic.Load() > 0 }, 5*time.Second, time.Millisecond)
	require.NoError(t, peer.(*net.TCPConn).CloseWrite())

	var c Conn
	select {
	case c = <-h.closeAt:
	case <-time.After(5 * time.Second):
		t.Fatal("OnReadEOF was not called")
	}
	// 8 MiB do not fit the socket: the rest is written as the peer reads.
	// Reading slowly first: the loop must not spin on the EOF meanwhile
	// (a level-triggered EPOLLIN on a half-closed socket fires for ever).
	cpu0 := cpuTime(t)
	time.Sleep(300 * time.Millisecond)
	require.Less(t, cpuTime(t)-cpu0, 150*time.Millisecond, "the loop spun while the connection sat half-closed")
	got, err := io.ReadAll(io.LimitReader(peer, int64(h.reply)))
	require.NoError(t, err)
	require.Len(t, got, h.reply, "every byte written after the half-close arrives")
	require.Equal(t, "0123456789abcdef", string(got[:16]))
	require.Equal(t, int32(1), h.eofs.Load(), "OnReadEOF once")
	require.Equal(t, int32(1), h.traffic.Load(), "no spurious reads after the EOF")

	// The connection stays open until the handler closes it.
	_ = peer.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	_, err = peer.Read(make([]byte, 1))
	require.ErrorIs(t, err, os.ErrDeadlineExceeded)
	require.NoError(t, c.CloseWithCallback(nil))
	_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = peer.Read(make([]byte, 1))
	require.ErrorIs(t, err, io.EOF)
}

func cpuTime(t *testing.T) time.Duration {
	var ru syscall.Rusage
	require.NoError(t, syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Exited is open while the loop runs and closed once it has returned.
func TestExitedClosesWhenLoopEnds(t *testing.T) {
	cli, _ := startClient(t, 1)
	el := cli.eng.eventLoops.next(nil)
	select {
	case <-el.Exited():
		t.Fatal("Exited closed while the loop runs")
	default:
	}
	require.NoError(t, cli.Stop())
	select {
	case <-el.Exited():
	case <-time.After(5 * time.Second):
		t.Fatal("Exited still open after Stop")
	}
}
