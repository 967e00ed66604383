package client_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/client"
	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// Compatibility with programs written against dflockd's own Go client
// (found by running its tests and API against this package).

// TestFenceFromToken: the later dflockd clients' name for FenceOf, with an
// error for a string that is not a token.
func TestFenceFromToken(t *testing.T) {
	for tok, want := range map[string]uint64{
		"0000000000000001aaaaaaaaaaaaaaaa": 1,
		"00c0ffee00000000000000000000000f": 0x00c0ffee00000000,
		"ffffffffffffffff0123456789abcdef": ^uint64(0),
	} {
		f, err := client.FenceFromToken(tok)
		require.NoError(t, err, tok)
		require.Equal(t, want, f, tok)
		require.Equal(t, client.FenceOf(tok), f, tok)
	}
	for _, bad := range []string{"", "short", strings.Repeat("0", 31), strings.Repeat("0", 33),
		strings.Repeat("g", 32), strings.Repeat("A", 32), "0000000000000001aaaaaaaaaaaaaaa "} {
		f, err := client.FenceFromToken(bad)
		require.ErrorIs(t, err, client.ErrInvalid, "%q", bad)
		require.Zero(t, f, "%q", bad)
	}

	// Tokens of successive grants of a key from this server are ordered.
	srv := reactortest.Start(t)
	c := dial(t, srv.Addr)
	var last uint64
	for i := range 3 {
		tok, _, err := client.Acquire(c, "fence-from-token", time.Second)
		require.NoError(t, err)
		f, err := client.FenceFromToken(tok)
		require.NoError(t, err)
		require.Greater(t, f, last, "grant %d", i)
		last = f
		require.NoError(t, client.Release(c, "fence-from-token", tok))
	}
}

// TestClosedConnMatchesNetErrClosed: dflockd's client returned the net
// package's error for a call on a connection it had closed, and programs
// test for it with errors.Is(err, net.ErrClosed). A connection the server
// closed does not match it (the cause is the I/O error).
func TestClosedConnMatchesNetErrClosed(t *testing.T) {
	srv := reactortest.Start(t)
	c, err := client.Dial(srv.Addr)
	require.NoError(t, err)
	require.NoError(t, c.Close())
	_, _, err = client.Acquire(c, "closed-conn", time.Second)
	require.ErrorIs(t, err, client.ErrClosed)
	require.ErrorIs(t, err, net.ErrClosed)
	require.ErrorIs(t, c.Err(), net.ErrClosed)

	// The server closes the connection: ErrClosed with the cause, and not
	// net.ErrClosed, which means "you closed it". (Lock calls ended by
	// Close, Release or a new Acquire: local_close_errors_test.go.)
	gone, err := client.Dial(hangUpAfterRequest(t))
	require.NoError(t, err)
	defer func() { _ = gone.Close() }()
	_, _, err = client.Acquire(gone, "gone", time.Second)
	require.ErrorIs(t, err, client.ErrClosed)
	require.False(t, errors.Is(err, net.ErrClosed), "%v", err)
}

// TestRejectedArgumentsMatchErrServer: an argument the server would answer
// `error` to is refused before sending (ErrInvalid) and, as dflockd's
// client (which sent it) reported, also matches ErrServer. A shard
// function out of range is the client's own error: ErrInvalid only.
func TestRejectedArgumentsMatchErrServer(t *testing.T) {
	srv := reactortest.Start(t)
	c := dial(t, srv.Addr)
	for name, call := range map[string]func() error{
		"empty key":        func() error { _, _, err := client.Acquire(c, "", time.Second); return err },
		"key with a space": func() error { _, _, err := client.Acquire(c, "a b", time.Second); return err },
		"key too long":     func() error { _, _, err := client.Acquire(c, strings.Repeat("k", 300), time.Second); return err },
		"sem limit 0":      func() error { _, _, err := client.SemAcquire(c, "s", time.Second, 0); return err },
		"sem enqueue -1":   func() error { _, _, _, err := client.SemEnqueue(c, "s", -1); return err },
		"bad token":        func() error { return client.Release(c, "k", "nope") },
	} {
		err := call()
		require.ErrorIs(t, err, client.ErrInvalid, name)
		require.ErrorIs(t, err, client.ErrServer, name)
	}
	// Nothing was sent: the connection still works.
	tok, _, err := client.Acquire(c, "after-rejects", time.Second)
	require.NoError(t, err)
	require.NoError(t, client.Release(c, "after-rejects", tok))

	l := &client.Lock{Key: "k", Servers: []string{srv.Addr}, ShardFunc: func(string, int) int { return 5 }}
	_, err = l.Acquire(context.Background())
	require.ErrorIs(t, err, client.ErrInvalid)
	require.False(t, errors.Is(err, client.ErrServer), "%v", err)
}

// TestRenewJitterKeepsTheLock: with the largest jitter (renewals up to
// 99% early) and the default, short leases are held well past their end.
func TestRenewJitterKeepsTheLock(t *testing.T) {
	srv := reactortest.Start(t)
	for _, j := range []float64{0, 0.99, -1, 1} {
		l := &client.Lock{Key: "jitter", Servers: []string{srv.Addr}, LeaseTTL: 1, RenewJitter: j}
		ok, err := l.Acquire(context.Background())
		require.NoError(t, err)
		require.True(t, ok)
		tok := l.Token()
		time.Sleep(1500 * time.Millisecond)
		require.Equal(t, tok, l.Token(), "jitter %v", j)
		st, held := lockStat(srv, "jitter")
		require.True(t, held)
		require.Greater(t, st.LeaseExpiresInS, 0.0)
		require.NoError(t, l.Release(context.Background()), "jitter %v", j)
	}
	s := &client.Semaphore{Key: "jitter-sem", Limit: 2, Servers: []string{srv.Addr}, LeaseTTL: 1, RenewJitter: 0.5}
	ok, err := s.Acquire(context.Background())
	require.NoError(t, err)
	require.True(t, ok)
	time.Sleep(1500 * time.Millisecond)
	require.NotEmpty(t, s.Token())
	require.NoError(t, s.Release(context.Background()))
}
