package client

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestErrorMapping: every status in PROTOCOL.md maps to its
// sentinel for every request that can get it, through the Conn methods,
// the dflockd-compatible functions and Lock; none of them breaks the
// connection. A scripted server answers each request with the current
// reply.
func TestErrorMapping(t *testing.T) {
	var reply atomic.Value
	addr := scriptedServer(t, func(int, string) (string, time.Duration) { return reply.Load().(string) + "\n", 0 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(addr)
	require.NoError(t, err)
	defer func() { _ = c.Close() }()
	tok := "0000000000000001000000000000000a"
	held := Grant{Key: "k", Token: tok}
	ops := map[string]func() error{
		"l":  func() error { _, err := c.Acquire(ctx, "k", time.Second); return err },
		"sl": func() error { _, err := c.Acquire(ctx, "k", time.Second, WithLimit(2)); return err },
		"e":  func() error { _, err := c.Enqueue(ctx, "k"); return err },
		"se": func() error { _, err := c.Enqueue(ctx, "k", WithLimit(2)); return err },
		"w":  func() error { _, err := c.Wait(ctx, Grant{Key: "k"}, time.Second); return err },
		"sw": func() error { _, err := c.Wait(ctx, Grant{Key: "k", Limit: 2}, time.Second); return err },
		"r":  func() error { return c.Release(ctx, held) },
		"n":  func() error { _, err := c.Renew(ctx, held); return err },
		"auth": func() error {
			return c.Auth(ctx, "s")
		},
		"ping":   func() error { return c.Ping(ctx) },
		"cl":     func() error { _, _, err := Acquire(c, "k", time.Second); return err },
		"cw":     func() error { _, _, err := Wait(c, "k", time.Second); return err },
		"csl":    func() error { _, _, err := SemAcquire(c, "k", time.Second, 2); return err },
		"cse":    func() error { _, _, _, err := SemEnqueue(c, "k", 2); return err },
		"csr":    func() error { return SemRelease(c, "k", tok) },
		"csn":    func() error { _, err := SemRenew(c, "k", tok); return err },
		"stats":  func() error { _, err := c.Stats(ctx); return err },
		"cauth":  func() error { return Authenticate(c, "s") },
		"crenew": func() error { _, err := Renew(c, "k", tok); return err },
	}
	status := map[string]error{
		"timeout":                ErrTimeout,
		"error_max_locks":        ErrMaxLocks,
		"error_max_waiters":      ErrMaxWaiters,
		"error_limit_mismatch":   ErrLimitMismatch,
		"error_not_enqueued":     ErrNotQueued,
		"error_already_enqueued": ErrAlreadyQueued,
		"error_lease_expired":    ErrLeaseExpired,
		"error_auth":             ErrAuth,
		"error_draining":         ErrDraining,
		"error":                  ErrServer,
	}
	for s, want := range status {
		reply.Store(s)
		for name, op := range ops {
			err := op()
			require.ErrorIs(t, err, want, "%s answered %q", name, s)
			require.NoError(t, c.Err(), "%s answered %q broke the connection", name, s)
		}
	}
	// Replies of the wrong shape for the request are ErrServer, not success.
	for _, s := range []string{"queued", "ok 30", "acquired " + tok + " 30"} {
		reply.Store(s)
		for _, name := range []string{"l", "w", "r", "auth"} {
			err := ops[name]()
			require.ErrorIs(t, err, ErrServer, "%s answered %q", name, s)
		}
	}
	require.True(t, errors.Is(ErrDraining, ErrServer))

	// Lock level: timeout is (false, nil); other statuses come back as is.
	l := &Lock{Key: "k", Servers: []string{addr}, Heartbeat: -1}
	reply.Store("timeout")
	ok, err := l.Acquire(ctx)
	require.NoError(t, err)
	require.False(t, ok)
	for s, want := range status {
		if s == "timeout" {
			continue
		}
		reply.Store(s)
		ok, err := l.Acquire(ctx)
		require.False(t, ok)
		require.ErrorIs(t, err, want, "Lock.Acquire answered %q", s)
		_, err = l.Enqueue(ctx)
		require.ErrorIs(t, err, want, "Lock.Enqueue answered %q", s)
	}
	reply.Store("queued")
	st, err := l.Enqueue(ctx)
	require.NoError(t, err)
	require.Equal(t, StatusQueued, st)
	reply.Store("error_lease_expired")
	ok, err = l.Wait(ctx, time.Second)
	require.False(t, ok)
	require.ErrorIs(t, err, ErrLeaseExpired)
	reply.Store("queued")
	_, err = l.Enqueue(ctx)
	require.NoError(t, err)
	reply.Store("timeout")
	ok, err = l.Wait(ctx, time.Second)
	require.NoError(t, err)
	require.False(t, ok)
	_ = l.Close()
}
