//go:build linux

package reactor_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"net"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// TestTLSInternalWriteNoDeadline: crypto/tls also writes inside the
// reader's Read (an alert for a bad record, the answer to a KeyUpdate).
// When that write finds the socket full (a client that stopped reading),
// it must still be bounded: with no write deadline it blocked inside Read,
// the read deadline could not fire and the processor was never kicked, so
// the connection stayed until the client went. Now it is bounded by the
// read deadline plus the write timeout.
//
// The state "socket full, the processor idle (its last reply written)"
// arises when a client stops reading with replies outstanding and the last
// one fits (Linux appends to the tail segment past SO_SNDBUF), but whether
// a further 24-byte alert record then fits depends on the tail's room. To
// make it deterministic, the test fills the server's socket itself with
// non-blocking writes until EAGAIN (the bytes go to a client that never
// reads them).
//
// The control subtest (no bad record) is closed by the read timeout
// (error reply, its write times out) within ReadTimeout + WriteTimeout.
func TestTLSInternalWriteNoDeadline(t *testing.T) {
	for _, badRecord := range []bool{false, true} {
		name := "control, no bad record"
		if badRecord {
			name = "bad record"
		}
		t.Run(name, func(t *testing.T) {
			const rt, wt = time.Second, 500 * time.Millisecond
			srv := reactortest.Start(t, func(c *reactortest.Config) {
				c.SelfSignedTLS = true
				c.Server.ReadTimeout = rt
				c.Server.WriteTimeout = wt
			})
			b := newFillConn(t, srv)
			require.Equal(t, "idle", b.ping(), lastBusy)
			fillSocket(t, b.srvFD)
			require.Equal(t, "idle", processorState())
			if badRecord {
				// An application-data record that fails to decrypt: the
				// server's Read answers with an alert.
				rec := append([]byte{23, 3, 3, 0, 17}, make([]byte, 17)...)
				_, err := b.raw.Write(rec)
				require.NoError(t, err)
			}
			wait := 3 * (rt + wt)
			deadline := time.Now().Add(wait)
			for srv.Connections() != 0 && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			if srv.Connections() != 0 {
				t.Fatalf("a TLS connection whose client stopped reading is still open %v after its last request "+
					"(read timeout %v, write timeout %v); server goroutines:\n%s", wait, rt, wt, tlsGoroutines())
			}
		})
	}
}

// fillSocket writes to the (non-blocking) descriptor until the kernel
// takes no more, then once more after a pause.
func fillSocket(t *testing.T, fd int) {
	for range 2 {
		for _, size := range []int{4096, 1} {
			buf := make([]byte, size)
			for {
				_, err := unix.Write(fd, buf)
				if err == unix.EAGAIN {
					break
				}
				require.NoError(t, err)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
}

type fillConn struct {
	t     *testing.T
	raw   net.Conn
	tc    *tls.Conn
	srvFD int
}

// newFillConn dials TLS with a 4 KiB receive buffer and shrinks the
// server side's send buffer to its minimum, so that a few hundred replies
// fill both.
func newFillConn(t *testing.T, srv *reactortest.Server) *fillConn {
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { _ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 4096) })
	}}
	raw, err := d.Dial("tcp", srv.Addr)
	require.NoError(t, err)
	tc := tls.Client(raw, srv.ClientTLS)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, tc.HandshakeContext(ctx))
	f := &fillConn{t: t, raw: raw, tc: tc}
	// One round trip so the server's session ticket etc. are out of the way.
	_, err = tc.Write([]byte(req("ping", "_", "_")))
	require.NoError(t, err)
	require.NoError(t, tc.SetReadDeadline(time.Now().Add(5*time.Second)))
	line, err := bufio.NewReader(tc).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, rOK+"\n", line)
	f.srvFD = serverSideFD(t, raw)
	require.NoError(t, unix.SetsockoptInt(f.srvFD, unix.SOL_SOCKET, unix.SO_SNDBUF, 4096))
	t.Cleanup(f.close)
	return f
}

func (f *fillConn) close() { _ = f.raw.Close() }

// ping sends one ping and returns the processor's state once it has
// served it: "idle" (reply written) or "blocked" (in a socket write).
func (f *fillConn) ping() string {
	f.t.Helper()
	_ = f.tc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := f.tc.Write([]byte(req("ping", "_", "_")))
	require.NoError(f.t, err)
	time.Sleep(4 * time.Millisecond)
	for range 200 {
		switch st := processorState(); st {
		case "idle", "blocked":
			return st
		}
		time.Sleep(time.Millisecond)
	}
	return "busy"
}

// processorState reads the TLS processor goroutine's stack (one TLS
// connection at a time in this test).
func processorState() string {
	for _, g := range goroutines() {
		if !strings.Contains(g, "(*tlsConn).process") {
			continue
		}
		switch {
		case strings.Contains(g, "waitWrite") || strings.Contains(g, "[IO wait") && strings.Contains(g, ").Write("):
			return "blocked"
		case strings.Contains(g, "[chan receive"):
			return "idle"
		}
		lastBusy = g
		return "busy"
	}
	return "none"
}

var lastBusy string

func goroutines() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return strings.Split(string(buf), "\n\n")
}

func tlsGoroutines() string {
	var out []string
	for _, g := range goroutines() {
		if strings.Contains(g, "(*tlsConn)") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}
