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
	for i := range httpMaxConns {
		nc, err := net.DialTimeout("tcp", addr, 2*time.Second)
		require.NoError(t, err)
		t.Cleanup(func() { _ = nc.Close() })
		require.NoError(t, nc.SetDeadline(time.Now().Add(5*time.Second)))
		_, err = nc.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"))
		require.NoError(t, err)
		resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
		require.NoError(t, err, "keep-alive client %d", i)
		_ = resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
	}
	c := http.Client{Timeout: 3 * time.Second}
	start := time.Now()
	resp, err := c.Get(base + "/healthz")
	if err == nil {
		_ = resp.Body.Close()
	}
	require.NoError(t, err, "/healthz unreachable after %v while %d idle keep-alive connections are open",
		time.Since(start).Round(time.Millisecond), httpMaxConns)
}
