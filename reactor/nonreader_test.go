package reactor_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// TestNonReaderClosed: a client that sends without reading is closed at
// the inbound cap on the plain port (README: "once 64 KiB of its replies
// are unsent, requests wait unread, and 64 KiB of those close the
// connection, long before --write-timeout"). Over TLS the processor blocks
// in its write, so the rule holds only when a write of at least 64 KiB
// stalls; otherwise the write timeout closes the connection (README says
// so), and memory stays bounded by the cap either way. Before, TLS waited
// for the write timeout in every case.
func TestNonReaderClosed(t *testing.T) {
	forTransports(t, func(t *testing.T, tr transport) {
		const writeTimeout = 2 * time.Second
		srv := tr.start(t, func(c *reactortest.Config) { c.Server.WriteTimeout = writeTimeout })
		good := srv.Connect(t)
		holdKeys(t, good, 150) // stats replies of ~17 KB
		flood := dialRaw(t, tr, srv)
		waitConnections(t, srv, 2)

		// 2 MB of requests, replies far beyond every buffer; never read.
		var payload bytes.Buffer
		for i := 0; payload.Len() < 2<<20; i++ {
			if i%10 == 9 {
				payload.WriteString(req("stats", "_", "_"))
			} else {
				payload.WriteString(req("ping", "_", "_"))
			}
		}
		start := time.Now()
		go func() {
			_ = flood.SetWriteDeadline(time.Now().Add(15 * time.Second))
			_, _ = flood.Write(payload.Bytes()) // fails once the server drops us
		}()
		limit := time.Second
		if tr.tls {
			limit = writeTimeout + 1500*time.Millisecond
		}
		deadline := start.Add(10 * time.Second)
		for srv.Connections() > 1 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		took := time.Since(start)
		t.Logf("non-reading flooder dropped after %v", took)
		require.Less(t, took, limit, "a client sending without reading was closed only after %v (write timeout %v)", took, writeTimeout)
		require.Equal(t, rOK, good.Do("ping", "_", "_"))
	})
}
