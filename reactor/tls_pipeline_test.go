//go:build linux

package reactor_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// dialTinyBuffers dials srv the way tr serves it with 4 KiB kernel buffers
// on both ends of the connection (client SO_RCVBUF, server SO_SNDBUF), as
// on a path that holds little in flight: replies of a few tens of KiB fill
// them.
func dialTinyBuffers(t *testing.T, tr transport, srvAddr string, clientTLS *tls.Config, conns func() int64, want int64) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	nc, err := d.Dial("tcp", srvAddr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = nc.Close() })
	require.Eventually(t, func() bool { return conns() == want }, 5*time.Second, 5*time.Millisecond)
	require.NoError(t, syscall.SetsockoptInt(serverSideFD(t, nc), syscall.SOL_SOCKET, syscall.SO_SNDBUF, 4096))
	if !tr.tls {
		return nc
	}
	tc := tls.Client(nc, clientTLS)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, tc.HandshakeContext(ctx))
	return tc
}

// TestTLSPipelineReaderUnderCap: a client pipelines 20,000 pings
// (200 KB) and reads every reply. All its replies together are 60,000
// bytes: less than the 64 KiB that README says must be unsent before
// requests wait unread and the inbound cap applies ("once 64 KiB of its
// replies are unsent, requests wait unread, and 64 KiB of those close the
// connection"). It must get every reply, on both ports.
//
// "pause": the reader starts 150 ms after the writer (a write-then-read
// batch client, a GC pause, a busy consumer). "steady": it reads 1 KiB
// every 10 ms from the start (~100 KB/s, never a 50 ms gap).
//
// The plain port serves both. The TLS port closed the connection after
// 99c8c78 (fixed in the next round): the reader goroutine treated a 16 KiB chunk write that has not finished
// within stallCheck (50 ms) as "replies unsent" (tls.go read: writingSince),
// however few bytes are unsent and however steadily the client drains them.
func TestTLSPipelineReaderUnderCap(t *testing.T) {
	const n = 20_000
	for _, mode := range []string{"pause", "steady"} {
		t.Run(mode, func(t *testing.T) {
			forTransports(t, func(t *testing.T, tr transport) {
				srv := tr.start(t)
				c := dialTinyBuffers(t, tr, srv.Addr, srv.ClientTLS, srv.Connections, 1)
				payload := bytes.Repeat([]byte(req("ping", "_", "_")), n)
				werr := make(chan error, 1)
				go func() {
					_ = c.SetWriteDeadline(time.Now().Add(15 * time.Second))
					_, err := c.Write(payload)
					werr <- err
				}()
				chunk := 64 << 10
				if mode == "pause" {
					time.Sleep(150 * time.Millisecond)
				} else {
					chunk = 1 << 10
				}
				require.NoError(t, c.SetReadDeadline(time.Now().Add(15*time.Second)))
				buf := make([]byte, chunk)
				got := 0
				start := time.Now()
				var rerr error
				for got < 3*n {
					k, err := c.Read(buf)
					got += k
					if err != nil {
						rerr = err
						break
					}
					if mode == "steady" {
						time.Sleep(10 * time.Millisecond)
					}
				}
				t.Logf("%s: %d of %d reply bytes in %v (err %v)", tr.name, got, 3*n, time.Since(start), rerr)
				require.Equal(t, 3*n, got, "a client reading every reply (60,000 bytes of replies in all) was closed: %v", rerr)
				require.NoError(t, <-werr)
			})
		})
	}
}
