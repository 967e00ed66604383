package client_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/client"
	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// TestCancelledWaiterNoOrphanGrant: a parked waiter whose ctx
// was cancelled well before the lock frees must not later be granted a
// lock nobody releases — with auto-release off, for Conn (the connection
// stays open: the late grant is released by the reader) and for Lock (the
// connection is closed: the server drops the waiter).
func TestCancelledWaiterNoOrphanGrant(t *testing.T) {
	srv := start(t, func(c *reactortest.Config) { c.NoAutoRelease = true })
	ctx := ctxT(t, 15*time.Second)
	holder := dial(t, srv.Addr)
	probe := dial(t, srv.Addr)

	for _, viaLock := range []bool{false, true} {
		key := fmt.Sprintf("review-orphan-%v", viaLock)
		g, err := holder.Acquire(ctx, key, 0, client.WithLeaseTTL(30))
		require.NoError(t, err)
		wctx, cancel := context.WithCancel(ctx)
		res := make(chan error, 1)
		var waiter *client.Conn
		if viaLock {
			l := &client.Lock{Key: key, LeaseTTL: 30, AcquireTimeout: 5 * time.Second, Servers: []string{srv.Addr}, Heartbeat: -1}
			go func() { _, err := l.Acquire(wctx); res <- err }()
		} else {
			waiter = dial(t, srv.Addr)
			go func() { _, err := waiter.Acquire(wctx, key, 5*time.Second, client.WithLeaseTTL(30)); res <- err }()
		}
		require.Eventually(t, func() bool { ls, _ := lockStat(srv, key); return ls.Waiters == 1 }, 3*time.Second, time.Millisecond)
		cancel()
		require.ErrorIs(t, <-res, context.Canceled)
		time.Sleep(50 * time.Millisecond)
		require.NoError(t, holder.Release(ctx, g))
		// Whatever was granted to the abandoned waiter must be released.
		require.Eventually(t, func() bool {
			pg, err := probe.TryAcquire(ctx, key)
			if err != nil {
				return false
			}
			require.NoError(t, probe.Release(ctx, pg))
			return true
		}, 3*time.Second, 10*time.Millisecond, "viaLock=%v: lock orphaned", viaLock)
		if waiter != nil {
			require.NoError(t, waiter.Err(), "cancelling did not close the Conn")
			require.NoError(t, waiter.Ping(ctx))
		}
	}
}

// TestFencesAndTokens: Fence grows with every grant of a key
// (Lock, Semaphore and Conn), equals FenceOf(Token), survives renewal, and
// is 0 when nothing is held.
func TestFencesAndTokens(t *testing.T) {
	srv := start(t)
	ctx := ctxT(t, 10*time.Second)
	l := &client.Lock{Key: "review-fence", LeaseTTL: 2, Servers: []string{srv.Addr}, Heartbeat: -1}
	s := &client.Semaphore{Key: "review-fence", Limit: 2, Servers: []string{srv.Addr}, Heartbeat: -1}
	require.Zero(t, l.Fence())
	var last uint64
	for i := range 5 {
		ok, err := l.Acquire(ctx)
		require.NoError(t, err)
		require.True(t, ok)
		f := l.Fence()
		require.Greater(t, f, last, "round %d", i)
		require.Equal(t, client.FenceOf(l.Token()), f)
		g, _ := l.Grant()
		require.Equal(t, f, g.Fence())
		last = f
		ok, err = s.Acquire(ctx)
		require.NoError(t, err)
		require.True(t, ok)
		require.Greater(t, s.Fence(), last)
		last = s.Fence()
		require.NoError(t, s.Release(ctx))
		if i == 0 {
			time.Sleep(1500 * time.Millisecond) // one renewal at half the 2 s lease
			require.Equal(t, f, l.Fence(), "renewal changed the fence")
		}
		require.NoError(t, l.Release(ctx))
		require.Zero(t, l.Fence())
	}
	require.Zero(t, client.FenceOf("nonsense"))
	require.Zero(t, client.Grant{Key: "k"}.Fence())
}

// TestShardGolden: CRC32Shard agrees with Python's
// zlib.crc32(key) % n, and a Lock given a ShardFunc that answers out of
// range (RendezvousShard built for another list) fails with ErrInvalid
// without dialling.
func TestShardGolden(t *testing.T) {
	for _, c := range []struct {
		key  string
		n    int
		want int
	}{
		{"my-key", 2, 1}, {"my-key", 3, 2}, {"my-key", 5, 2}, {"my-key", 7, 1},
		{"a", 3, 0}, {"a", 7, 4}, {"lock:orders:42", 3, 2}, {"日本", 5, 1},
	} {
		require.Equal(t, c.want, client.CRC32Shard(c.key, c.n), "%q %d", c.key, c.n)
	}
	require.Zero(t, client.CRC32Shard("x", 0))
	require.Zero(t, client.JumpShard("x", -1))
	for _, key := range []string{"a", "b", "zz", "review"} {
		// JumpShard reference (Lamping & Veach) on FNV-1a 64.
		h := uint64(14695981039346656037)
		for i := 0; i < len(key); i++ {
			h = (h ^ uint64(key[i])) * 1099511628211
		}
		for n := 1; n < 40; n++ {
			k, b, j := h, int64(-1), int64(0)
			for j < int64(n) {
				b = j
				k = k*2862933555777941757 + 1
				j = int64(float64(b+1) * (float64(int64(1)<<31) / float64((k>>33)+1)))
			}
			require.Equal(t, int(b), client.JumpShard(key, n))
		}
	}
	servers := []string{"127.0.0.1:1", "127.0.0.1:2"}
	l := &client.Lock{Key: "k", Servers: append(servers, "127.0.0.1:3"), ShardFunc: client.RendezvousShard(servers)}
	_, err := l.Acquire(context.Background())
	require.ErrorIs(t, err, client.ErrInvalid)
	s := &client.Semaphore{Key: "k", Limit: 0, Servers: servers}
	_, err = s.Acquire(context.Background())
	require.ErrorIs(t, err, client.ErrInvalid)
}

// TestSemaphoreNamespaceAndLimit: Semaphore slots are bounded
// by Limit, a different limit is ErrLimitMismatch at the Lock level too,
// and the lock of the same key is a separate resource.
func TestSemaphoreNamespaceAndLimit(t *testing.T) {
	srv := start(t)
	ctx := ctxT(t, 10*time.Second)
	mk := func(limit int) *client.Semaphore {
		return &client.Semaphore{Key: "review-sem", Limit: limit, Servers: []string{srv.Addr}, Heartbeat: -1}
	}
	a, b, c := mk(2), mk(2), mk(2)
	for _, s := range []*client.Semaphore{a, b} {
		ok, err := s.TryAcquire(ctx)
		require.NoError(t, err)
		require.True(t, ok)
	}
	ok, err := c.TryAcquire(ctx)
	require.NoError(t, err)
	require.False(t, ok)
	ok, err = mk(3).TryAcquire(ctx)
	require.ErrorIs(t, err, client.ErrLimitMismatch)
	require.False(t, ok)
	l := &client.Lock{Key: "review-sem", Servers: []string{srv.Addr}, Heartbeat: -1}
	ok, err = l.TryAcquire(ctx)
	require.NoError(t, err)
	require.True(t, ok, "the lock of the same key is another resource")
	require.NoError(t, l.Release(ctx))
	require.NoError(t, a.Release(ctx))
	ok, err = c.TryAcquire(ctx)
	require.NoError(t, err)
	require.True(t, ok)
	require.NoError(t, b.Release(ctx))
	require.NoError(t, c.Release(ctx))
}

// TestNoGoroutinesAfterClose: Conn.Close and Lock.Close leave
// no goroutine behind, also after abandoned calls, an in-flight Acquire
// ended by Close, a Release whose ctx had ended, and a two-phase wait.
func TestNoGoroutinesAfterClose(t *testing.T) {
	srv := start(t)
	ctx := ctxT(t, 15*time.Second)
	warm := dial(t, srv.Addr)
	require.NoError(t, warm.Ping(ctx))
	time.Sleep(50 * time.Millisecond)
	base := runtime.NumGoroutine()

	for i := range 10 {
		key := fmt.Sprintf("review-leak-%d", i)
		c, err := client.DialContext(ctx, srv.Addr, client.WithHeartbeat(time.Second))
		require.NoError(t, err)
		g, err := warm.Acquire(ctx, key, 0)
		require.NoError(t, err)
		actx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		_, err = c.Acquire(actx, key, 5*time.Second) // waits behind g: abandoned, its late grant released
		cancel()
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.NoError(t, warm.Release(ctx, g))

		l := &client.Lock{Key: key, Servers: []string{srv.Addr}}
		ok, err := l.Acquire(ctx)
		require.NoError(t, err)
		require.True(t, ok)
		w := &client.Lock{Key: key, Servers: []string{srv.Addr}, AcquireTimeout: 5 * time.Second}
		res := make(chan error, 1)
		go func() { _, err := w.Acquire(ctx); res <- err }()
		require.Eventually(t, func() bool { ls, _ := lockStat(srv, key); return ls.Waiters == 1 }, 3*time.Second, time.Millisecond)
		require.NoError(t, w.Close())
		require.Error(t, <-res)

		q := &client.Lock{Key: key, Servers: []string{srv.Addr}}
		st, err := q.Enqueue(ctx)
		require.NoError(t, err)
		require.Equal(t, client.StatusQueued, st)
		ended, end := context.WithCancel(ctx)
		end()
		_ = l.Release(ended) // background release
		ok, err = q.Wait(ctx, 2*time.Second)
		require.NoError(t, err)
		require.True(t, ok)
		require.NoError(t, q.Close())
		require.NoError(t, l.Close())
		require.NoError(t, c.Close())
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > base && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > base {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		t.Fatalf("%d goroutines left over (base %d):\n%s", n-base, base, buf)
	}
}

// TestServerErrorsKeepConn: every error status leaves the Conn
// usable, and ErrDraining matches ErrServer (scripted statuses the real
// server is hard to provoke are covered by TestErrorMapping).
func TestServerErrorsKeepConn(t *testing.T) {
	srv := start(t)
	ctx := ctxT(t, 10*time.Second)
	c := dial(t, srv.Addr)
	_, err := c.Wait(ctx, client.Grant{Key: "nope"}, time.Second)
	require.ErrorIs(t, err, client.ErrNotQueued)
	err = c.Auth(ctx, "secret") // no secret configured: bare error
	require.ErrorIs(t, err, client.ErrServer)
	require.ErrorIs(t, err, client.ErrAuth) // as dflockd's client: any reply but ok
	require.NoError(t, c.Err())
	require.NoError(t, c.Ping(ctx))
	require.ErrorIs(t, client.ErrDraining, client.ErrServer)
}
