package main

import (
	"crypto/tls"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDrainTLSAuthLateAuthenticator: TLS + auth. Before SIGTERM: an authenticated
// holder, an authenticated parked waiter, a TLS connection not yet
// authenticated, and 300 idle authenticated TLS connections. During the
// drain the unauthenticated connection authenticates and releases the
// holder's token (tokens are bearer credentials): the waiter is granted,
// then the process exits 0 at once.
func TestDrainTLSAuthLateAuthenticator(t *testing.T) {
	certFile, keyFile, pool := selfSignedCert(t)
	raiseTestNoFile(t, 1000)
	srv := startServer(t, procConfig{args: []string{"--tls-cert", certFile, "--tls-key", keyFile, "--auth-token", "sek", "--shutdown-timeout", "5"}})
	cfg := &tls.Config{RootCAs: pool}
	dial := func(auth bool) *client {
		tc, err := tls.DialWithDialer(&net.Dialer{Timeout: ioTimeout}, "tcp", srv.addr, cfg)
		require.NoError(t, err)
		c := newClient(t, tc)
		if auth {
			require.Equal(t, "ok", c.do("auth", "_", "sek"))
		}
		return c
	}
	holder := dial(true)
	tok := requireGrant(t, holder.do("l", "k", "0"), 33)
	waiter := dial(true)
	waiter.send("l", "k", "30")
	late := dial(false)
	idles := make([]*client, 300)
	for i := range idles {
		idles[i] = dial(true)
	}
	probe := dial(true)
	waitWaiters(t, probe, "k", 1)
	start := time.Now()
	srv.signal(t, syscall.SIGTERM)
	eventually(t, ioTimeout, "draining", func() bool { return probe.do("ping", "_", "_") == "error_draining" })
	require.Equal(t, "ok", late.do("auth", "_", "sek"))
	require.Equal(t, "ok", late.do("r", "k", tok))
	line, err := waiter.readLine(ioTimeout)
	require.NoError(t, err)
	requireGrant(t, line, 33)
	require.Equal(t, 0, srv.waitExit(t, 10*time.Second))
	t.Logf("exit after %v", time.Since(start))
	assert.Less(t, time.Since(start), 2*time.Second)
	for i, c := range idles {
		line, err := c.readLine(time.Second)
		require.Error(t, err, "idle %d got %q", i, line)
		require.False(t, isTimeout(err), "idle %d still open", i)
	}
}
