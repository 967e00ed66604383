//go:build linux

package reactor

import (
	"bufio"
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// pollFor polls cond for up to d.
func pollFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(2 * time.Millisecond)
	}
	return cond()
}

// parkThenHalfClose has a client send three large stats requests and a
// lock that has to wait (it parks), then shut down its sending side.
func parkThenHalfClose(t *testing.T, srv *Server) {
	t.Helper()
	hcHoldKeys(t, srv)
	c := hcDial(t, srv)
	_, err := c.Write([]byte(strings.Repeat(hcReq("stats", "_", "_"), 3) + hcReq("l", "held", "60")))
	require.NoError(t, err)
	require.True(t, pollFor(3*time.Second, func() bool { return srv.parked.Load() == 1 }))
	require.NoError(t, c.CloseWrite())
}

// A request waits after a half-close, the replies before it do not fit the
// socket and the client never reads: the connection goes at the write
// timeout, its waiter at once.
func TestHalfCloseParkedNotReadingWriteTimeout(t *testing.T) {
	srv := hcServer(t, Config{WriteTimeout: 300 * time.Millisecond})
	parkThenHalfClose(t, srv)
	require.True(t, pollFor(time.Second, func() bool { return srv.parked.Load() == 0 }), "parked %d", srv.parked.Load())
	start := time.Now()
	require.True(t, pollFor(3*time.Second, func() bool { return srv.Connections() == 1 }),
		"connections %d after %v", srv.Connections(), time.Since(start))
}

// Grant racing the half-close: the released lock goes to the waiter just
// as its client half-closes. Whatever wins, the connection closes, nothing
// stays parked, and (auto-release) the lock is free afterwards.
func TestHalfCloseGrantRace(t *testing.T) {
	srv := hcServer(t, Config{Loops: 2})
	h, err := net.Dial("tcp", srv.Addr().String())
	require.NoError(t, err)
	defer func() { _ = h.Close() }()
	hr := bufio.NewReader(h)
	do := func(s string) string {
		_ = h.SetDeadline(time.Now().Add(5 * time.Second))
		_, err := h.Write([]byte(s))
		require.NoError(t, err)
		line, err := hr.ReadString('\n')
		require.NoError(t, err)
		return strings.TrimSuffix(line, "\n")
	}
	for i := range 150 {
		key := "race-" + string(rune('a'+i%26)) + string(rune('a'+i/26))
		g := strings.Fields(do(hcReq("l", key, "0")))
		require.Len(t, g, 3)
		c, err := net.Dial("tcp", srv.Addr().String())
		require.NoError(t, err)
		_, err = c.Write([]byte(hcReq("l", key, "10")))
		require.NoError(t, err)
		require.True(t, pollFor(3*time.Second, func() bool { return srv.parked.Load() == 1 }))
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i%2 == 0 {
				time.Sleep(time.Duration(i%5) * 20 * time.Microsecond)
			}
			_ = c.(*net.TCPConn).CloseWrite()
		}()
		require.Equal(t, "ok", do(hcReq("r", key, g[1])))
		wg.Wait()
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		_, err = io.ReadAll(c)
		require.NoError(t, err, "iteration %d: the server closes", i)
		_ = c.Close()
		require.True(t, pollFor(2*time.Second, func() bool { return srv.parked.Load() == 0 }),
			"iteration %d: parked %d", i, srv.parked.Load())
		require.True(t, pollFor(2*time.Second, func() bool { return srv.Connections() == 1 }),
			"iteration %d: connections %d", i, srv.Connections())
		g2 := strings.Fields(do(hcReq("l", key, "0")))
		require.Equal(t, "ok", g2[0], "iteration %d: the key is free again", i)
		require.Equal(t, "ok", do(hcReq("r", key, g2[1])))
	}
}

// A drain with nothing parked returns promptly even while a half-closed
// connection is still writing the replies before its dropped request.
func TestShutdownWhileHalfCloseFlushing(t *testing.T) {
	srv := hcServer(t, Config{WriteTimeout: 20 * time.Second})
	parkThenHalfClose(t, srv)
	require.True(t, pollFor(time.Second, func() bool { return srv.parked.Load() == 0 }))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	require.NoError(t, srv.Shutdown(ctx))
	require.Less(t, time.Since(start), time.Second)
}
