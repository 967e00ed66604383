package reactor_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestTLSNonReaderClosedAtInboundCap: README ("Pipelining behind a
// blocked request is bounded"): "The same bound applies to a client that
// sends without reading: once 64 KiB of its replies are unsent, requests
// wait unread, and 64 KiB of those close the connection, long before
// --write-timeout." (reactor.Config.InboundCap: "close a connection that has
// this many unread bytes while it is not being decoded (parked or above the
// high-water mark)".)
//
// On the plain port the flooder below is closed ~150 ms in. On the TLS
// port the reader goroutine, once it holds more than the cap while the
// processor is blocked writing replies, waits (tlsConn.read: room.Wait)
// instead of closing, so the connection lives until the write timeout
// (the default 5 s here).
func TestTLSNonReaderClosedAtInboundCap(t *testing.T) {
	forTransports(t, func(t *testing.T, tr transport) {
		srv := tr.start(t) // default write timeout: 5 s
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
		deadline := start.Add(2 * time.Second)
		for srv.Connections() > 1 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		took := time.Since(start)
		if srv.Connections() > 1 {
			// How long it does take, for the report.
			waitUntil := start.Add(10 * time.Second)
			for srv.Connections() > 1 && time.Now().Before(waitUntil) {
				time.Sleep(10 * time.Millisecond)
			}
			took = time.Since(start)
		}
		t.Logf("non-reading flooder dropped after %v", took)
		require.Less(t, took, 2*time.Second,
			"a client sending without reading was not closed at the inbound cap, only after %v (write timeout 5s)", took)
		require.Equal(t, rOK, good.Do("ping", "_", "_"))
	})
}
