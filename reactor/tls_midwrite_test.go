//go:build linux

package reactor_test

import (
	"context"
	"crypto/tls"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestTLSHalfCloseMidWrite: a TLS client asks for a stats reply
// larger than the kernel buffers, half-closes (close_notify) while the
// processor is writing it in chunks, and reads it all: the whole reply,
// then EOF.
func TestTLSHalfCloseMidWrite(t *testing.T) {
	tr := transport{name: "tls", tls: true}
	srv := tr.start(t)
	holder := srv.Connect(t)
	bigKeysForStats(t, holder, 300) // ~93 KB
	c := dialTinyBuffers(t, tr, srv.Addr, srv.ClientTLS, srv.Connections, 2).(*tls.Conn)
	_, err := c.Write([]byte(req("stats", "_", "_")))
	require.NoError(t, err)
	time.Sleep(100 * time.Millisecond) // mid-write: the kernel buffers are full
	require.NoError(t, c.CloseWrite())
	require.NoError(t, c.SetReadDeadline(time.Now().Add(10*time.Second)))
	b, err := io.ReadAll(c)
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(string(b), rOK+" {"))
	require.Equal(t, 1, strings.Count(string(b), "\n"))
	require.True(t, strings.HasSuffix(string(b), "}\n"))
}

// TestTLSShutdownMidChunkedWrite: Shutdown while a TLS processor is
// in the middle of a chunked write to a client that reads slowly does not
// wait for the write (nothing is parked) and closes the connection.
func TestTLSShutdownMidChunkedWrite(t *testing.T) {
	tr := transport{name: "tls", tls: true}
	srv := tr.start(t)
	holder := srv.Connect(t)
	bigKeysForStats(t, holder, 300)
	c := dialTinyBuffers(t, tr, srv.Addr, srv.ClientTLS, srv.Connections, 2)
	_, err := c.Write([]byte(req("stats", "_", "_")))
	require.NoError(t, err)
	done := make(chan struct{})
	go func() { // a slow but steady reader
		defer close(done)
		_, _, _, _ = slowReadLine(c, 1<<10, 16<<10, 15*time.Second)
	}()
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, srv.Shutdown(ctx))
	require.Less(t, time.Since(start), time.Second, "Shutdown waited for a slow reader's reply")
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the slow reader's connection was not closed by Shutdown")
	}
}
