package reactor_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// TestParkedOverInboundCapClosed: Config.InboundCap closes a
// connection with more than the cap unread while it is parked. Over TLS
// the slack for an incomplete request (3 x 257 bytes) once applied to the
// parked case too, so up to cap+771 bytes were kept.
func TestParkedOverInboundCapClosed(t *testing.T) {
	forTransports(t, func(t *testing.T, tr transport) {
		srv := tr.start(t, func(c *reactortest.Config) { c.Server.InboundCap = 100 })
		obs := srv.Connect(t)
		a := srv.Connect(t)
		lock(t, a, "pc")
		b := dialRaw(t, tr, srv)
		_, err := b.Write([]byte(req("l", "pc", "60")))
		require.NoError(t, err)
		waitLockWaiters(t, obs, "pc", 1)
		// 6x the cap while parked, in one write.
		_, err = b.Write(bytes.Repeat([]byte(req("ping", "_", "_")), 600/9))
		require.NoError(t, err)
		require.NoError(t, b.SetReadDeadline(time.Now().Add(2*time.Second)))
		buf := make([]byte, 64)
		_, rerr := b.Read(buf)
		require.False(t, isTimeout(rerr), "a parked connection with 594 unread bytes (InboundCap 100) was not closed")
	})
}
