package reactor_test

import (
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// refuseBurst makes srv refuse two connections within a second:
// the first refusal is logged at once, the second schedules the log of
// the rest of the burst (noteRefused's time.AfterFunc) ~1 s later.
func refuseBurst(t *testing.T, srv *reactortest.Server) {
	t.Helper()
	srv.Connect(t) // the one connection the cap allows
	waitConnections(t, srv, 1)
	for range 2 {
		nc, err := net.Dial("tcp", srv.Addr)
		require.NoError(t, err)
		_ = nc.Close()
	}
	require.Eventually(t, func() bool { return srv.Refused() == 2 }, 5*time.Second, time.Millisecond)
}

// Nothing is logged after Close returns. noteRefused's time.AfterFunc,
// which logs the rest of a burst, logged it up to a second after Close,
// through a logger an embedder may consider done with.
func TestRefusalTailNotLoggedAfterClose(t *testing.T) {
	core, logs := observer.New(zapcore.WarnLevel)
	srv := reactortest.Start(t, func(c *reactortest.Config) {
		c.Server.MaxConnections = 1
		c.Server.Logger = zap.New(core)
	})
	refuseBurst(t, srv)
	srv.Close()
	closed := logs.Len()
	time.Sleep(1200 * time.Millisecond)
	after := logs.All()[closed:]
	for _, e := range after {
		t.Logf("logged after Close: %s %v", e.Message, e.ContextMap())
	}
	require.Empty(t, after, "the server logged after Close")
}
