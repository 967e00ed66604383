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

// TestSidePortNoEvictionWithoutNewcomer: exactly httpMaxConns
// keep-alive clients and no other connection. Nobody needs room, so no
// idle connection is closed (Accept used to make room before a newcomer
// arrived).
func TestSidePortNoEvictionWithoutNewcomer(t *testing.T) {
	_, base := startHTTPServer(t)
	addr := strings.TrimPrefix(base, "http://")
	type cl struct {
		nc net.Conn
		br *bufio.Reader
	}
	var cls []cl
	for i := range httpMaxConns {
		nc, err := net.DialTimeout("tcp", addr, 2*time.Second)
		require.NoError(t, err)
		t.Cleanup(func() { _ = nc.Close() })
		require.NoError(t, nc.SetDeadline(time.Now().Add(5*time.Second)))
		br := bufio.NewReader(nc)
		_, err = nc.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"))
		require.NoError(t, err)
		resp, err := http.ReadResponse(br, nil)
		require.NoError(t, err, "client %d", i)
		_ = resp.Body.Close()
		cls = append(cls, cl{nc, br})
	}
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
