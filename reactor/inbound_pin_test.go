package reactor_test

import (
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// TestIdleConnKeepsNoInboundBurst: input that piled up while a request was
// parked (~60 KiB of pings behind an l that times out after 1 s) is
// decoded once that request is answered. A connection left idle with the
// first bytes of its next request unread ("pi") must not keep the buffer
// that held the burst. Until fixed (review 13), gnet gave an inbound ring
// buffer back only once it was empty, and the TLS processor resliced its
// input from the front, so every such connection kept ~66 KB (plain) or
// ~53 KB (TLS) for as long as it left a few bytes unread, and every
// complete line restarts the read timeout.
//
// Against connections that left nothing unread after the same burst, the
// tail must cost under 16 KiB a connection (it cost 64 KiB or more), also after a few more lines
// sent one piece at a time, each leaving the start of the next.
func TestIdleConnKeepsNoInboundBurst(t *testing.T) {
	forTransports(t, func(t *testing.T, tr transport) {
		srv := tr.start(t, func(c *reactortest.Config) { c.Server.Loops = 2 })
		holder := srv.Connect(t)
		mustGrant(t, holder.Do("l", "hot", "0 600"), rOK, 600)
		const n = 150
		const pings = 60 << 10 / 11 // "ping\n_\n_\n" plus slack: under the 64 KiB cap
		burst := req("l", "hot", "1") + strings.Repeat(req("ping", "_", "_"), pings)
		perConn := map[string]int64{}
		for _, tail := range []string{"", "pi"} {
			base := settledHeap()
			conns := make([]*reactortest.Conn, n)
			for i := range conns {
				conns[i] = srv.Connect(t)
				conns[i].Send(burst + tail)
			}
			for _, c := range conns {
				require.Equal(t, rTimeout, c.Line())
				for range pings {
					require.Equal(t, rOK, c.Line())
				}
			}
			if tail != "" {
				for _, piece := range []string{"ng\n", "_\n", "_\npi"} {
					for _, c := range conns {
						c.Send(piece)
					}
				}
				for _, c := range conns {
					require.Equal(t, rOK, c.Line())
				}
			}
			time.Sleep(50 * time.Millisecond)
			perConn[tail] = (int64(settledHeap()) - int64(base)) / n
			t.Logf("tail %q: heap in use %+d B a connection", tail, perConn[tail])
			require.EqualValues(t, n+1, srv.Connections())
			for _, c := range conns {
				_ = c.Close()
			}
			waitConnections(t, srv, 1)
		}
		require.Less(t, perConn["pi"]-perConn[""], int64(16<<10),
			"an idle connection with 2 bytes of a request unread keeps %d B, one with none %d B",
			perConn["pi"], perConn[""])
	})
}

// settledHeap is the heap in use after two collections: the second frees
// what sync.Pools kept from the first.
func settledHeap() uint64 {
	runtime.GC()
	return heapInuse()
}
