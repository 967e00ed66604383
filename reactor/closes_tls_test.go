package reactor_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/reactor"
	"github.com/lockreactor/dflockd/reactor/reactortest"
)

func tlsServer(t *testing.T, configure ...func(*reactortest.Config)) *reactortest.Server {
	t.Helper()
	return transport{name: "tls", tls: true}.start(t, configure...)
}

func requireNoCloses(t *testing.T, srv *reactortest.Server, what string) {
	t.Helper()
	m := srv.Metrics()
	for r, n := range m.Closes {
		require.Zero(t, n, "%s: counted as a server close for reason %s (docs/operations.md: closes by the client or the shutdown are not counted)",
			what, reactor.CloseReason(r))
	}
}

// A client that opens a TCP connection to a TLS port and closes it
// without a handshake (a load balancer's TCP health check, a port scan) is
// a close the client began. docs/operations.md: "closes by the client or
// the shutdown are not counted". Before the fix: counted as tls_handshake
// (tls.go serve: every Handshake error that is not a timeout is
// CloseTLSHandshake, io.EOF included).
func TestTLSClientCloseBeforeHandshakeNotCounted(t *testing.T) {
	srv := tlsServer(t)
	nc, err := net.Dial("tcp", srv.Addr)
	require.NoError(t, err)
	_ = nc.Close()
	waitConnections(t, srv, 0)
	time.Sleep(50 * time.Millisecond)
	requireNoCloses(t, srv, "client closed before its handshake")
}

// The same for a client that resets the connection mid-handshake.
func TestTLSClientResetDuringHandshakeNotCounted(t *testing.T) {
	srv := tlsServer(t)
	nc, err := net.Dial("tcp", srv.Addr)
	require.NoError(t, err)
	// Half a ClientHello record header, then a reset.
	_, _ = nc.Write([]byte{0x16, 0x03, 0x01})
	time.Sleep(50 * time.Millisecond)
	_ = nc.(*net.TCPConn).SetLinger(0)
	_ = nc.Close()
	waitConnections(t, srv, 0)
	time.Sleep(50 * time.Millisecond)
	requireNoCloses(t, srv, "client reset during its handshake")
}

// A shutdown that closes a connection still in its handshake is
// the shutdown's close. Before the fix: counted as tls_handshake (Close closes
// the socket; Handshake fails with "use of closed network connection").
func TestTLSShutdownDuringHandshakeNotCounted(t *testing.T) {
	srv := tlsServer(t)
	nc, err := net.Dial("tcp", srv.Addr)
	require.NoError(t, err)
	defer func() { _ = nc.Close() }()
	waitConnections(t, srv, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, srv.Shutdown(ctx))
	requireNoCloses(t, srv, "shutdown during a handshake")
}

// README (Auth): "Before authenticating, a connection has at most
// 30 s in all, counted from the connect (not per line) ... (on a TLS port
// the handshake counts toward it)". On a TLS port, after the handshake
// the socket's read deadline is set from the time the handshake ended,
// not from the connect: tls.go serve calls t.setReadDeadline(now) with the
// clock read before the handshake, and setReadDeadline computes
// time.Now() + (deadline - now). A stranger that takes most of the auth
// timeout for its handshake and then sends nothing is closed only about
// handshake + auth timeout after its connect.
//
// Expected: error_auth within ~AuthTimeout (+ tick, AuthFailDelay) of the
// connect. Before the fix: ~AuthTimeout after the handshake.
func TestTLSPreAuthTimeoutRunsFromConnect(t *testing.T) {
	const authTimeout = time.Second
	srv := tlsServer(t, func(c *reactortest.Config) {
		c.Server.AuthToken = "s3cret"
		c.Server.AuthTimeout = authTimeout
		c.Server.AuthFailDelay = 10 * time.Millisecond
	})
	line, took := lateHandshakeLine(t, srv, 800*time.Millisecond) // a slow handshake, within its bound
	require.Equal(t, rErrAuth+"\n", line)
	t.Logf("error_auth %v after the connect (auth timeout %v)", took, authTimeout)
	require.Less(t, took, authTimeout+300*time.Millisecond,
		"an unauthenticated TLS connection was answered error_auth %v after its connect; the README bounds it at the auth timeout (%v) from the connect, handshake included", took, authTimeout)
}
