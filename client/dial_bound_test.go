package client_test

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/client"
	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// TestDialBoundCoversTLSAndAuth: without a ctx deadline the dialer's
// Timeout bounds TCP, TLS and auth together (DefaultDialTimeout's promise),
// not each phase on its own. The server here takes 0.7 s to start the TLS
// handshake and never answers auth; with a 1 s bound the dial must give up
// about 1 s in, not 0.7 s + 1 s.
func TestDialBoundCoversTLSAndAuth(t *testing.T) {
	srvCfg, cliCfg := reactortest.SelfSignedTLS(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer func() { _ = c.Close() }()
				time.Sleep(700 * time.Millisecond)
				tc := tls.Server(c, srvCfg)
				if tc.Handshake() != nil {
					return
				}
				_, _ = io.Copy(io.Discard, tc) // auth is never answered
			}()
		}
	}()
	start := time.Now()
	c, err := client.DialContext(context.Background(), ln.Addr().String(),
		client.WithTLS(cliCfg), client.WithAuth("secret"),
		client.WithDialer(&net.Dialer{Timeout: time.Second}))
	took := time.Since(start)
	if c != nil {
		_ = c.Close()
	}
	require.Error(t, err)
	require.GreaterOrEqual(t, took, 900*time.Millisecond, "gave up before the bound: %v", err)
	require.Less(t, took, 1500*time.Millisecond, "the bound was applied per phase: %v after %v", err, took)
}
