//go:build linux

package reactor

import (
	"testing"

	"github.com/panjf2000/gnet/v2"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/lockreactor/dflockd/codec"
	"github.com/lockreactor/dflockd/lockcore"
)

// fdConn is the part of gnet.Conn that direct delivery uses, over a plain
// descriptor.
type fdConn struct {
	gnet.Conn
	fd int
}

func (c fdConn) Fd() int { return c.fd }

// directFixture is a parked, armed, resolved gconn whose socket is one end
// of a socket pair; peer is the other end.
func directFixture(t *testing.T) (g *gconn, srv *Server, peer int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK, 0)
	require.NoError(t, err)
	t.Cleanup(func() { _ = unix.Close(fds[0]); _ = unix.Close(fds[1]) })
	srv = &Server{table: lockcore.New(lockcore.Config{}), stopCh: make(chan struct{})}
	g = &gconn{c: fdConn{fd: fds[0]}}
	g.srv = srv
	g.parked = true
	g.parkedCmd = codec.CmdLock
	srv.parked.Add(1)
	g.result = lockcore.Result{Code: codec.CodeOK, Token: codec.Token{Fence: 7, Salt: 9}, Lease: 33}
	g.resolved.Store(true)
	g.direct.Store(directArmed)
	return g, srv, fds[1]
}

// TestDirectWrite: an armed connection gets exactly its grant line, and
// the session is answered: unparked, counted out of parked.
func TestDirectWrite(t *testing.T) {
	g, srv, peer := directFixture(t)
	require.True(t, g.tryDirect())
	want := appendResult(nil, g.result)
	buf := make([]byte, 256)
	n, err := unix.Read(peer, buf)
	require.NoError(t, err)
	require.Equal(t, string(want), string(buf[:n]))
	require.False(t, g.parked)
	require.False(t, g.resolved.Load())
	require.Zero(t, srv.parked.Load())
	require.EqualValues(t, 1, srv.directs.Load())
	require.Positive(t, g.lastProgress, "the read timeout runs again")
	require.Equal(t, directOff, g.direct.Load())
	require.False(t, g.tryDirect(), "not armed any more")
}

// TestDirectWriteFull: when the socket takes nothing (its buffer is full),
// the completer leaves the result to the loop: still parked and resolved.
func TestDirectWriteFull(t *testing.T) {
	g, srv, _ := directFixture(t)
	fill := make([]byte, 4096)
	for {
		if _, err := unix.Write(g.c.Fd(), fill); err != nil {
			require.ErrorIs(t, err, unix.EAGAIN)
			break
		}
	}
	for { // then byte by byte, so that not even a partial line fits
		if _, err := unix.Write(g.c.Fd(), fill[:1]); err != nil {
			break
		}
	}
	require.False(t, g.tryDirect())
	require.True(t, g.parked)
	require.True(t, g.resolved.Load())
	require.EqualValues(t, 1, srv.parked.Load())
	require.Zero(t, srv.directs.Load())
	require.Equal(t, directOff, g.direct.Load(), "the loop owns it again")
}

// TestDirectTimerResult: a result the lock table's timer delivered is not
// written by it (even on an armed connection).
func TestDirectTimerResult(t *testing.T) {
	g, _, _ := directFixture(t)
	g.result.Timer = true
	require.False(t, g.tryDirect())
	require.Equal(t, directOff, g.direct.Load(), "the loop owns it again")
	require.True(t, g.parked)
	require.True(t, g.resolved.Load())
}

// TestDirectStopping: once the server stops, nothing is written directly.
func TestDirectStopping(t *testing.T) {
	g, srv, _ := directFixture(t)
	close(srv.stopCh)
	require.False(t, g.tryDirect())
	require.True(t, g.parked)
	require.Equal(t, directOff, g.direct.Load())
}

// TestDirectWritePartial: when the socket takes only part of the line, the
// request counts as answered (the read timeout runs again) but still holds
// a drain back until the loop has written the rest: the rest waits in the
// session's output, owed, and the completer asks for the loop.
func TestDirectWritePartial(t *testing.T) {
	g, srv, peer := directFixture(t)
	want := string(appendResult(nil, g.result))
	const k = 5
	short := func(fd int, p []byte) (int, error) { return unix.Write(fd, p[:k]) }
	g.direct.Store(directBusy) // as tryDirect leaves it for the write
	require.False(t, g.deliverDirect(short), "the loop must write the rest")

	buf := make([]byte, 256)
	n, err := unix.Read(peer, buf)
	require.NoError(t, err)
	require.Equal(t, want[:k], string(buf[:n]))
	require.Equal(t, want[k:], string(g.out), "the rest, for the loop")
	require.False(t, g.parked)
	require.False(t, g.resolved.Load(), "answered: the loop must not write it again")
	require.Positive(t, g.lastProgress)
	require.EqualValues(t, 1, srv.parked.Load(), "still holds a drain back")
	require.Zero(t, srv.directs.Load())

	// What the loop does next: write the output, then tell the session.
	_, err = unix.Write(g.c.Fd(), g.out)
	require.NoError(t, err)
	g.out = g.out[:0]
	g.sent()
	require.Zero(t, srv.parked.Load())
	n, err = unix.Read(peer, buf)
	require.NoError(t, err)
	require.Equal(t, want[k:], string(buf[:n]), "the line arrives whole, once")
}
