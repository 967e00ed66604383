package reactor_test

import (
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// TestNoWriteToReusedDescriptor: a connection reset by its peer while the
// server is answering it must leave no timer behind. gnet closes the
// connection inside Write when the socket has failed; a read-timeout timer
// left armed then fires later and writes "error" through the stale
// descriptor number, which by then belongs to another client.
//
// Not parallel: it relies on the kernel handing the freed descriptor
// number to the next connection.
func TestNoWriteToReusedDescriptor(t *testing.T) {
	srv := reactortest.Start(t, func(c *reactortest.Config) { c.Server.ReadTimeout = time.Second })
	holder := srv.Dial(t)
	lock(t, holder, "fd")

	var victims []*reactortest.Conn
	for i := range 40 {
		nc, err := net.Dial("tcp", srv.Addr)
		require.NoError(t, err)
		tc := nc.(*net.TCPConn)
		waitConnections(t, srv, int64(2+i))
		// A request, then a reset at once: the server reads the request
		// and its reply write fails.
		_, err = tc.Write([]byte(req("ping", "_", "_")))
		require.NoError(t, err)
		require.NoError(t, tc.SetLinger(0))
		require.NoError(t, tc.Close())
		waitConnections(t, srv, int64(1+i))
		// The next connection likely gets the same descriptor number. It
		// parks, so its own read timeout does not apply.
		v := srv.Dial(t)
		v.Request("l", "fd", "60")
		victims = append(victims, v)
	}
	waitLockWaiters(t, holder, "fd", len(victims))
	// Let any stale read-timeout timer fire (1 s), keeping the holder alive.
	for range 8 {
		time.Sleep(250 * time.Millisecond)
		require.Equal(t, rOK, holder.Do("ping", "_", "_"))
	}
	for i, v := range victims {
		line, err := v.ReadLine(10 * time.Millisecond)
		require.Empty(t, line, "parked connection %d got a reply meant for a dead connection (err %v)", i, err)
	}
}
