//go:build linux

package reactor_test

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/lockreactor/dflockd/reactor"
	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// r19SmallConn dials srv over tr with 4 KiB kernel buffers on both
// sides (see dialSmallBuffers), completing the TLS handshake on a TLS port.
func r19SmallConn(t *testing.T, tr transport, srv *reactortest.Server, want int64) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) {
			_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
	}}
	nc, err := d.Dial("tcp", srv.Addr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = nc.Close() })
	waitConnections(t, srv, want)
	require.NoError(t, unix.SetsockoptInt(serverSideFD(t, nc), unix.SOL_SOCKET, unix.SO_SNDBUF, 4096))
	if !tr.tls {
		return nc
	}
	tc := tls.Client(nc, srv.ClientTLS)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, tc.HandshakeContext(ctx))
	return tc
}

// TestPausedReaderNotReadTimedOut: a client pipelines all its
// requests at once (every line has arrived), then pauses reading its
// replies for 1.5 s, well within --write-timeout (10 s here) but longer
// than --read-timeout (500 ms), and then reads everything.
//
// PROTOCOL.md "Connections": the read timeout is for "a request's next line
// [that] must arrive within the timeout of the previous line or reply" —
// here no line is missing; the write timeout is what covers "a client that
// does not read its replies". The server must neither answer `error` nor
// close. The TLS port keeps the connection; the plain port times it out.
func TestPausedReaderNotReadTimedOut(t *testing.T) {
	forTransports(t, func(t *testing.T, tr transport) {
		const rt = 500 * time.Millisecond
		srv := tr.start(t, func(c *reactortest.Config) {
			c.Server.Loops = 1
			c.Server.ReadTimeout = rt
			c.Server.WriteTimeout = 10 * time.Second
		})
		h := srv.Connect(t)
		holdKeys(t, h, 150) // stats replies of ~20 KB
		w := r19SmallConn(t, tr, srv, 2)

		const n = 12
		_ = w.SetWriteDeadline(time.Now().Add(5 * time.Second))
		_, err := w.Write([]byte(strings.Repeat(req("stats", "_", "_"), n) + req("ping", "_", "_")))
		require.NoError(t, err)
		// Keep the holder within its own read timeout meanwhile.
		for range 10 {
			time.Sleep(150 * time.Millisecond)
			require.Equal(t, rOK, h.Do("ping", "_", "_"))
		}

		require.NoError(t, w.SetReadDeadline(time.Now().Add(10*time.Second)))
		var got []byte
		buf := make([]byte, 32<<10)
		for !strings.HasSuffix(string(got), "\n"+rOK+"\n") {
			k, err := w.Read(buf)
			got = append(got, buf[:k]...)
			if err != nil {
				t.Logf("read ended: %v (eof %v)", err, err == io.EOF)
				break
			}
		}
		lines := strings.Split(strings.TrimSuffix(string(got), "\n"), "\n")
		last := lines[len(lines)-1]
		m := srv.Metrics()
		t.Logf("closes: read_timeout=%d write_timeout=%d inbound_cap=%d", m.Closes[reactor.CloseReadTimeout], m.Closes[reactor.CloseWriteTimeout], m.Closes[reactor.CloseInboundCap])
		t.Logf("%s: %d bytes, %d lines, last %.40q", tr.name, len(got), len(lines), last)
		require.True(t, last == rOK && len(lines) == n+1,
			"a client that paused reading for 1.5 s (read timeout %v, write timeout 10 s) with all its requests sent was cut off: %d of %d replies, last %.40q",
			rt, len(lines), n+1, last)
	})
}

// TestPausedReaderSingleReply: no pipelining: one stats request
// whose ~20 KB reply does not fit the socket buffers; the client pauses
// reading for 1.5 s (read timeout 500 ms, write timeout 10 s), then reads
// the whole reply and sends its next request at once. Its reply was still
// unsent when the read timeout ran out, so "within the timeout of the
// previous line or reply" cannot have passed.
func TestPausedReaderSingleReply(t *testing.T) {
	forTransports(t, func(t *testing.T, tr transport) {
		const rt = 500 * time.Millisecond
		srv := tr.start(t, func(c *reactortest.Config) {
			c.Server.Loops = 1
			c.Server.ReadTimeout = rt
			c.Server.WriteTimeout = 10 * time.Second
		})
		h := srv.Connect(t)
		holdKeys(t, h, 150)
		w := r19SmallConn(t, tr, srv, 2)
		_ = w.SetWriteDeadline(time.Now().Add(5 * time.Second))
		_, err := w.Write([]byte(req("stats", "_", "_")))
		require.NoError(t, err)
		for range 10 {
			time.Sleep(150 * time.Millisecond)
			require.Equal(t, rOK, h.Do("ping", "_", "_"))
		}
		require.NoError(t, w.SetReadDeadline(time.Now().Add(5*time.Second)))
		var got []byte
		buf := make([]byte, 32<<10)
		for len(got) == 0 || got[len(got)-1] != '\n' {
			k, err := w.Read(buf)
			got = append(got, buf[:k]...)
			if err != nil {
				break
			}
		}
		m := srv.Metrics()
		t.Logf("%s: %d bytes of the stats reply; closes read_timeout=%d write_timeout=%d", tr.name, len(got), m.Closes[reactor.CloseReadTimeout], m.Closes[reactor.CloseWriteTimeout])
		require.True(t, len(got) > 0 && got[len(got)-1] == '\n', "stats reply cut off after %d bytes", len(got))
		_, err = w.Write([]byte(req("ping", "_", "_")))
		require.NoError(t, err)
		k, err := w.Read(buf)
		require.NoError(t, err)
		require.Equal(t, rOK+"\n", string(buf[:k]))
	})
}
