package reactor_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// behindBlocked is exactly n bytes of pings (n >= 40): pings of key "_"
// (10 bytes) and of key "ab" (11 bytes). It returns the bytes and how many
// pings they hold.
func behindBlocked(n int) ([]byte, int) {
	var b strings.Builder
	long := (n % 10)
	k := 0
	for range long {
		b.WriteString(req("ping", "ab", "_"))
		k++
	}
	for b.Len() < n {
		b.WriteString(req("ping", "_", "_"))
		k++
	}
	return []byte(b.String()), k
}

// TestFloodBehindBlockingBoundary: exactly InboundCap bytes behind
// a request that blocks (lock or two-phase wait) are kept and answered
// once it is granted; more closes the connection at once, also with
// nothing more arriving.
func TestFloodBehindBlockingBoundary(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		const inboundCap = 16 << 10
		for _, two := range []bool{false, true} {
			// One byte past the cap on the plain port; on the TLS port the
			// reader may have read it all before the request parks, and
			// checks again only on its next read (up to the cap plus its
			// slack of 3*(MaxLineLen+1) = 771 bytes is then kept): 1 KiB.
			over := 1
			if tr.tls {
				over = 1024
			}
			for _, extra := range []int{0, over} {
				srv := tr.start(t, func(c *reactortest.Config) { c.Server.InboundCap = inboundCap })
				obs := srv.Connect(t)
				a := srv.Connect(t)
				tok := lock(t, a, "bb")
				b := dialRaw(t, tr, srv)
				var head string
				if two {
					head = req("e", "bb", "") + req("w", "bb", "30")
				} else {
					head = req("l", "bb", "30")
				}
				behind, k := behindBlocked(inboundCap + extra)
				_, err := b.Write(append([]byte(head), behind...))
				require.NoError(t, err)
				if extra > 0 {
					require.NoError(t, b.SetReadDeadline(time.Now().Add(5*time.Second)))
					buf := make([]byte, 64)
					var got strings.Builder
					var rerr error
					for rerr == nil {
						var n int
						n, rerr = b.Read(buf)
						got.Write(buf[:n])
					}
					require.False(t, isTimeout(rerr), "two=%v: %d bytes behind a blocked request (cap %d) were kept", two, inboundCap+extra, inboundCap)
					// (What was answered before the blocked request: see
					// TestFloodCloseKeepsEarlierReplies.)
					require.NotContains(t, got.String(), rOK)
					waitLockWaiters(t, obs, "bb", 0)
					continue
				}
				waitLockWaiters(t, obs, "bb", 1)
				time.Sleep(100 * time.Millisecond) // the cap is not applied later either
				require.Equal(t, rOK, a.Do("r", "bb", tok))
				require.NoError(t, b.SetReadDeadline(time.Now().Add(5*time.Second)))
				want := k + 1 // the grant, then the pings
				if two {
					want++ // queued first
				}
				buf := make([]byte, 0, 1<<16)
				tmp := make([]byte, 4096)
				lines := 0
				for lines < want {
					n, err := b.Read(tmp)
					require.NoError(t, err, "two=%v: exactly the cap behind a blocked request: closed after %d lines", two, lines)
					buf = append(buf, tmp[:n]...)
					lines = strings.Count(string(buf), "\n")
				}
				all := strings.Split(strings.TrimSuffix(string(buf), "\n"), "\n")
				if two {
					require.Equal(t, rQueued, all[0])
					all = all[1:]
				}
				mustGrant(t, all[0], rOK, 33)
				require.Len(t, all, k+1)
				for _, l := range all[1:] {
					require.Equal(t, rOK, l)
				}
			}
		}
	})
}
