package reactor_test

import (
	"bufio"
	"context"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// The TLS read deadline after the handshake (converted with a fresh
// clock, so it counts from the connect) with --read-timeout
// shorter than the auth timeout, with and without an auth token. A client
// handshakes 600 ms after its connect and then sends nothing: it is closed
// read timeout (1 s) after the connect, not after the handshake, with
// error_auth (token) or error (none) — as a plain connection that sends
// nothing is closed read timeout after its connect.
//
// Note (not a failure): without a token the handshake now counts toward
// the first request line's read timeout (before, the first line had
// the full read timeout from the end of the handshake). This matches the
// plain port, where the first line's timeout runs from the connect.
func TestTLSReadDeadlineFromConnect(t *testing.T) {
	const rt = time.Second
	for _, tc := range []struct {
		name, token, want string
	}{{"token", "s3cret", rErrAuth}, {"no token", "", rError}} {
		t.Run(tc.name, func(t *testing.T) {
			srv := tlsServer(t, func(c *reactortest.Config) {
				c.Server.AuthToken = tc.token
				c.Server.ReadTimeout = rt
				c.Server.AuthTimeout = 30 * time.Second
				c.Server.AuthFailDelay = 10 * time.Millisecond
			})
			line, took := lateHandshakeLine(t, srv, 600*time.Millisecond)
			require.Equal(t, tc.want+"\n", line)
			t.Logf("%s %v after the connect (read timeout %v)", tc.want, took, rt)
			require.Greater(t, took, rt-50*time.Millisecond)
			require.Less(t, took, rt+300*time.Millisecond)
		})
	}
}

// lateHandshakeLine connects to srv, waits delay before the TLS handshake,
// then sends nothing and reads the server's first line. It returns the
// line and how long after the connect it came.
func lateHandshakeLine(t *testing.T, srv *reactortest.Server, delay time.Duration) (string, time.Duration) {
	t.Helper()
	start := time.Now()
	raw, err := net.Dial("tcp", srv.Addr)
	require.NoError(t, err)
	defer func() { _ = raw.Close() }()
	time.Sleep(delay)
	c := tlsClient(raw, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, c.HandshakeContext(ctx))
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	took := time.Since(start)
	require.NoError(t, err)
	return line, took
}
