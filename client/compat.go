package client

import (
	"context"
	"time"

	"github.com/lockreactor/dflockd/codec"
)

// This file is the low-level API of dflockd's Go client, with its names,
// signatures and results, so that code written against it ports by changing
// the import path. Each function is one request on c and waits without a
// context; new code should prefer the Conn methods, which take one.
// Timeouts are rounded up to whole seconds; lease TTLs are whole seconds.

// Enqueue statuses, as returned by Enqueue, SemEnqueue, Lock.Enqueue and
// Semaphore.Enqueue.
var (
	// StatusAcquired: the key was free and is now held.
	StatusAcquired = codec.CodeAcquired.String()
	// StatusQueued: the caller is in the key's queue; call Wait.
	StatusQueued = codec.CodeQueued.String()
)

// Authenticate sends the shared secret. It returns ErrAuth if the server
// rejects it.
func Authenticate(c *Conn, token string) error {
	return c.Auth(context.Background(), token)
}

// Acquire takes the lock key, waiting up to acquireTimeout on the server.
// It returns the token and the lease in seconds, or ErrTimeout.
func Acquire(c *Conn, key string, acquireTimeout time.Duration, opts ...Option) (token string, leaseTTL int, err error) {
	g, err := c.acquire(context.Background(), key, 0, acquireTimeout, collect(opts).leaseTTL)
	return g.Token, leaseSeconds(g), err
}

// Release releases the lock key held with token.
func Release(c *Conn, key, token string) error {
	return c.release(context.Background(), Grant{Key: key, Token: token})
}

// Renew extends the lease of the lock key held with token and returns the
// lease now applied, in seconds.
func Renew(c *Conn, key, token string, opts ...Option) (remaining int, err error) {
	g, err := c.renew(context.Background(), Grant{Key: key, Token: token}, collect(opts).leaseTTL)
	if err != nil {
		return 0, err
	}
	return leaseSeconds(g), nil
}

// Enqueue is the first phase of a two-phase lock: status is StatusAcquired
// (with token and lease) or StatusQueued (call Wait on the same Conn).
func Enqueue(c *Conn, key string, opts ...Option) (status, token string, leaseTTL int, err error) {
	g, err := c.enqueue(context.Background(), key, 0, collect(opts).leaseTTL)
	return enqueueResult(g, err)
}

// Wait is the second phase of a two-phase lock: it waits up to waitTimeout
// for the grant. It returns ErrTimeout, ErrNotQueued without a prior
// Enqueue, or ErrLeaseExpired when the grant expired before Wait.
func Wait(c *Conn, key string, waitTimeout time.Duration) (token string, leaseTTL int, err error) {
	g, err := c.wait(context.Background(), key, 0, waitTimeout, 0)
	return g.Token, leaseSeconds(g), err
}

// SemAcquire takes a slot of the semaphore key of the given limit, waiting
// up to acquireTimeout. ErrLimitMismatch if the key exists with another
// limit.
func SemAcquire(c *Conn, key string, acquireTimeout time.Duration, limit int, opts ...Option) (token string, leaseTTL int, err error) {
	g, err := c.acquire(context.Background(), key, semLimit(limit), acquireTimeout, collect(opts).leaseTTL)
	return g.Token, leaseSeconds(g), err
}

// SemRelease releases the semaphore slot held with token.
func SemRelease(c *Conn, key, token string) error {
	return c.release(context.Background(), Grant{Key: key, Token: token, Limit: 1})
}

// SemRenew extends the lease of the semaphore slot held with token and
// returns the lease now applied, in seconds.
func SemRenew(c *Conn, key, token string, opts ...Option) (remaining int, err error) {
	g, err := c.renew(context.Background(), Grant{Key: key, Token: token, Limit: 1}, collect(opts).leaseTTL)
	if err != nil {
		return 0, err
	}
	return leaseSeconds(g), nil
}

// SemEnqueue is the first phase of a two-phase semaphore acquire.
func SemEnqueue(c *Conn, key string, limit int, opts ...Option) (status, token string, leaseTTL int, err error) {
	g, err := c.enqueue(context.Background(), key, semLimit(limit), collect(opts).leaseTTL)
	return enqueueResult(g, err)
}

// SemWait is the second phase of a two-phase semaphore acquire.
func SemWait(c *Conn, key string, waitTimeout time.Duration) (token string, leaseTTL int, err error) {
	g, err := c.wait(context.Background(), key, 1, waitTimeout, 0)
	return g.Token, leaseSeconds(g), err
}

func leaseSeconds(g Grant) int { return int(g.Lease / time.Second) }

// semLimit keeps a non-positive limit invalid (0 would mean "lock").
func semLimit(limit int) int {
	if limit < 1 {
		return -1
	}
	return limit
}

func enqueueResult(g Grant, err error) (status, token string, leaseTTL int, _ error) {
	switch {
	case err != nil:
		return "", "", 0, err
	case g.Held():
		return StatusAcquired, g.Token, leaseSeconds(g), nil
	}
	return StatusQueued, "", 0, nil
}
