package reactor_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// A conformance walk of PROTOCOL.md over raw TCP, for the odd
// but legal (and the illegal) inputs the other tests leave out.

// TestConformanceVerbsAreExact: PROTOCOL.md "Commands": the verbs are the
// table's, byte for byte. Another case, a space around the verb, a NUL
// after it, or a verb split by a space is an unknown command: "Any parse
// error (unknown command, ...) answers `error` and the connection **stays
// open**", and the request is skipped whole (three lines), so the stream
// stays in step.
func TestConformanceVerbsAreExact(t *testing.T) {
	srv := reactortest.Start(t)
	c := srv.Dial(t)
	for _, verb := range []string{
		"L", "PING", "Ping", "STATS", "Sl", "AUTH",
		"l ", " l", "l\t", "\tl", "l\x00", "\x00l", "s l", "ll", "lock", "p ing",
		"\xef\xbb\xbfl", // a UTF-8 byte-order mark before the verb
	} {
		require.Equal(t, rError, c.Do(verb, "k", "0"), "verb %q", verb)
	}
	// In step: the next request is read from its own first line.
	mustGrant(t, c.Do("l", "k", "0"), rOK, 33)
	require.Equal(t, rOK, c.Do("ping", "_", "_"))
}

// TestConformanceKeysAreOpaqueBytes: PROTOCOL.md "Framing": "keys are opaque
// bytes but must be non-empty and contain no space, tab or `\r`". Any
// other byte (NUL, DEL, control bytes, '\v', '\f', bytes >= 0x80, invalid
// UTF-8) makes a key of its own, distinct from every other byte string,
// including in the other namespace; a key line that is only the CR of a
// CRLF is empty.
func TestConformanceKeysAreOpaqueBytes(t *testing.T) {
	srv := reactortest.Start(t)
	a, b := srv.Dial(t), srv.Dial(t)
	keys := []string{
		"a", "a\x00", "\x00a", "a\x00b", "a\x7f", "a\x01", "a\v", "a\f",
		"\xff", "\xfe", "\xc3\xa9", "e\xcc\x81", // é precomposed, and e + combining accent
		"\xe2\x80\xa8", // U+2028, a line separator to JSON-in-JS
		"_", "-", strings.Repeat("\xff", 256),
	}
	toks := make([]string, len(keys))
	for i, k := range keys {
		toks[i] = mustGrant(t, a.Do("l", k, "0"), rOK, 33)
	}
	for _, k := range keys {
		require.Equal(t, rTimeout, b.Do("l", k, "0"), "key %q is held", k)
		mustGrant(t, b.Do("sl", k, "0 1"), rOK, 33) // the other namespace
	}
	// The stats reply is one line of valid JSON listing every key once.
	line := a.Do("stats", "_", "_")
	body, ok := strings.CutPrefix(line, rOK+" ")
	require.True(t, ok, line)
	var s statsReply
	dec := json.NewDecoder(bytes.NewReader([]byte(body)))
	dec.DisallowUnknownFields()
	require.NoError(t, dec.Decode(&s))
	require.Len(t, s.Locks, len(keys))
	require.Len(t, s.Semaphores, len(keys))
	for i, k := range keys {
		require.Equal(t, rOK, b.Do("r", k, toks[i]), "key %q", k)
	}
	// Empty after stripping the CR; a CR left inside the key.
	require.Equal(t, rError, a.Do("l", "\r", "0"))
	require.Equal(t, rError, a.Do("l", "k\r\r", "0"))
	require.Equal(t, rError, a.Do("l", "\rk", "0"))
	require.Equal(t, rError, a.Do("l", " k", "0"))
	require.Equal(t, rError, a.Do("l", "k\t", "0"))
	require.Equal(t, rOK, a.Do("ping", "_", "_"))
}

// TestConformanceNumericFieldForms: PROTOCOL.md "Framing": "Integers are
// decimal, optional leading `+`, no fractions." Leading zeros are plain
// decimal (and the reply gives the lease in canonical form); anything that
// is not [+]digits is a parse error that keeps the connection.
func TestConformanceNumericFieldForms(t *testing.T) {
	srv := reactortest.Start(t)
	c := srv.Dial(t)
	mustGrant(t, c.Do("l", "z1", "000 007"), rOK, 7)
	mustGrant(t, c.Do("l", "z2", "+0 +0007"), rOK, 7)
	mustGrant(t, c.Do("l", "z3", "0 "+strings.Repeat("0", 200)+"9"), rOK, 9) // long, small
	mustGrant(t, c.Do("sl", "z4", "0 +02 +03"), rOK, 3)
	mustGrant(t, c.Do("sl", "z4", "0 2"), rOK, 33) // limit 02 is limit 2
	mustGrant(t, c.Do("e", "z5", "+010"), "acquired", 10)
	mustGrant(t, c.Do("se", "z6", "001 0012"), "acquired", 12)
	for _, arg := range []string{
		"-0", "+", "++1", "+-1", "-+1", "1+", "0+1", "1-", "1_0", "1,0", "1.", ".1", "1e1",
		"0 -0", "0 +", "0 1.0", "0 5s",
		"\u0661",            // ARABIC-INDIC DIGIT ONE
		"\uff11",            // FULLWIDTH DIGIT ONE
		"0\x005", "0 5\x00", // NUL inside or after a field
		"0,5", "0;5",
	} {
		require.Equal(t, rError, c.Do("l", "bad", arg), "argument %q", arg)
	}
	for _, arg := range []string{"+0 -1", "0 +0", "0 0", "+0 +00"} {
		require.Equal(t, rError, c.Do("sl", "bads", arg), "sl argument %q", arg)
	}
	require.Equal(t, rOK, c.Do("ping", "_", "_"))
}

// TestConformanceTwoPhaseStateDroppedAtCloseWithoutAutoRelease: PROTOCOL.md
// "Connections": with auto-release off "held locks stay until their lease
// runs out. Either way its waiters and two-phase state are dropped **at
// once**". A queued `e` whose grant reached it before its `w` (the client
// never saw that token) is two-phase state: the next waiter gets the lock
// at the close, not at the end of a lease nobody can renew or release.
func TestConformanceTwoPhaseStateDroppedAtCloseWithoutAutoRelease(t *testing.T) {
	srv := reactortest.Start(t, func(c *reactortest.Config) { c.NoAutoRelease = true })
	obs, h, q, next := srv.Dial(t), srv.Dial(t), srv.Dial(t), srv.Dial(t)
	htok := lock(t, h, "tp")
	require.Equal(t, rQueued, q.Do("e", "tp", "60"))
	next.Request("l", "tp", "30")
	waitLockWaiters(t, obs, "tp", 2)
	require.Equal(t, rOK, h.Do("r", "tp", htok)) // q's e is granted, q not told
	waitLockWaiters(t, obs, "tp", 1)
	start := time.Now()
	require.NoError(t, q.Close())
	mustGrant(t, next.Line(), rOK, 33)
	require.Less(t, time.Since(start), 5*time.Second)

	// The same for a semaphore slot.
	sh := mustGrant(t, h.Do("sl", "tps", "0 1"), rOK, 33)
	q2 := srv.Dial(t)
	require.Equal(t, rQueued, q2.Do("se", "tps", "1 60"))
	next.Request("sl", "tps", "30 1")
	waitStats(t, obs, "tps waiters == 2", func(s statsReply) bool {
		l, ok := s.sem("tps")
		return ok && l.Waiters == 2
	})
	require.Equal(t, rOK, h.Do("sr", "tps", sh))
	require.NoError(t, q2.Close())
	mustGrant(t, next.Line(), rOK, 33)
}

// TestConformanceBearerReleaseBeforeWait: PROTOCOL.md: "Tokens are bearer
// credentials: any connection that presents the token may release or renew
// it", and `w` never "answers `ok` with a dead token". A fast-path
// `acquired` released by another connection before the `w` is no longer
// held: the `w` must not answer `ok` with it, and the key is free.
func TestConformanceBearerReleaseBeforeWait(t *testing.T) {
	srv := reactortest.Start(t)
	a, b := srv.Dial(t), srv.Dial(t)
	tok := mustGrant(t, a.Do("e", "br", ""), "acquired", 33)
	require.Equal(t, rOK, b.Do("r", "br", tok))
	reply := a.Do("w", "br", "0")
	require.Contains(t, []string{rErrNotEnqueued, rErrLeaseExpired}, reply, "w after the grant was released")
	btok := lock(t, b, "br")
	require.Equal(t, rOK, b.Do("r", "br", btok))
	// The connection may start a new two-phase acquire afterwards.
	tok2 := mustGrant(t, a.Do("e", "br", "5"), "acquired", 5)
	require.Equal(t, "ok "+tok2+" 5", a.Do("w", "br", "0"))
}
