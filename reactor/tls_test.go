package reactor_test

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// PROTOCOL.md "Auth and TLS": with a certificate the port speaks TLS only.

func TestTLSPortRefusesPlaintext(t *testing.T) {
	t.Parallel()
	srv := reactortest.Start(t, func(c *reactortest.Config) {
		c.SelfSignedTLS = true
		c.Server.ReadTimeout = time.Second
	})

	t.Run("plaintext request", func(t *testing.T) {
		t.Parallel()
		c := srv.Dial(t) // plain TCP
		c.Send(req("ping", "_", "_") + req("l", "k", "0"))
		require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
		got, err := io.ReadAll(c)
		require.False(t, isTimeout(err), "a plaintext client was not closed")
		require.NotContains(t, string(got), rOK+"\n", "a plaintext client was served")
		require.False(t, strings.HasPrefix(string(got), rOK), "a plaintext client was served")
	})
	t.Run("no handshake", func(t *testing.T) {
		t.Parallel()
		c := srv.Dial(t)
		require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
		_, err := io.ReadAll(c)
		require.False(t, isTimeout(err), "a client that never shakes hands is kept past the read timeout")
	})
	t.Run("TLS client served", func(t *testing.T) {
		t.Parallel()
		c := srv.Connect(t)
		require.Equal(t, rOK, c.Do("ping", "_", "_"))
	})
}
