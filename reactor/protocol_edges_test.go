package reactor_test

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Black-box probes of PROTOCOL.md edges no other test pins down.

// TestArgumentsSplitOnAnyASCIIWhitespace: PROTOCOL.md "Framing": "Arguments
// on the third line are separated by whitespace (extra spaces are fine)."
// A vertical tab or form feed separates them too, as dflockd's
// strings.Fields splits them.
func TestArgumentsSplitOnAnyASCIIWhitespace(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		srv := tr.start(t)
		c := srv.Connect(t)
		mustGrant(t, c.Do("l", "ws1", "0\v5"), rOK, 5)
		mustGrant(t, c.Do("l", "ws2", "0\f5"), rOK, 5)
	})
}

// TestFramingBoundaries: PROTOCOL.md "Framing": the 256-byte limit
// counts a '\r' (256 bytes + '\r' is too long, 255 + '\r' is fine) also when
// the line arrives in pieces; tabs and several spaces separate arguments,
// '+' is allowed on every integer, an empty or blank argument line is fine
// for `e`.
func TestFramingBoundaries(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		srv := tr.start(t)
		c := srv.Connect(t)
		key := strings.Repeat("s", 255)
		c.Send("l\n" + key + "\r") // 256 bytes with the CR: not too long
		c.NoReply(100 * time.Millisecond)
		c.Send("\n0\r")
		c.NoReply(50 * time.Millisecond)
		c.Send("\n")
		tok := mustGrant(t, c.Line(), rOK, 33)
		c.Send("r\n" + key + "\n" + tok + strings.Repeat(" ", 255-len(tok)) + "\r")
		c.NoReply(50 * time.Millisecond)
		c.Send("\n")
		require.Equal(t, rOK, c.Line())

		d := srv.Connect(t)
		d.Send("l\n" + strings.Repeat("s", 256))
		d.NoReply(100 * time.Millisecond)
		d.Send("\r") // now 257 bytes without a newline
		expectClosed(t, d, rError, 5*time.Second)

		mustGrant(t, c.Do("l", "tab", "\t0 \t +5\t"), rOK, 5)
		mustGrant(t, c.Do("sl", "tabs", "+0\t\t+2  +6"), rOK, 6)
		c.Send("e\nblank\n\t \r\n")
		mustGrant(t, c.Line(), "acquired", 33)
		mustGrant(t, c.Do("se", "blank", "+1\t+4"), "acquired", 4)
	})
}

// TestTwoPhaseLeaseRestartsAtWait: PROTOCOL.md "Fairness, leases,
// two-phase": "when it answers `ok`, the lease restarts from that moment
// (full TTL)", for a fast-path `acquired` and for a grant that reached the
// queued caller before its `w`.
func TestTwoPhaseLeaseRestartsAtWait(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		srv := tr.start(t)
		obs, a, b := srv.Connect(t), srv.Connect(t), srv.Connect(t)
		ftok := mustGrant(t, b.Do("e", "fp", "2"), "acquired", 2)
		atok := lock(t, a, "qg")
		require.Equal(t, rQueued, b.Do("e", "qg", "2"))
		require.Equal(t, rOK, a.Do("r", "qg", atok)) // b's lease starts now
		time.Sleep(1500 * time.Millisecond)
		require.Equal(t, "ok "+ftok+" 2", b.Do("w", "fp", "0"))
		mustGrant(t, b.Do("w", "qg", "0"), rOK, 2)
		s := stats(t, obs)
		for _, key := range []string{"fp", "qg"} {
			l, ok := s.lock(key)
			require.True(t, ok, "%s held: %+v", key, s)
			require.Greater(t, l.LeaseExpiresInS, 1.5, "%s: the lease restarted at w", key)
		}
		// Past the original leases, both are still held.
		time.Sleep(800 * time.Millisecond)
		require.Equal(t, rTimeout, a.Do("l", "fp", "0"))
		require.Equal(t, rTimeout, a.Do("l", "qg", "0"))
	})
}

var reviewProtoGrantRe = regexp.MustCompile(`^ok [0-9a-f]{32} [1-9][0-9]*$`)

// TestHugeTimeoutsAndLeases: PROTOCOL.md "Commands": timeouts and
// leases are whole seconds with no upper bound given; the largest int64
// must neither fire at once (wheel overflow) nor break waiting.
func TestHugeTimeoutsAndLeases(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		srv := tr.start(t)
		obs, a, b := srv.Connect(t), srv.Connect(t), srv.Connect(t)
		const max = "9223372036854775807"
		line := a.Do("l", "ht", "0 "+max)
		require.Regexp(t, reviewProtoGrantRe, line)
		tok := strings.Fields(line)[1]
		b.Request("l", "ht", max+" +"+max)
		waitLockWaiters(t, obs, "ht", 1)
		b.NoReply(100 * time.Millisecond)
		require.Regexp(t, `^ok [1-9][0-9]*$`, a.Do("n", "ht", tok+" +"+max))
		require.Equal(t, rTimeout, obs.Do("l", "ht", "0"), "not expired at once")
		require.Equal(t, rOK, a.Do("r", "ht", tok))
		line = b.Line()
		require.Regexp(t, reviewProtoGrantRe, line)
		btok := strings.Fields(line)[1]
		require.Equal(t, rQueued, a.Do("e", "ht", max))
		a.Request("w", "ht", max)
		a.NoReply(100 * time.Millisecond)
		require.Equal(t, rOK, b.Do("r", "ht", btok))
		require.Regexp(t, reviewProtoGrantRe, a.Line())
		// A semaphore limit of the largest int64.
		require.Regexp(t, reviewProtoGrantRe, a.Do("sl", "hs", "0 "+max))
		require.Equal(t, rErrLimitMismatch, b.Do("sl", "hs", "0 "+max[:len(max)-1]))
		require.Equal(t, rError, b.Do("sl", "hs", "0 9223372036854775808"))
	})
}
