package reactor_test

import (
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/lockcore"
	"github.com/lockreactor/dflockd/reactor"
	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// A secret no client can present (longer than a protocol line, with a
// newline, or with whitespace the server trims from what clients send)
// is refused at New instead of locking every client out.
func TestNewRefusesUnusableAuthToken(t *testing.T) {
	tbl := lockcore.New(lockcore.Config{MaxLocks: 16})
	for _, tok := range []string{strings.Repeat("k", 257), "abc\ndef", " padded", "padded\t"} {
		srv, err := reactor.New(reactor.Config{Addr: "127.0.0.1:0", AuthToken: tok}, tbl)
		if srv != nil {
			srv.Close()
		}
		require.Error(t, err, "secret %q", tok)
		require.Contains(t, err.Error(), "AuthToken")
	}
	srv, err := reactor.New(reactor.Config{Addr: "127.0.0.1:0", AuthToken: strings.Repeat("k", 256)}, tbl)
	require.NoError(t, err, "256 bytes fit a line")
	srv.Close()
}

// The longest secret New accepts is one a client can present.
func TestLongestAuthTokenWorks(t *testing.T) {
	secret := strings.Repeat("k", 256)
	srv := reactortest.Start(t, func(c *reactortest.Config) { c.Server.AuthToken = secret })
	c := srv.Dial(t)
	require.Equal(t, rOK, c.Do("auth", "_", secret))
	require.Equal(t, rOK, c.Do("ping", "_", "_"))
}

// With the read timeout off, a connection that never authenticates is
// still closed (error_auth) after AuthTimeout: idle strangers cannot hold
// the connection slots for ever. Authenticated connections have no limit.
func TestAuthTimeoutWithoutReadTimeout(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		srv := tr.start(t, func(c *reactortest.Config) {
			c.Server.AuthToken = "s3cret"
			c.Server.ReadTimeout = 0
			c.Server.AuthTimeout = 300 * time.Millisecond
		})
		authed := srv.Connect(t)
		require.Equal(t, rOK, authed.Do("auth", "_", "s3cret"))
		stranger := srv.Connect(t)
		start := time.Now()
		require.Equal(t, rErrAuth, stranger.Line())
		require.GreaterOrEqual(t, time.Since(start), 250*time.Millisecond)
		stranger.Closed(5 * time.Second)
		time.Sleep(300 * time.Millisecond)
		require.Equal(t, rOK, authed.Do("ping", "_", "_"), "no timeout once authenticated")
	})
}

// Before authentication the timeout runs from the connect, not per line:
// a stranger sending the lines of a request one by one, each just before
// the deadline, held its slot for three timeouts.
func TestAuthTimeoutCountsFromConnect(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		const authTimeout = time.Second
		srv := tr.start(t, func(c *reactortest.Config) {
			c.Server.AuthToken = "s3cret"
			c.Server.ReadTimeout = 0
			c.Server.AuthTimeout = authTimeout
		})
		stranger := srv.Connect(t)
		start := time.Now()
		time.Sleep(700 * time.Millisecond)
		stranger.Send("l\n")
		line, err := stranger.ReadLine(5 * time.Second)
		require.NoError(t, err)
		require.Equal(t, rErrAuth, line)
		// Per line it would come at 1.7 s.
		require.Less(t, time.Since(start), 1500*time.Millisecond)
		stranger.Closed(5 * time.Second)
	})
}

// On the TLS port the handshake comes before auth: a stranger that never
// starts it is closed after AuthTimeout too, not only at the (longer)
// read timeout.
func TestAuthTimeoutBoundsTLSHandshake(t *testing.T) {
	srv := reactortest.Start(t, func(c *reactortest.Config) {
		c.SelfSignedTLS = true
		c.Server.AuthToken = "s3cret"
		c.Server.ReadTimeout = 4 * time.Second
		c.Server.AuthTimeout = 300 * time.Millisecond
	})
	nc, err := net.DialTimeout("tcp", srv.Addr, 5*time.Second)
	require.NoError(t, err)
	defer func() { _ = nc.Close() }()
	require.NoError(t, nc.SetReadDeadline(time.Now().Add(2*time.Second)))
	_, err = nc.Read(make([]byte, 1))
	require.ErrorIs(t, err, io.EOF, "closed by the server within AuthTimeout, not still open at 2 s")
}
