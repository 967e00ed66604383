package main

import (
	"bufio"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// TestSidePortCannotStarveLockPort: the HTTP side port's descriptors come
// from the budget the lock port's connection cap is computed from. It used
// to accept without limit, so idle connections to it (no request sent, no
// auth needed) used up the descriptors and the lock port refused every
// client while serving none. Now it holds at most httpMaxConns, and the
// lock port's reserve covers them.
func TestSidePortCannotStarveLockPort(t *testing.T) {
	t.Parallel()
	const nofile, flood = 256, 300
	raiseTestNoFile(t, flood+256)
	srv := startServer(t, procConfig{nofile: nofile, args: []string{"--log-format", "json", "--http-addr", "127.0.0.1:0"}})
	info := srv.listeningLine(t)
	var side struct {
		HTTPAddr string `json:"http_addr"`
	}
	for _, line := range strings.Split(srv.stderr.String(), "\n") {
		if strings.Contains(line, "dflockd listening") {
			require.NoError(t, json.Unmarshal([]byte(line), &side))
		}
	}
	require.NotEmpty(t, side.HTTPAddr)
	// Less two descriptors per event loop (epoll, eventfd).
	require.Equal(t, int64(nofile-fdReserve(true))-2*info.EventLoops, info.ConnectionCap)

	var conns []net.Conn
	t.Cleanup(func() {
		for _, nc := range conns {
			_ = nc.Close()
		}
	})
	for range flood {
		nc, err := net.DialTimeout("tcp", side.HTTPAddr, 2*time.Second)
		if err != nil {
			continue
		}
		conns = append(conns, nc)
	}
	// Let the side port's accept loop take what it can (well inside its
	// 10 s ReadHeaderTimeout).
	time.Sleep(500 * time.Millisecond)

	// Every lock connection up to the cap is served, each answering ping.
	var lockConns []net.Conn
	t.Cleanup(func() {
		for _, nc := range lockConns {
			_ = nc.Close()
		}
	})
	for i := range int(info.ConnectionCap) {
		nc, err := net.DialTimeout("tcp", srv.addr, 2*time.Second)
		require.NoError(t, err)
		lockConns = append(lockConns, nc)
		require.NoError(t, nc.SetDeadline(time.Now().Add(5*time.Second)))
		_, err = nc.Write([]byte("ping\n_\n_\n"))
		require.NoError(t, err)
		line, err := bufio.NewReader(nc).ReadString('\n')
		require.NoError(t, err, "lock connection %d of a cap of %d not served (side port holds %d connections)",
			i+1, info.ConnectionCap, len(conns))
		require.Equal(t, "ok\n", line)
	}
}

// TestSidePortStdLogLevel: what net/http and promhttp log (accept errors,
// handler panics, failed gathers) is logged at warn level, not info.
func TestSidePortStdLogLevel(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	stdLog(zap.New(core)).Print("http: Accept error: accept4: too many open files; retrying in 5ms")
	require.Equal(t, 1, logs.Len())
	require.Equal(t, zapcore.WarnLevel, logs.All()[0].Level)
}
