package reactor_test

import (
	"bufio"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// A half-close (the client shuts down its sending side, as `printf … |
// nc -N` does) is not a disconnect for the requests already sent: every
// complete one is served and answered, then the server closes. Only a
// request that blocks counts it as a disconnect (TestHalfCloseWhileParked).

// halfClose shuts down c's sending side.
func halfClose(t *testing.T, c net.Conn) {
	t.Helper()
	cw, ok := c.(interface{ CloseWrite() error })
	require.True(t, ok, "%T has no CloseWrite", c)
	require.NoError(t, cw.CloseWrite())
}

// readAll reads reply lines until the server closes c (or d passes).
func readAll(t *testing.T, c net.Conn, d time.Duration) (lines []string, closed bool) {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(d)))
	r := bufio.NewReaderSize(c, 1<<20)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return lines, err == io.EOF
		}
		lines = append(lines, strings.TrimSuffix(line, "\n"))
	}
}

// Requests held back behind the reply cap when the FIN arrives are still
// served: here a release after ~280 KB of stats replies (the lock was lost
// for a whole lease before: gnet closed on EOF with them unread).
func TestHalfCloseAnswersBufferedRequests(t *testing.T) {
	forTransports(t, func(t *testing.T, tr transport) {
		srv := tr.start(t)
		holder := srv.Connect(t)
		holdKeys(t, holder, 150) // stats replies of ~17 KB
		tok := lock(t, holder, "hc-release")

		c := dialRaw(t, tr, srv)
		var b strings.Builder
		const nStats = 16 // > 4x the 64 KiB reply cap
		for range nStats {
			b.WriteString(req("stats", "_", "_"))
		}
		b.WriteString(req("r", "hc-release", tok))
		_, err := c.Write([]byte(b.String()))
		require.NoError(t, err)
		halfClose(t, c)

		replies, closed := readAll(t, c, 10*time.Second)
		require.True(t, closed, "the server closes once all is answered")
		require.Len(t, replies, nStats+1)
		require.Equal(t, rOK, replies[nStats])
		mustGrant(t, srv.Connect(t).Do("l", "hc-release", "0"), rOK, 33)
	})
}

// The complete requests before a trailing partial one are answered; the
// partial one gets nothing and the connection closes at once (no read
// timeout to wait out).
func TestHalfCloseIncompleteTail(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		srv := tr.start(t)
		c := dialRaw(t, tr, srv)
		_, err := c.Write([]byte(req("ping", "_", "_") + req("l", "tail", "0") + "l\ntail2\n"))
		require.NoError(t, err)
		start := time.Now()
		halfClose(t, c)
		replies, closed := readAll(t, c, 10*time.Second)
		require.True(t, closed)
		require.Less(t, time.Since(start), 5*time.Second)
		require.Len(t, replies, 2, "%q", replies)
		require.Equal(t, rOK, replies[0])
		mustGrant(t, replies[1], rOK, 33)
		// Auto-release: the connection is gone, so is its lock.
		mustGrant(t, srv.Connect(t).Do("l", "tail", "5"), rOK, 33)

		idle := dialRaw(t, tr, srv)
		halfClose(t, idle)
		replies, closed = readAll(t, idle, 5*time.Second)
		require.True(t, closed, "an idle half-closed connection closes")
		require.Empty(t, replies)
	})
}

// A request that blocks after a half-close ends the connection there: the
// replies before it arrive, it leaves the queue, and the requests after it
// are not served.
func TestHalfCloseBlockedMidPipeline(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		srv := tr.start(t)
		obs := srv.Connect(t)
		a := srv.Connect(t)
		held := lock(t, a, "hb-held")
		other := lock(t, a, "hb-other")

		c := dialRaw(t, tr, srv)
		_, err := c.Write([]byte(req("ping", "_", "_") + req("l", "hb-held", "60") + req("r", "hb-other", other)))
		require.NoError(t, err)
		waitLockWaiters(t, obs, "hb-held", 1)
		halfClose(t, c)
		replies, closed := readAll(t, c, 10*time.Second)
		require.True(t, closed)
		require.Equal(t, []string{rOK}, replies)
		waitLockWaiters(t, obs, "hb-held", 0)
		require.Equal(t, rTimeout, obs.Do("l", "hb-other", "0"), "the release after the blocked request was not served")
		require.Equal(t, rOK, a.Do("r", "hb-held", held))
	})
}

// A half-closed client that does not read its replies is still bound by
// the write timeout.
func TestHalfCloseNotReading(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		srv := tr.start(t, func(c *reactortest.Config) { c.Server.WriteTimeout = 300 * time.Millisecond })
		holder := srv.Connect(t)
		holdKeys(t, holder, 150)
		c := dialRaw(t, tr, srv)
		if tc, ok := c.(*net.TCPConn); ok {
			require.NoError(t, tc.SetReadBuffer(4<<10))
		}
		_, err := c.Write([]byte(strings.Repeat(req("stats", "_", "_"), 200))) // ~3.4 MB of replies
		require.NoError(t, err)
		halfClose(t, c)
		waitConnections(t, srv.Server, 1)
	})
}

// TestHalfCloseRacingGrantIsAnswered: a parked request granted at the
// moment its connection half-closes is answered (the client can then
// release it), not dropped by the half-close: with auto-release off the
// grant used to stay held by nobody until its lease ended (a few rounds
// in a hundred). The release and the half-close race with small offsets.
func TestHalfCloseRacingGrantIsAnswered(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		srv := tr.start(t, func(c *reactortest.Config) { c.NoAutoRelease = true })
		h := srv.Connect(t)
		deadline := time.Now().Add(6 * time.Second)
		granted, rounds := 0, 0
		for i := 0; i < 200 && time.Now().Before(deadline); i++ {
			rounds++
			key := "hc-race-" + strconv.Itoa(i)
			tok := lock(t, h, key)
			c := dialRaw(t, tr, srv)
			_, err := c.Write([]byte(req("l", key, "10")))
			require.NoError(t, err)
			waitLockWaiters(t, h, key, 1)
			done := make(chan struct{})
			go func() {
				defer close(done)
				time.Sleep(time.Duration(i%5) * 20 * time.Microsecond)
				halfClose(t, c)
			}()
			require.Equal(t, rOK, h.Do("r", key, tok))
			<-done
			replies, closed := readAll(t, c, 5*time.Second)
			require.True(t, closed, "round %d: the server closes after the half-close", i)
			_ = c.Close()
			if len(replies) == 1 { // granted and told: the client releases it
				f := strings.Fields(replies[0])
				require.Len(t, f, 3, "round %d: %q", i, replies[0])
				require.Equal(t, rOK, h.Do("r", key, f[1]))
				granted++
			} else {
				require.Empty(t, replies, "round %d", i)
			}
			// Told (and released) or dropped: nobody holds it now.
			require.Equal(t, rOK, h.Do("r", key, lock(t, h, key)), "round %d", i)
		}
		t.Logf("%d rounds, %d granted before the half-close took effect", rounds, granted)
	})
}
