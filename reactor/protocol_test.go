package reactor_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Every command's replies, per PROTOCOL.md "Commands", over each transport.

func TestLockCommands(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		srv := tr.start(t)
		c := srv.Connect(t)
		other := srv.Connect(t)

		tok := mustGrant(t, c.Do("l", "k", "10"), rOK, 33)
		require.Len(t, tok, 32)
		// Try-lock on a held key answers at once; locks are not re-entrant.
		require.Equal(t, rTimeout, other.Do("l", "k", "0"))
		require.Equal(t, rTimeout, c.Do("l", "k", "0"))
		// Renew answers the TTL it applied: the default when none is given,
		// whatever the lease at acquire time.
		require.Equal(t, "ok 7", c.Do("n", "k", tok+" 7"))
		require.Equal(t, "ok 33", c.Do("n", "k", tok))
		// Tokens are bearer credentials: another connection may renew and
		// release.
		require.Equal(t, "ok 5", other.Do("n", "k", tok+" 5"))
		require.Equal(t, rOK, other.Do("r", "k", tok))
		require.Equal(t, rError, c.Do("r", "k", tok), "release twice")
		require.Equal(t, rError, c.Do("n", "k", tok), "renew a released token")

		// Custom lease, optional '+', extra spaces.
		tok2 := mustGrant(t, c.Do("l", "k", "  +3   +7  "), rOK, 7)
		require.NotEqual(t, tok, tok2)
		require.Greater(t, tok2, tok, "a later grant has a larger token")
		require.Equal(t, rError, c.Do("r", "k", tok), "an old token does not release a new grant")
		require.Equal(t, rError, c.Do("r", "nokey", tok2), "unknown key")
		require.Equal(t, rError, c.Do("n", "nokey", tok2), "unknown key")
		require.Equal(t, rError, c.Do("r", "k", strings.Repeat("0", 32)), "unknown token")
		require.Equal(t, rOK, c.Do("r", "k", tok2))

		require.Equal(t, rOK, c.Do("ping", "_", "_"))
		require.Equal(t, rOK, c.Do("ping", "", ""), "ping ignores its key and argument")
		require.Equal(t, rError, c.Do("auth", "_", "secret"), "auth on a server without a token")
		require.Equal(t, rOK, c.Do("ping", "_", "_"), "connection stays open after auth error")
	})
}

func TestSemaphoreCommands(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		srv := tr.start(t)
		a, b, c := srv.Connect(t), srv.Connect(t), srv.Connect(t)

		ta := mustGrant(t, a.Do("sl", "s", "10 2"), rOK, 33)
		tb := mustGrant(t, b.Do("sl", "s", "10 2 9"), rOK, 9)
		require.NotEqual(t, ta, tb)
		require.Equal(t, rTimeout, c.Do("sl", "s", "0 2"))
		require.Equal(t, rErrLimitMismatch, c.Do("sl", "s", "0 3"))
		require.Equal(t, rErrLimitMismatch, c.Do("se", "s", "1"))

		require.Equal(t, "ok 33", a.Do("sn", "s", ta))
		require.Equal(t, "ok 4", c.Do("sn", "s", tb+" 4"))
		require.Equal(t, rOK, c.Do("sr", "s", ta))
		require.Equal(t, rError, a.Do("sr", "s", ta))
		require.Equal(t, rError, a.Do("sn", "s", ta))
		tc := mustGrant(t, c.Do("sl", "s", "0 2"), rOK, 33)
		require.Equal(t, rOK, b.Do("sr", "s", tb))
		require.Equal(t, rOK, c.Do("sr", "s", tc))
		require.Equal(t, rError, c.Do("sr", "nokey", tc))
	})
}

func TestRenewExpiredToken(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		srv := tr.start(t)
		c := srv.Connect(t)
		tok := mustGrant(t, c.Do("l", "k", "0 1"), rOK, 1)
		stok := mustGrant(t, c.Do("sl", "k", "0 1 1"), rOK, 1)
		time.Sleep(1300 * time.Millisecond)
		// Expired locks are never resurrected.
		require.Equal(t, rError, c.Do("n", "k", tok))
		require.Equal(t, rError, c.Do("r", "k", tok))
		require.Equal(t, rError, c.Do("sn", "k", stok))
		require.Equal(t, rError, c.Do("sr", "k", stok))
		other := srv.Connect(t)
		lock(t, other, "k")
	})
}

func TestParseErrorsKeepConnection(t *testing.T) {
	tok := strings.Repeat("a", 32)
	cases := []struct{ name, raw string }{
		{"unknown command", req("x", "k", "1")},
		{"upper-case command", req("L", "k", "1")},
		{"empty command", req("", "k", "1")},
		{"empty key", req("l", "", "1")},
		{"key with space", req("l", "a b", "1")},
		{"key with tab", req("l", "a\tb", "1")},
		{"key with inner CR", req("l", "a\rb", "1")},
		{"negative timeout", req("l", "k", "-1")},
		{"fractional timeout", req("l", "k", "1.5")},
		{"hex timeout", req("l", "k", "0x10")},
		{"huge timeout", req("l", "k", "99999999999999999999")},
		{"zero lease", req("l", "k", "1 0")},
		{"negative lease", req("l", "k", "1 -5")},
		{"l without timeout", req("l", "k", "")},
		{"l with 3 args", req("l", "k", "1 2 3")},
		{"r empty token", req("r", "k", "")},
		{"r short token", req("r", "k", tok[:31])},
		{"r long token", req("r", "k", tok+"a")},
		{"r upper-case token", req("r", "k", strings.ToUpper(tok))},
		{"r non-hex token", req("r", "k", strings.Repeat("g", 32))},
		{"r extra arg", req("r", "k", tok+" 5")},
		{"n zero lease", req("n", "k", tok+" 0")},
		{"n extra arg", req("n", "k", tok+" 5 6")},
		{"e two args", req("e", "k", "1 2")},
		{"e zero lease", req("e", "k", "0")},
		{"w no timeout", req("w", "k", "")},
		{"w negative", req("w", "k", "-1")},
		{"sl no limit", req("sl", "k", "1")},
		{"sl zero limit", req("sl", "k", "1 0")},
		{"sl negative limit", req("sl", "k", "1 -2")},
		{"sl zero lease", req("sl", "k", "1 2 0")},
		{"sl 4 args", req("sl", "k", "1 2 3 4")},
		{"sr bad token", req("sr", "k", "zz")},
		{"sn bad token", req("sn", "k", "zz")},
		{"se no limit", req("se", "k", "")},
		{"se zero limit", req("se", "k", "0")},
		{"sw no timeout", req("sw", "k", "")},
	}
	eachTransport(t, func(t *testing.T, tr transport) {
		srv := tr.start(t)
		c := srv.Connect(t)
		obs := srv.Connect(t)
		for _, tc := range cases {
			c.Send(tc.raw)
			require.Equal(t, rError, c.Line(), tc.name)
			require.Equal(t, rOK, c.Do("ping", "_", "_"), "%s: connection must stay open", tc.name)
		}
		// None of them created state.
		s := stats(t, obs)
		require.Empty(t, s.Locks)
		require.Empty(t, s.Semaphores)
		require.Empty(t, s.IdleLocks)
		require.Empty(t, s.IdleSems)
	})
}

func TestLineLength(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		srv := tr.start(t)

		t.Run("256 bytes ok", func(t *testing.T) {
			c := srv.Connect(t)
			key := strings.Repeat("k", 256)
			tok := mustGrant(t, c.Do("l", key, "0"), rOK, 33)
			// 256 bytes on the argument line too.
			arg := tok + strings.Repeat(" ", 256-len(tok))
			require.Equal(t, rOK, c.Do("r", key, arg))
		})
		t.Run("257 bytes without newline", func(t *testing.T) {
			c := srv.Connect(t)
			// No newline ever follows: the server must not wait for one.
			c.Send(strings.Repeat("x", 257))
			expectClosed(t, c, rError, 5*time.Second)
		})
		t.Run("257 bytes on the key line", func(t *testing.T) {
			c := srv.Connect(t)
			c.Send("l\n" + strings.Repeat("k", 257))
			expectClosed(t, c, rError, 5*time.Second)
		})
		t.Run("256 bytes plus CR", func(t *testing.T) {
			c := srv.Connect(t)
			c.Send(req("l", strings.Repeat("k", 256)+"\r", "0"))
			expectClosed(t, c, rError, 5*time.Second)
		})
		t.Run("after good requests", func(t *testing.T) {
			c := srv.Connect(t)
			c.Send(req("ping", "_", "_") + req("ping", "_", "_") + "ping\n" + strings.Repeat("x", 300))
			require.Equal(t, rOK, c.Line())
			require.Equal(t, rOK, c.Line())
			expectClosed(t, c, rError, 5*time.Second)
		})
	})
}

func TestFraming(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		srv := tr.start(t)

		t.Run("pipelined", func(t *testing.T) {
			c := srv.Connect(t)
			var b strings.Builder
			const n = 300
			for i := range n {
				key := "p" + strings.Repeat("x", i%7) + string(rune('a'+i%26))
				switch i % 3 {
				case 0:
					b.WriteString(req("ping", "_", "_"))
				case 1:
					b.WriteString(req("sl", key, "0 1000 5"))
				case 2:
					b.WriteString(req("bogus", "k", "1"))
				}
			}
			c.Send(b.String())
			for i := range n {
				line := c.Line()
				switch i % 3 {
				case 0:
					require.Equal(t, rOK, line, "reply %d", i)
				case 1:
					mustGrant(t, line, rOK, 5)
				case 2:
					require.Equal(t, rError, line, "reply %d", i)
				}
			}
			c.NoReply(50 * time.Millisecond)
		})
		t.Run("byte by byte", func(t *testing.T) {
			c := srv.Connect(t)
			raw := req("l", "bb", "10 5") + req("ping", "_", "_")
			for i := range len(raw) {
				c.Send(raw[i : i+1])
				if i%4 == 0 {
					time.Sleep(time.Millisecond)
				}
			}
			tok := mustGrant(t, c.Line(), rOK, 5)
			require.Equal(t, rOK, c.Line())
			require.Equal(t, rOK, c.Do("r", "bb", tok))
		})
		t.Run("CRLF", func(t *testing.T) {
			c := srv.Connect(t)
			c.Send("l\r\ncrlf\r\n10 5\r\n")
			tok := mustGrant(t, c.Line(), rOK, 5)
			// The key is "crlf", without the CR.
			require.Equal(t, rOK, c.Do("r", "crlf", tok))
			c.Send("auth\r\n_\r\nx\r\nping\r\n_\r\n_\r\n")
			require.Equal(t, rError, c.Line())
			require.Equal(t, rOK, c.Line())
		})
		t.Run("incomplete request gets no reply", func(t *testing.T) {
			c := srv.Connect(t)
			c.Send("l\ninc\n")
			c.NoReply(300 * time.Millisecond)
			c.Send("1")
			c.NoReply(100 * time.Millisecond)
			c.Send("0\n")
			mustGrant(t, c.Line(), rOK, 33)
		})
		t.Run("a 4th line is the next command", func(t *testing.T) {
			c := srv.Connect(t)
			c.Send("ping\n_\n_\nping\n_\n")
			require.Equal(t, rOK, c.Line())
			c.NoReply(100 * time.Millisecond)
			c.Send("_\n")
			require.Equal(t, rOK, c.Line())
		})
	})
}
