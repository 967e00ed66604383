package reactor_test

import (
	"bufio"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// TestFloodCloseKeepsEarlierReplies: a client pipelines, in one
// write, a lock on a free key (granted at once), a ping, a lock that
// blocks, and more than the inbound cap behind it. README: past the cap
// "the connection is closed without a reply" -- for the blocked request;
// the requests before it were executed and answered, and their replies
// must still reach the client before the close (as on the TLS port, and on
// the plain port before 7f93238, where the close came on a later callback,
// after flush).
//
// With --auto-release-on-disconnect off this matters: the grant stays
// held after the close until its lease ends, and the token (a bearer
// credential: any connection may release with it) is the only way the
// client can release it. The plain port closed (until fixed) in serve() right after
// handle() (gnet.go: `if g.parked && c.InboundBuffered() > InboundCap
// { return gnet.Close }`), before g.flush: the grant and the ping's ok in
// g.out are dropped, and the key is orphaned for its lease.
func TestFloodCloseKeepsEarlierReplies(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		const inboundCap = 16 << 10
		srv := tr.start(t, func(c *reactortest.Config) {
			c.Server.InboundCap = inboundCap
			c.NoAutoRelease = true
		})
		obs := srv.Connect(t)
		a := srv.Connect(t)
		lock(t, a, "fk-busy")
		b := dialRaw(t, tr, srv)
		burst := []byte(req("l", "fk-free", "0") + req("ping", "_", "_") + req("l", "fk-busy", "60"))
		for len(burst) < inboundCap+inboundCap/2 {
			burst = append(burst, req("ping", "_", "_")...)
		}
		_, err := b.Write(burst)
		require.NoError(t, err)
		require.NoError(t, b.SetReadDeadline(time.Now().Add(10*time.Second)))
		r := bufio.NewReader(b)
		var lines []string
		var rerr error
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				rerr = err
				break
			}
			lines = append(lines, line[:len(line)-1])
		}
		t.Logf("%s: replies before the close: %q (%v)", tr.name, lines, rerr)
		require.False(t, isTimeout(rerr), "not closed")
		require.True(t, errors.Is(rerr, io.EOF) || rerr != nil)
		require.Len(t, lines, 2, "the grant of fk-free and the ping's ok, sent before the request that blocked, were not delivered")
		tok := mustGrant(t, lines[0], rOK, 33)
		require.Equal(t, rOK, lines[1])
		// Auto-release off: fk-free stays held; the token releases it.
		require.Equal(t, rOK, obs.Do("r", "fk-free", tok))
	})
}
