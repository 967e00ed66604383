package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// sideSmallSndbuf is sideStartStall with the server's send buffer
// fixed at 16 KiB (no loopback autotuning, which can take the whole
// 1.6 MB body off the handler at once and make a non-reader hold nothing).
func sideSmallSndbuf(t *testing.T, stall time.Duration) *httpSide {
	t.Helper()
	srv := reactortest.Start(t)
	sideFillLocks(t, srv.Addr, 1024)
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF, 16<<10)
		}); err != nil {
			return err
		}
		return serr
	}}
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	side := startHTTPStall(ln, srv.Server, srv.Table, &options{}, zap.NewNop(), stall)
	t.Cleanup(side.stop)
	return side
}

// TestSidePortSlowButProgressingReaderNotCut: the side port's stall bound
// is a progress bound (README, docs/operations.md): a reader that takes
// 4 KiB every 100 ms, slower than 64 KiB a bound, is never cut off. (The
// first version gave each 64 KiB chunk one deadline and cut it off.) The
// bound is 1 s here: a write is woken only when a third of the send
// buffer (16 KiB, doubled by the kernel) is free, ~0.3 s at this rate.
func TestSidePortSlowButProgressingReaderNotCut(t *testing.T) {
	const stall = time.Second
	side := sideSmallSndbuf(t, stall)
	nc := sideNonReader(t, side.Addr().String(), "/v1/stats")
	buf := make([]byte, 4<<10)
	total := 0
	start := time.Now()
	for time.Since(start) < 4*time.Second {
		_ = nc.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err := io.ReadFull(nc, buf)
		total += n
		if err != nil {
			t.Fatalf("a reader taking 4 KiB every 100 ms (never idle for the %v bound) was cut off after %v and %d bytes: %v",
				stall, time.Since(start).Round(time.Millisecond), total, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("read %d bytes in %v without being cut off", total, time.Since(start).Round(time.Millisecond))
}

// TestSidePortKeepAliveIdleLongerThanStall: the write deadline limitConn
// sets stays on the socket after the response; a keep-alive connection
// idle for longer than the bound must still answer its next request
// (each Write sets a fresh deadline first).
func TestSidePortKeepAliveIdleLongerThanStall(t *testing.T) {
	const stall = 200 * time.Millisecond
	side, _ := sideStartStall(t, stall)
	base := "http://" + side.Addr().String()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	defer c.CloseIdleConnections()
	for i, path := range []string{"/v1/stats", "/healthz", "/metrics", "/v1/stats", "/readyz"} {
		var reused bool
		ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
			GotConn: func(info httptrace.GotConnInfo) { reused = info.Reused },
		})
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
		require.NoError(t, err)
		resp, err := c.Do(req)
		require.NoError(t, err, path)
		_, err = io.Copy(io.Discard, resp.Body)
		require.NoError(t, err, path)
		_ = resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode, path)
		if i > 0 {
			require.True(t, reused, "%s: keep-alive connection not reused", path)
		}
		time.Sleep(3 * stall) // idle past the deadline left on the socket
	}
}

// TestSidePortPipelinedStatsOnOneConn: HTTP/1.1 pipelining of two large
// responses on one connection, read promptly, both arrive whole.
func TestSidePortPipelinedStatsOnOneConn(t *testing.T) {
	side, _ := sideStartStall(t, 200*time.Millisecond)
	nc, err := net.DialTimeout("tcp", side.Addr().String(), ioTimeout)
	require.NoError(t, err)
	defer func() { _ = nc.Close() }()
	_, err = nc.Write([]byte(strings.Repeat("GET /v1/stats HTTP/1.1\r\nHost: x\r\n\r\n", 2) + "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"))
	require.NoError(t, err)
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(nc)
	for i := range 3 {
		resp, err := http.ReadResponse(br, nil)
		require.NoError(t, err, "response %d", i)
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err, "response %d", i)
		_ = resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode, "response %d", i)
		if i < 2 {
			require.Greater(t, len(b), 1<<20)
		}
	}
}

// TestSidePortBusyAnswersDoNotLeakSlots: many 503s while the render
// slots are held take no slot; once the non-readers go, every slot is
// back (httpMaxRenders concurrent slow responses all get 200).
func TestSidePortBusyAnswersDoNotLeakSlots(t *testing.T) {
	const stall = 2 * time.Second // long enough that the slots stay taken while probed
	side := sideSmallSndbuf(t, stall)
	addr := side.Addr().String()
	var nrs []net.Conn
	for range httpMaxRenders {
		nrs = append(nrs, sideNonReader(t, addr, "/v1/stats"))
	}
	c := http.Client{Timeout: 5 * time.Second}
	get := func(path string) int {
		resp, err := c.Get("http://" + addr + path)
		if err != nil {
			return -1
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	// Wait (without probing, which could take a slot first) until the
	// non-readers' handlers are all blocked in limitConn.Write.
	require.Eventually(t, func() bool {
		buf := make([]byte, 1<<20)
		return strings.Count(string(buf[:runtime.Stack(buf, true)]), "(*limitConn).Write") == httpMaxRenders
	}, 5*time.Second, 20*time.Millisecond, "the non-readers' handlers not all blocked in Write")
	require.Equal(t, http.StatusServiceUnavailable, get("/metrics"))
	var wg sync.WaitGroup
	busy := make(chan int, 64)
	for range 32 {
		wg.Add(1)
		go func() { defer wg.Done(); busy <- get("/metrics") }()
	}
	wg.Wait()
	close(busy)
	for code := range busy {
		require.Contains(t, []int{http.StatusServiceUnavailable, http.StatusOK}, code)
	}
	for _, nc := range nrs {
		_ = nc.Close()
	}
	// All httpMaxRenders slots free again: that many slow-but-reading
	// clients (held in Write a little while each) all get 200 at once.
	require.Eventually(t, func() bool { return get("/v1/stats") == http.StatusOK }, 5*time.Second, 50*time.Millisecond,
		"slots not given back after the non-readers closed (a write to a closed peer fails at once)")
	codes := make(chan string, httpMaxRenders)
	for i := range httpMaxRenders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nc := sideNonReader(t, addr, "/v1/stats")
			_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
			line, err := bufio.NewReader(nc).ReadString('\n')
			codes <- fmt.Sprintf("%d %q %v", i, line, err)
			time.Sleep(200 * time.Millisecond) // keep the slot a while
		}()
	}
	wg.Wait()
	close(codes)
	for s := range codes {
		require.Contains(t, s, "200 OK", s)
	}
}
