package main

import (
	"bufio"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestSidePortIdleKeepAliveCannotStarveProbes: the side port serves at
// most httpMaxConns (64) connections. 64 clients that each made one
// /healthz request (open, no token) and keep the connection used to make
// /healthz and /readyz unreachable (a failed liveness probe restarts the
// lock server); now an idle connection is closed to make room.
func TestSidePortIdleKeepAliveCannotStarveProbes(t *testing.T) {
	t.Parallel()
	_, base := startHTTPServer(t)
	addr := strings.TrimPrefix(base, "http://")
	idleKeepAlives(t, addr, httpMaxConns)
	c := http.Client{Timeout: 3 * time.Second}
	start := time.Now()
	resp, err := c.Get(base + "/healthz")
	if err == nil {
		_ = resp.Body.Close()
	}
	require.NoError(t, err, "/healthz unreachable after %v while %d idle keep-alive connections are open",
		time.Since(start).Round(time.Millisecond), httpMaxConns)
}

// keepAlive is a side-port client that made one request and keeps its
// connection open (idle on the server).
type keepAlive struct {
	nc net.Conn
	br *bufio.Reader
}

// idleKeepAlives opens n keep-alive clients to addr, each after one
// GET /healthz answered 200.
func idleKeepAlives(t *testing.T, addr string, n int) []keepAlive {
	t.Helper()
	var cls []keepAlive
	for i := range n {
		nc, err := net.DialTimeout("tcp", addr, 2*time.Second)
		require.NoError(t, err)
		t.Cleanup(func() { _ = nc.Close() })
		require.NoError(t, nc.SetDeadline(time.Now().Add(5*time.Second)))
		br := bufio.NewReader(nc)
		_, err = nc.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"))
		require.NoError(t, err)
		resp, err := http.ReadResponse(br, nil)
		require.NoError(t, err, "keep-alive client %d", i)
		_ = resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		cls = append(cls, keepAlive{nc, br})
	}
	return cls
}

// TestSidePortNoEvictionWithoutNewcomer: exactly httpMaxConns
// keep-alive clients and no other connection. Nobody needs room, so no
// idle connection is closed (Accept used to make room before a newcomer
// arrived).
func TestSidePortNoEvictionWithoutNewcomer(t *testing.T) {
	_, base := startHTTPServer(t)
	addr := strings.TrimPrefix(base, "http://")
	cls := idleKeepAlives(t, addr, httpMaxConns)
	time.Sleep(300 * time.Millisecond)
	closed := 0
	for _, c := range cls {
		_ = c.nc.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		if _, err := c.br.ReadByte(); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			closed++
		}
	}
	require.Zero(t, closed, "%d of %d idle keep-alive connections closed by the server with no new connection waiting", closed, httpMaxConns)
}
