package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/client"
	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// The dflockd-compatible low-level functions, as the seeds' "Low-level API"
// example uses them.
func TestCompatLockRenewRelease(t *testing.T) {
	t.Parallel()
	srv := start(t)
	c, err := client.Dial(srv.Addr)
	require.NoError(t, err)
	defer func() { _ = c.Close() }()

	token, lease, err := client.Acquire(c, "my-key", 10*time.Second)
	require.NoError(t, err)
	require.Len(t, token, 32)
	require.Equal(t, 33, lease)

	remaining, err := client.Renew(c, "my-key", token)
	require.NoError(t, err)
	require.Equal(t, 33, remaining)
	remaining, err = client.Renew(c, "my-key", token, client.WithLeaseTTL(5))
	require.NoError(t, err)
	require.Equal(t, 5, remaining)

	require.NoError(t, client.Release(c, "my-key", token))
	err = client.Release(c, "my-key", token)
	require.ErrorIs(t, err, client.ErrServer)
	_, err = client.Renew(c, "my-key", token)
	require.ErrorIs(t, err, client.ErrServer)

	token2, lease, err := client.Acquire(c, "my-key", 0, client.WithLeaseTTL(60))
	require.NoError(t, err)
	require.Equal(t, 60, lease)
	require.Greater(t, token2, token, "a later grant sorts after an earlier one")
	require.Greater(t, client.FenceOf(token2), client.FenceOf(token))
}

func TestCompatTwoPhase(t *testing.T) {
	t.Parallel()
	srv := start(t)
	a, b := dial(t, srv.Addr), dial(t, srv.Addr)

	tokA, _, err := client.Acquire(a, "k", 0)
	require.NoError(t, err)

	status, tok, lease, err := client.Enqueue(b, "k")
	require.NoError(t, err)
	require.Equal(t, client.StatusQueued, status)
	require.Equal(t, "queued", status)
	require.Empty(t, tok)
	require.Zero(t, lease)

	_, _, _, err = client.Enqueue(b, "k")
	require.ErrorIs(t, err, client.ErrAlreadyQueued)

	require.NoError(t, client.Release(a, "k", tokA))
	tokB, lease, err := client.Wait(b, "k", 5*time.Second)
	require.NoError(t, err)
	require.Len(t, tokB, 32)
	require.Equal(t, 33, lease)
	_, _, err = client.Wait(b, "k", time.Second)
	require.ErrorIs(t, err, client.ErrNotQueued)
	require.NoError(t, client.Release(b, "k", tokB))

	// Fast path: a free key is acquired by Enqueue; Wait answers the same token.
	status, tok, lease, err = client.Enqueue(b, "free", client.WithLeaseTTL(7))
	require.NoError(t, err)
	require.Equal(t, "acquired", status)
	require.Equal(t, 7, lease)
	tok2, _, err := client.Wait(b, "free", 0)
	require.NoError(t, err)
	require.Equal(t, tok, tok2)
}

func TestCompatSemaphore(t *testing.T) {
	t.Parallel()
	srv := start(t)
	c := dial(t, srv.Addr)

	t1, lease, err := client.SemAcquire(c, "pool", time.Second, 2)
	require.NoError(t, err)
	require.Equal(t, 33, lease)
	t2, _, err := client.SemAcquire(c, "pool", time.Second, 2, client.WithLeaseTTL(9))
	require.NoError(t, err)
	_, _, err = client.SemAcquire(c, "pool", 0, 2)
	require.ErrorIs(t, err, client.ErrTimeout)
	_, _, err = client.SemAcquire(c, "pool", 0, 3)
	require.ErrorIs(t, err, client.ErrLimitMismatch)
	_, _, err = client.SemAcquire(c, "pool", 0, 0)
	require.ErrorIs(t, err, client.ErrInvalid)

	// Separate namespaces: a lock release never frees a slot.
	require.ErrorIs(t, client.Release(c, "pool", t1), client.ErrServer)

	remaining, err := client.SemRenew(c, "pool", t2, client.WithLeaseTTL(4))
	require.NoError(t, err)
	require.Equal(t, 4, remaining)

	b := dial(t, srv.Addr)
	status, _, _, err := client.SemEnqueue(b, "pool", 2)
	require.NoError(t, err)
	require.Equal(t, client.StatusQueued, status)
	require.NoError(t, client.SemRelease(c, "pool", t1))
	t3, _, err := client.SemWait(b, "pool", 5*time.Second)
	require.NoError(t, err)
	require.NoError(t, client.SemRelease(b, "pool", t3))

	status, t4, _, err := client.SemEnqueue(b, "pool", 2)
	require.NoError(t, err)
	require.Equal(t, client.StatusAcquired, status)
	require.NoError(t, client.SemRelease(b, "pool", t4))
}

// Every error status reaches its sentinel.
func TestErrorStatuses(t *testing.T) {
	t.Parallel()
	srv := start(t, func(c *reactortest.Config) {
		c.Core.MaxLocks = 2
		c.Core.MaxWaiters = 1
	})
	ctx := ctxT(t, 10*time.Second)
	a, b, c := dial(t, srv.Addr), dial(t, srv.Addr), dial(t, srv.Addr)

	g, err := a.Acquire(ctx, "k1", 0)
	require.NoError(t, err)
	_, err = a.Acquire(ctx, "k2", 0, client.WithLimit(2))
	require.NoError(t, err)
	_, err = a.Acquire(ctx, "k3", 0)
	require.ErrorIs(t, err, client.ErrMaxLocks)
	_, err = a.Enqueue(ctx, "k3")
	require.ErrorIs(t, err, client.ErrMaxLocks)

	q, err := b.Enqueue(ctx, "k1")
	require.NoError(t, err)
	require.False(t, q.Held())
	_, err = c.Enqueue(ctx, "k1")
	require.ErrorIs(t, err, client.ErrMaxWaiters)
	_, err = c.Acquire(ctx, "k1", 0)
	require.ErrorIs(t, err, client.ErrMaxWaiters)
	_, err = b.Enqueue(ctx, "k1")
	require.ErrorIs(t, err, client.ErrAlreadyQueued)
	_, err = c.Wait(ctx, client.Grant{Key: "k1"}, 0)
	require.ErrorIs(t, err, client.ErrNotQueued)
	_, err = c.Acquire(ctx, "k2", 0, client.WithLimit(3))
	require.ErrorIs(t, err, client.ErrLimitMismatch)
	_, err = c.Acquire(ctx, "k2", 0, client.WithLimit(2))
	require.NoError(t, err)
	_, err = c.Acquire(ctx, "k2", 0, client.WithLimit(2))
	require.ErrorIs(t, err, client.ErrTimeout)

	// A released token can be neither renewed nor released again.
	require.NoError(t, a.Release(ctx, g))
	_, err = b.Renew(ctx, g)
	require.ErrorIs(t, err, client.ErrServer)
	require.ErrorIs(t, a.Release(ctx, g), client.ErrServer)

	// Nothing is sent for arguments the server would reject.
	for _, key := range []string{"", "a b", "a\tb", "a\nb", "a\rb", string(make([]byte, 257))} {
		_, err = c.Acquire(ctx, key, 0)
		require.ErrorIs(t, err, client.ErrInvalid, "key %q", key)
	}
	_, err = c.Acquire(ctx, "k", 0, client.WithLimit(0))
	require.ErrorIs(t, err, client.ErrInvalid)
	err = c.Release(ctx, client.Grant{Key: "k", Token: "not-a-token"})
	require.ErrorIs(t, err, client.ErrInvalid)
	require.ErrorIs(t, err, client.ErrServer, "dflockd's client reported a bad token as a server error")
	require.NoError(t, c.Ping(ctx), "the connection is still in sync")
}

func TestWaitLeaseExpired(t *testing.T) {
	t.Parallel()
	srv := start(t)
	ctx := ctxT(t, 10*time.Second)
	c := dial(t, srv.Addr)
	g, err := c.Enqueue(ctx, "k", client.WithLeaseTTL(1))
	require.NoError(t, err)
	require.True(t, g.Held())
	time.Sleep(1200 * time.Millisecond)
	_, err = c.Wait(ctx, g, time.Second)
	require.ErrorIs(t, err, client.ErrLeaseExpired)
	_, _, err = client.Wait(c, "k", time.Second)
	require.ErrorIs(t, err, client.ErrNotQueued)
}

// A sub-second timeout is rounded up to a whole second, not down to "try
// once".
func TestSubSecondTimeoutRoundsUp(t *testing.T) {
	t.Parallel()
	srv := start(t)
	a, b := dial(t, srv.Addr), dial(t, srv.Addr)
	_, _, err := client.Acquire(a, "k", 0)
	require.NoError(t, err)
	begin := time.Now()
	_, _, err = client.Acquire(b, "k", 100*time.Millisecond)
	require.ErrorIs(t, err, client.ErrTimeout)
	require.GreaterOrEqual(t, time.Since(begin), 900*time.Millisecond)
}

// A context deadline shorter than the timeout caps the server-side wait, so
// the abandoned request holds the connection back only until then.
func TestContextDeadlineCapsServerTimeout(t *testing.T) {
	t.Parallel()
	srv := start(t)
	a, b := dial(t, srv.Addr), dial(t, srv.Addr)
	_, err := a.Acquire(ctxT(t, 5*time.Second), "k", 0)
	require.NoError(t, err)

	begin := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err = b.Acquire(ctx, "k", time.Minute)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Less(t, time.Since(begin), time.Second)

	// The server was asked for 1 s, not a minute: the ping behind it is
	// answered within about a second.
	require.NoError(t, b.Ping(ctxT(t, 3*time.Second)))
	require.Less(t, time.Since(begin), 2500*time.Millisecond)
	require.NoError(t, b.Err())
}

// Cancelling a blocked call returns at once, keeps the connection (and the
// locks it holds), and the grant that arrives later is released at once.
func TestCancelKeepsConnectionAndReleasesLateGrant(t *testing.T) {
	t.Parallel()
	srv := start(t)
	ctx := ctxT(t, 20*time.Second)
	a, b := dial(t, srv.Addr), dial(t, srv.Addr)

	ga, err := a.Acquire(ctx, "k", 0)
	require.NoError(t, err)
	gb, err := b.Acquire(ctx, "mine", 0) // a lock b must not lose
	require.NoError(t, err)

	wctx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() {
		_, err := b.Acquire(wctx, "k", 30*time.Second)
		errc <- err
	}()
	require.Eventually(t, func() bool { ls, _ := lockStat(srv, "k"); return ls.Waiters == 1 },
		5*time.Second, 5*time.Millisecond)
	cancel()
	select {
	case err := <-errc:
		require.ErrorIs(t, err, context.Canceled)
	case <-time.After(time.Second):
		t.Fatal("cancel did not return at once")
	}
	require.NoError(t, b.Err(), "the connection stays open")

	// A call made now is pipelined behind the abandoned acquire.
	pinged := make(chan error, 1)
	go func() { pinged <- b.Ping(ctx) }()

	require.NoError(t, a.Release(ctx, ga)) // k is granted to b's abandoned call...
	require.NoError(t, <-pinged)
	// ...which b released at once, without closing: k is free, "mine" still b's.
	c := dial(t, srv.Addr)
	require.Eventually(t, func() bool {
		g, err := c.TryAcquire(ctx, "k")
		return err == nil && c.Release(ctx, g) == nil
	}, 5*time.Second, 10*time.Millisecond)
	_, err = c.TryAcquire(ctx, "mine")
	require.ErrorIs(t, err, client.ErrTimeout)
	_, err = b.Renew(ctx, gb)
	require.NoError(t, err)
	require.NoError(t, b.Err())
}

// A cancelled Enqueue whose answer is "queued" leaves the queue again.
func TestCancelledEnqueueLeavesQueue(t *testing.T) {
	t.Parallel()
	srv := start(t)
	ctx := ctxT(t, 20*time.Second)
	a, b := dial(t, srv.Addr), dial(t, srv.Addr)
	g1, err := a.Acquire(ctx, "k1", 0)
	require.NoError(t, err)
	_, err = a.Acquire(ctx, "k2", 0)
	require.NoError(t, err)

	// b blocks on k1, so its Enqueue of k2 waits behind it and can be
	// cancelled before its "queued" arrives.
	got1 := make(chan error, 1)
	go func() { _, err := b.Acquire(ctx, "k1", 10*time.Second); got1 <- err }()
	require.Eventually(t, func() bool { ls, _ := lockStat(srv, "k1"); return ls.Waiters == 1 },
		5*time.Second, 5*time.Millisecond)
	enq := make(chan error, 1)
	ectx, cancel := context.WithCancel(ctx)
	go func() { _, err := b.Enqueue(ectx, "k2"); enq <- err }()
	time.Sleep(50 * time.Millisecond) // let the enqueue reach the server
	ls, _ := lockStat(srv, "k2")
	require.Zero(t, ls.Waiters, "the enqueue waits behind the parked acquire")
	cancel()
	require.ErrorIs(t, <-enq, context.Canceled)

	require.NoError(t, a.Release(ctx, g1))
	require.NoError(t, <-got1)
	// The enqueue was answered "queued" and b left the queue again. The
	// reader sends the leave when it reads that answer, which may be after
	// a request this goroutine sends once got1 is in (a ping is not held
	// back: it has no key), so wait for it rather than ping first.
	require.Eventually(t, func() bool { ls, ok := lockStat(srv, "k2"); return ok && ls.Waiters == 0 },
		5*time.Second, 5*time.Millisecond, "b still queued on k2")
	require.NoError(t, b.Ping(ctx))
	require.NoError(t, b.Err())
}

// Many goroutines share one connection; each gets its own reply.
func TestPipelinedCalls(t *testing.T) {
	t.Parallel()
	srv := start(t)
	ctx := ctxT(t, 20*time.Second)
	c := dial(t, srv.Addr)
	var wg sync.WaitGroup
	for w := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				key := fmt.Sprintf("w%d-%d", w, i%3)
				opts := []client.Option{client.WithLeaseTTL(w + 1)}
				if i%2 == 1 {
					opts = append(opts, client.WithLimit(2))
				}
				g, err := c.Acquire(ctx, key, time.Second, opts...)
				if !assert.NoError(t, err) {
					return
				}
				assert.Equal(t, time.Duration(w+1)*time.Second, g.Lease)
				g, err = c.Renew(ctx, g, client.WithLeaseTTL(w+2))
				assert.NoError(t, err)
				assert.Equal(t, time.Duration(w+2)*time.Second, g.Lease)
				assert.NoError(t, c.Release(ctx, g))
			}
		}()
	}
	wg.Wait()
	require.NoError(t, c.Err())
}

func TestCloseFailsPendingCalls(t *testing.T) {
	t.Parallel()
	srv := start(t)
	ctx := ctxT(t, 10*time.Second)
	a, b := dial(t, srv.Addr), dial(t, srv.Addr)
	_, err := a.Acquire(ctx, "k", 0)
	require.NoError(t, err)
	errc := make(chan error, 1)
	go func() { _, err := b.Acquire(ctx, "k", 30*time.Second); errc <- err }()
	require.Eventually(t, func() bool { ls, _ := lockStat(srv, "k"); return ls.Waiters == 1 },
		5*time.Second, 5*time.Millisecond)
	require.NoError(t, b.Close())
	require.ErrorIs(t, <-errc, client.ErrClosed)
	require.ErrorIs(t, b.Err(), client.ErrClosed)
	require.NoError(t, b.Close(), "Close is idempotent")
	_, err = b.Acquire(ctx, "x", 0)
	require.ErrorIs(t, err, client.ErrClosed)
}

func TestServerGoneBreaksConn(t *testing.T) {
	t.Parallel()
	// Without auto-release, closing a's connection grants b nothing.
	srv := start(t, func(c *reactortest.Config) { c.NoAutoRelease = true })
	ctx := ctxT(t, 10*time.Second)
	a, b := dial(t, srv.Addr), dial(t, srv.Addr)
	_, err := a.Acquire(ctx, "k", 0)
	require.NoError(t, err)
	errc := make(chan error, 1)
	go func() { _, err := b.Acquire(ctx, "k", 30*time.Second); errc <- err }()
	require.Eventually(t, func() bool { ls, _ := lockStat(srv, "k"); return ls.Waiters == 1 },
		5*time.Second, 5*time.Millisecond)
	srv.Close()
	require.ErrorIs(t, <-errc, client.ErrClosed)
	select {
	case <-a.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed after the server went away")
	}
	require.ErrorIs(t, a.Err(), client.ErrClosed)
}

func TestDraining(t *testing.T) {
	t.Parallel()
	srv := start(t)
	ctx := ctxT(t, 10*time.Second)
	a, b, c := dial(t, srv.Addr), dial(t, srv.Addr), dial(t, srv.Addr)
	_, err := a.Acquire(ctx, "k", 0)
	require.NoError(t, err)
	parked := make(chan error, 1)
	go func() { _, err := b.Acquire(ctx, "k", time.Second); parked <- err }()
	require.Eventually(t, func() bool { ls, _ := lockStat(srv, "k"); return ls.Waiters == 1 },
		5*time.Second, 5*time.Millisecond)

	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(ctx) }()
	require.Eventually(t, func() bool {
		_, err := c.TryAcquire(ctx, "other")
		return errors.Is(err, client.ErrDraining)
	}, 5*time.Second, 5*time.Millisecond)
	_, err = c.TryAcquire(ctx, "other")
	require.ErrorIs(t, err, client.ErrServer, "draining also matches ErrServer, as dflockd's client reported it")
	require.ErrorIs(t, <-parked, client.ErrTimeout, "a blocked request finishes during the drain")
	require.NoError(t, <-shut)
}

func TestHeartbeatKeepsIdleConnection(t *testing.T) {
	t.Parallel()
	srv := start(t, func(c *reactortest.Config) { c.Server.ReadTimeout = 300 * time.Millisecond })
	ctx := ctxT(t, 10*time.Second)
	beat := dial(t, srv.Addr, client.WithHeartbeat(100*time.Millisecond))
	idle := dial(t, srv.Addr)
	_, err := beat.Acquire(ctx, "k", 0)
	require.NoError(t, err)

	select {
	case <-idle.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the server did not close the idle connection")
	}
	require.ErrorIs(t, idle.Err(), client.ErrClosed)
	time.Sleep(400 * time.Millisecond)
	require.NoError(t, beat.Err())
	require.NoError(t, beat.Ping(ctx))
	require.True(t, held(srv, "k"))
}

func TestAuth(t *testing.T) {
	t.Parallel()
	srv := start(t, func(c *reactortest.Config) { c.Server.AuthToken = "s3cret" })
	ctx := ctxT(t, 10*time.Second)

	c := dial(t, srv.Addr, client.WithAuth("s3cret"))
	g, err := c.Acquire(ctx, "k", 0)
	require.NoError(t, err)
	require.NoError(t, c.Release(ctx, g))

	_, err = client.DialContext(ctx, srv.Addr, client.WithAuth("wrong"))
	require.ErrorIs(t, err, client.ErrAuth)

	raw, err := client.Dial(srv.Addr)
	require.NoError(t, err)
	defer func() { _ = raw.Close() }()
	_, _, err = client.Acquire(raw, "k", 0)
	require.ErrorIs(t, err, client.ErrAuth)

	compat, err := client.Dial(srv.Addr)
	require.NoError(t, err)
	defer func() { _ = compat.Close() }()
	require.NoError(t, client.Authenticate(compat, "s3cret"))
	require.ErrorIs(t, client.Authenticate(compat, "s3cret"), client.ErrServer, "a second auth is an error")
	_, _, err = client.Acquire(compat, "k", 0)
	require.NoError(t, err)
}

func TestTLS(t *testing.T) {
	t.Parallel()
	serverTLS, clientTLS := reactortest.SelfSignedTLS(t)
	srv := start(t, func(c *reactortest.Config) { c.Server.TLS = serverTLS })
	ctx := ctxT(t, 10*time.Second)

	c, err := client.DialTLS(srv.Addr, clientTLS)
	require.NoError(t, err)
	defer func() { _ = c.Close() }()
	tok, _, err := client.Acquire(c, "k", 0)
	require.NoError(t, err)
	require.NoError(t, client.Release(c, "k", tok))

	m := dial(t, srv.Addr, client.WithTLS(clientTLS))
	_, err = m.Acquire(ctx, "k", 0)
	require.NoError(t, err)

	_, err = client.DialTLS(srv.Addr, nil) // no trusted root
	require.Error(t, err)

	plain := dial(t, srv.Addr)
	require.Error(t, plain.Ping(ctx), "a plaintext client is never served")
}

func TestStats(t *testing.T) {
	t.Parallel()
	srv := start(t)
	ctx := ctxT(t, 10*time.Second)
	c := dial(t, srv.Addr)
	_, err := c.Acquire(ctx, "k", 0)
	require.NoError(t, err)
	raw, err := c.Stats(ctx)
	require.NoError(t, err)
	var st struct {
		Connections int
		Locks       []struct{ Key string }
	}
	require.NoError(t, json.Unmarshal(raw, &st))
	require.Equal(t, 1, st.Connections)
	require.Len(t, st.Locks, 1)
	require.Equal(t, "k", st.Locks[0].Key)
}

// An abandoned Wait on a grant already held (fast path) keeps it.
func TestCancelledWaitKeepsHeldGrant(t *testing.T) {
	t.Parallel()
	srv := start(t)
	ctx := ctxT(t, 20*time.Second)
	a, b := dial(t, srv.Addr), dial(t, srv.Addr)
	g1, err := a.Acquire(ctx, "k1", 0)
	require.NoError(t, err)
	g2, err := b.Enqueue(ctx, "k2")
	require.NoError(t, err)
	require.True(t, g2.Held())

	got1 := make(chan error, 1)
	go func() { _, err := b.Acquire(ctx, "k1", 10*time.Second); got1 <- err }()
	require.Eventually(t, func() bool { ls, _ := lockStat(srv, "k1"); return ls.Waiters == 1 },
		5*time.Second, 5*time.Millisecond)
	wctx, cancel := context.WithCancel(ctx)
	waited := make(chan error, 1)
	go func() { _, err := b.Wait(wctx, g2, time.Second); waited <- err }()
	time.Sleep(50 * time.Millisecond)
	cancel()
	require.ErrorIs(t, <-waited, context.Canceled)

	require.NoError(t, a.Release(ctx, g1))
	require.NoError(t, <-got1)
	require.NoError(t, b.Ping(ctx)) // the abandoned wait has been answered
	require.True(t, held(srv, "k2"), "b still holds k2")
	_, err = b.Renew(ctx, g2)
	require.NoError(t, err)
}
