package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// sideEscapedKey is a 256-byte key of control bytes: JSON writes each
// \x01 as \u0001, so 1,024 of them (the default --max-locks) make a stats
// body of ~1.6 MB.
func sideEscapedKey(i int) string {
	return strings.Repeat("\x01", 248) + fmt.Sprintf("%08d", i)
}

// sideFillLocks takes n locks on one pipelined connection.
func sideFillLocks(t *testing.T, addr string, n int) net.Conn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, ioTimeout)
	require.NoError(t, err)
	t.Cleanup(func() { _ = nc.Close() })
	var b strings.Builder
	for i := range n {
		b.WriteString("l\n" + sideEscapedKey(i) + "\n0\n")
	}
	require.NoError(t, nc.SetDeadline(time.Now().Add(10*time.Second)))
	go func() { _, _ = nc.Write([]byte(b.String())) }()
	br := bufio.NewReader(nc)
	for i := range n {
		line, err := br.ReadString('\n')
		require.NoError(t, err, "reply %d", i)
		require.True(t, strings.HasPrefix(line, "ok "), "reply %d: %q", i, line)
	}
	require.NoError(t, nc.SetDeadline(time.Time{}))
	return nc
}

// sideStartStall runs the side port in-process, with write-stall bound
// stall, over a reactortest server holding 1,024 locks with escaped keys.
func sideStartStall(t *testing.T, stall time.Duration) (side *httpSide, lockAddr string) {
	t.Helper()
	srv := reactortest.Start(t)
	sideFillLocks(t, srv.Addr, 1024)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	side = startHTTPStall(ln, srv.Server, srv.Table, &options{}, zap.NewNop(), stall)
	t.Cleanup(side.stop)
	return side, srv.Addr
}

// sideNonReader sends one GET for path on a socket tuned like a client
// across a real network (Ethernet MSS, small receive buffer) and returns
// it: a test that never reads it has a client that stopped reading.
func sideNonReader(t *testing.T, addr, path string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: ioTimeout, Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			if serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_MAXSEG, 1460); serr != nil {
				return
			}
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 16<<10)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	nc, err := d.DialContext(context.Background(), "tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = nc.Close() })
	_, err = nc.Write([]byte("GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n"))
	require.NoError(t, err)
	return nc
}

// TestSidePortNonReadersDoNotStarveProbes: the side port holds at most
// httpMaxConns (64) connections. 64 clients that ask for /v1/stats
// (megabytes with many keys; open when no --auth-token is set) and stop
// reading held every slot for ever before (no WriteTimeout, and a blocked
// write is no idle connection to evict), so /healthz and /readyz went
// unanswered and a liveness probe would restart the lock server. Now at
// most httpMaxRenders of them get the body; the rest get 503 and go idle,
// and idle connections make room for newcomers.
func TestSidePortNonReadersDoNotStarveProbes(t *testing.T) {
	side, _ := sideStartStall(t, httpWriteStall)
	addr := side.Addr().String()
	for range httpMaxConns {
		sideNonReader(t, addr, "/v1/stats")
	}
	time.Sleep(500 * time.Millisecond) // the handlers fill the socket buffers and block
	c := http.Client{Timeout: 3 * time.Second}
	for _, path := range []string{"/healthz", "/readyz"} {
		start := time.Now()
		resp, err := c.Get("http://" + addr + path)
		require.NoError(t, err, "%s unanswered after %v while %d clients do not read their /v1/stats responses",
			path, time.Since(start).Round(time.Millisecond), httpMaxConns)
		_ = resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode, path)
	}
}

// TestSidePortStalledWriteEnds: a response write that makes no progress
// for the stall bound ends its connection and frees its render slot.
// httpMaxRenders clients that stop reading fill the slots: a reading
// client's /v1/stats gets 503 with Retry-After, and once the stall bound
// has passed it gets the stats again.
func TestSidePortStalledWriteEnds(t *testing.T) {
	const stall = 1500 * time.Millisecond
	side, _ := sideStartStall(t, stall)
	addr := side.Addr().String()
	start := time.Now()
	for range httpMaxRenders {
		sideNonReader(t, addr, "/v1/stats")
	}
	// Let every non-reader's handler take its slot and block in Write
	// before probing: a probe first would take a slot itself.
	time.Sleep(400 * time.Millisecond)
	c := http.Client{Timeout: 10 * time.Second}
	get := func() (int, string, []byte) {
		resp, err := c.Get("http://" + addr + "/v1/stats")
		require.NoError(t, err)
		defer func() { _ = resp.Body.Close() }()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, resp.Header.Get("Retry-After"), b
	}
	code, retry, _ := get()
	require.Equal(t, http.StatusServiceUnavailable, code, "%d stalled /v1/stats responses did not fill the render slots", httpMaxRenders)
	require.Equal(t, "1", retry)
	// The stalled writes end once the bound passes with no progress, and
	// free the slots.
	var body []byte
	require.Eventually(t, func() bool {
		code, _, b := get()
		body = b
		return code == http.StatusOK
	}, stall+5*time.Second, 50*time.Millisecond, "render slots still taken long after the stall bound")
	require.GreaterOrEqual(t, time.Since(start), stall, "a stalled write ended before the bound")
	var st struct {
		Locks []json.RawMessage `json:"locks"`
	}
	require.NoError(t, json.Unmarshal(body, &st))
	require.Len(t, st.Locks, 1024)
}
