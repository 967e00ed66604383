package client_test

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/client"
	"github.com/lockreactor/dflockd/codec"
	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// lostRecorder is an OnRenewError that remembers what it got.
type lostRecorder struct {
	ch chan error
}

func newLostRecorder() *lostRecorder { return &lostRecorder{ch: make(chan error, 4)} }

func (r *lostRecorder) onRenewError(err error) { r.ch <- err }

func (r *lostRecorder) wait(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case err := <-r.ch:
		return err
	case <-time.After(d):
		t.Fatalf("no renewal error within %v", d)
		return nil
	}
}

func (r *lostRecorder) none(t *testing.T) {
	t.Helper()
	select {
	case err := <-r.ch:
		t.Fatalf("unexpected renewal error: %v", err)
	default:
	}
}

// Renewal keeps a 1 s lease alive for three lease lengths.
func TestLockRenewalKeepsLock(t *testing.T) {
	t.Parallel()
	srv := start(t)
	ctx := ctxT(t, 20*time.Second)
	rec := newLostRecorder()
	l := &client.Lock{Key: "k", LeaseTTL: 1, Servers: []string{srv.Addr}, OnRenewError: rec.onRenewError}
	ok, err := l.Acquire(ctx)
	require.NoError(t, err)
	require.True(t, ok)
	token := l.Token()
	require.Len(t, token, 32)
	g, ok := l.Grant()
	require.True(t, ok)
	require.Equal(t, time.Second, g.Lease)

	other := dial(t, srv.Addr)
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		_, err := other.TryAcquire(ctx, "k")
		require.ErrorIs(t, err, client.ErrTimeout, "the lock must stay held")
	}
	require.Equal(t, token, l.Token())
	require.Equal(t, client.FenceOf(token), l.Fence())
	rec.none(t)
	select {
	case <-l.Done():
		t.Fatal("Done closed while held")
	default:
	}

	done := l.Done()
	require.NoError(t, l.Release(ctx))
	<-done
	require.NoError(t, l.Err())
	require.Empty(t, l.Token())
	require.Zero(t, l.Fence())
	g2, err := other.TryAcquire(ctx, "k")
	require.NoError(t, err)
	require.Greater(t, g2.Fence(), client.FenceOf(token))
	require.NoError(t, l.Release(ctx), "releasing an idle Lock is a no-op")
}

func TestLockMutualExclusion(t *testing.T) {
	t.Parallel()
	srv := start(t)
	ctx := ctxT(t, 30*time.Second)
	const workers, rounds = 8, 10
	var inside, total atomic.Int32
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := &client.Lock{Key: "shared", Servers: []string{srv.Addr}}
			for range rounds {
				ok, err := l.Acquire(ctx)
				if !assert.NoError(t, err) || !assert.True(t, ok) {
					return
				}
				assert.Equal(t, int32(1), inside.Add(1), "two holders at once")
				time.Sleep(time.Millisecond)
				inside.Add(-1)
				total.Add(1)
				assert.NoError(t, l.Release(ctx))
			}
		}()
	}
	wg.Wait()
	require.Equal(t, int32(workers*rounds), total.Load())
}

func TestSemaphoreBoundsHolders(t *testing.T) {
	t.Parallel()
	srv := start(t)
	ctx := ctxT(t, 30*time.Second)
	const limit, workers, rounds = 3, 8, 5
	var inside, peak atomic.Int32
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := &client.Semaphore{Key: "pool", Limit: limit, Servers: []string{srv.Addr}}
			for range rounds {
				ok, err := s.Acquire(ctx)
				if !assert.NoError(t, err) || !assert.True(t, ok) {
					return
				}
				n := inside.Add(1)
				for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); {
					p = peak.Load()
				}
				assert.LessOrEqual(t, n, int32(limit))
				time.Sleep(2 * time.Millisecond)
				inside.Add(-1)
				assert.NoError(t, s.Release(ctx))
			}
		}()
	}
	wg.Wait()
	require.LessOrEqual(t, peak.Load(), int32(limit))

	bad := &client.Semaphore{Key: "pool", Limit: limit + 1, Servers: []string{srv.Addr}}
	_, err := bad.Acquire(ctx)
	require.ErrorIs(t, err, client.ErrLimitMismatch, "the key keeps its limit until pruned")
	_, err = (&client.Semaphore{Key: "pool", Servers: []string{srv.Addr}}).Acquire(ctx)
	require.ErrorIs(t, err, client.ErrInvalid, "Limit 0")
}

func TestLockAcquireTimeout(t *testing.T) {
	t.Parallel()
	srv := start(t)
	ctx := ctxT(t, 10*time.Second)
	a := &client.Lock{Key: "k", Servers: []string{srv.Addr}}
	ok, err := a.Acquire(ctx)
	require.NoError(t, err)
	require.True(t, ok)

	b := &client.Lock{Key: "k", Servers: []string{srv.Addr}, AcquireTimeout: 500 * time.Millisecond}
	ok, err = b.TryAcquire(ctx)
	require.NoError(t, err)
	require.False(t, ok)
	begin := time.Now()
	ok, err = b.Acquire(ctx)
	require.NoError(t, err, "a timeout is (false, nil)")
	require.False(t, ok)
	require.GreaterOrEqual(t, time.Since(begin), 900*time.Millisecond, "500ms rounds up to 1s")
	require.Empty(t, b.Token())
	require.NoError(t, a.Release(ctx))
}

// Cancelling Lock.Acquire returns at once and the server forgets the
// waiter at once (the Lock's connection carries nothing else, so it is
// closed).
func TestLockCancelWhileWaiting(t *testing.T) {
	t.Parallel()
	srv := start(t)
	ctx := ctxT(t, 10*time.Second)
	a := &client.Lock{Key: "k", Servers: []string{srv.Addr}}
	ok, err := a.Acquire(ctx)
	require.NoError(t, err)
	require.True(t, ok)

	b := &client.Lock{Key: "k", Servers: []string{srv.Addr}, AcquireTimeout: time.Minute}
	bctx, cancel := context.WithCancel(ctx)
	res := make(chan error, 1)
	go func() { _, err := b.Acquire(bctx); res <- err }()
	require.Eventually(t, func() bool { ls, _ := lockStat(srv, "k"); return ls.Waiters == 1 },
		5*time.Second, 5*time.Millisecond)
	cancel()
	require.ErrorIs(t, <-res, context.Canceled)
	require.Eventually(t, func() bool { ls, _ := lockStat(srv, "k"); return ls.Waiters == 0 },
		5*time.Second, 5*time.Millisecond)
	require.NoError(t, a.Release(ctx))
	require.False(t, held(srv, "k"), "nobody was granted the lock")
}

// When the server goes away, the holder learns at once: OnRenewError, Done,
// Err, and Release report the loss. After a restart it acquires again.
func TestLockServerRestart(t *testing.T) {
	t.Parallel()
	srv := start(t)
	addr := srv.Addr
	ctx := ctxT(t, 20*time.Second)
	rec := newLostRecorder()
	l := &client.Lock{Key: "k", Servers: []string{addr}, OnRenewError: rec.onRenewError}
	ok, err := l.Acquire(ctx)
	require.NoError(t, err)
	require.True(t, ok)
	done := l.Done()

	srv.Close()
	err = rec.wait(t, 5*time.Second)
	require.ErrorIs(t, err, client.ErrLost)
	require.ErrorIs(t, err, client.ErrClosed)
	<-done
	require.ErrorIs(t, l.Err(), client.ErrLost)
	require.Empty(t, l.Token())
	require.ErrorIs(t, l.Release(ctx), client.ErrLost, "Release reports the loss once")
	require.NoError(t, l.Release(ctx))

	start(t, func(c *reactortest.Config) { c.Server.Addr = addr })
	ok, err = l.Acquire(ctx)
	require.NoError(t, err)
	require.True(t, ok)
	require.NoError(t, l.Err())
	require.NoError(t, l.Release(ctx))
	rec.none(t)
}

// A renewal the server never answers: the hold is lost when the lease runs
// out locally, not when the TCP connection finally gives up.
func TestLockLostWhenLeaseRunsOut(t *testing.T) {
	t.Parallel()
	addr := mute(t, codec.Token{Fence: 7, Salt: 1})
	ctx := ctxT(t, 10*time.Second)
	rec := newLostRecorder()
	l := &client.Lock{Key: "k", LeaseTTL: 1, Servers: []string{addr}, OnRenewError: rec.onRenewError, Heartbeat: -1}
	ok, err := l.Acquire(ctx)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, uint64(7), l.Fence())
	begin := time.Now()
	err = rec.wait(t, 3*time.Second)
	require.ErrorIs(t, err, client.ErrLost)
	require.Contains(t, err.Error(), "lease ran out")
	require.Less(t, time.Since(begin), 1500*time.Millisecond)
	require.Zero(t, l.Fence())
}

// mute is a fake server that grants the first request with tok and a 1 s
// lease and never answers anything else.
func mute(t *testing.T, tok codec.Token) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				var buf []byte
				chunk := make([]byte, 512)
				granted := false
				for {
					n, err := c.Read(chunk)
					if err != nil {
						return
					}
					buf = append(buf, chunk[:n]...)
					var req codec.Request
					if m, _ := codec.Decode(buf, &req); m > 0 && !granted {
						granted = true
						_, _ = c.Write(codec.AppendGrant(nil, codec.CodeOK, tok, 1))
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

func TestLockTwoPhase(t *testing.T) {
	t.Parallel()
	// A short read timeout: the Lock's heartbeat keeps its queued place
	// alive between Enqueue and Wait.
	srv := start(t, func(c *reactortest.Config) { c.Server.ReadTimeout = 300 * time.Millisecond })
	ctx := ctxT(t, 10*time.Second)
	servers := []string{srv.Addr}
	a := &client.Lock{Key: "k", Servers: servers, Heartbeat: 100 * time.Millisecond}
	status, err := a.Enqueue(ctx)
	require.NoError(t, err)
	require.Equal(t, client.StatusAcquired, status)
	tokA := a.Token()
	ok, err := a.Wait(ctx, time.Second)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, tokA, a.Token(), "Wait after the fast path keeps the token")

	b := &client.Lock{Key: "k", Servers: servers, Heartbeat: 100 * time.Millisecond}
	status, err = b.Enqueue(ctx)
	require.NoError(t, err)
	require.Equal(t, client.StatusQueued, status)
	require.Empty(t, b.Token())
	time.Sleep(700 * time.Millisecond) // beyond the read timeout
	require.NoError(t, a.Release(ctx))
	ok, err = b.Wait(ctx, 5*time.Second)
	require.NoError(t, err)
	require.True(t, ok)
	require.Greater(t, b.Fence(), client.FenceOf(tokA))

	c := &client.Lock{Key: "k", Servers: servers}
	ok, err = c.Wait(ctx, time.Second)
	require.ErrorIs(t, err, client.ErrNotQueued)
	require.False(t, ok)
	status, err = c.Enqueue(ctx)
	require.NoError(t, err)
	require.Equal(t, client.StatusQueued, status)
	ok, err = c.Wait(ctx, time.Second)
	require.NoError(t, err, "a timeout is (false, nil)")
	require.False(t, ok)
	_, err = c.Wait(ctx, time.Second)
	require.ErrorIs(t, err, client.ErrNotQueued)
	require.NoError(t, b.Release(ctx))
}

func TestLockCloseLeavesReleaseToServer(t *testing.T) {
	t.Parallel()
	srv := start(t)
	ctx := ctxT(t, 10*time.Second)
	l := &client.Lock{Key: "k", Servers: []string{srv.Addr}}
	ok, err := l.Acquire(ctx)
	require.NoError(t, err)
	require.True(t, ok)
	require.NoError(t, l.Close())
	require.NoError(t, l.Err())
	require.Eventually(t, func() bool { return !held(srv, "k") }, 5*time.Second, 5*time.Millisecond)
	require.NoError(t, l.Close())
}

func TestLockTLSAndAuth(t *testing.T) {
	t.Parallel()
	serverTLS, clientTLS := reactortest.SelfSignedTLS(t)
	srv := start(t, func(c *reactortest.Config) {
		c.Server.TLS = serverTLS
		c.Server.AuthToken = "my-secret-token"
	})
	ctx := ctxT(t, 10*time.Second)
	l := &client.Lock{Key: "k", Servers: []string{srv.Addr}, TLSConfig: clientTLS, AuthToken: "my-secret-token"}
	ok, err := l.Acquire(ctx)
	require.NoError(t, err)
	require.True(t, ok)
	require.NoError(t, l.Release(ctx))

	bad := &client.Lock{Key: "k", Servers: []string{srv.Addr}, TLSConfig: clientTLS, AuthToken: "nope"}
	ok, err = bad.Acquire(ctx)
	require.ErrorIs(t, err, client.ErrAuth)
	require.False(t, ok)
	s := &client.Semaphore{Key: "k", Limit: 2, Servers: []string{srv.Addr}, TLSConfig: clientTLS}
	_, err = s.Acquire(ctx)
	require.ErrorIs(t, err, client.ErrAuth, "the server requires auth")
}

// Each key lands on the server the shard function names.
func TestSharding(t *testing.T) {
	t.Parallel()
	srvs := []*reactortest.Server{start(t), start(t), start(t)}
	servers := []string{srvs[0].Addr, srvs[1].Addr, srvs[2].Addr}
	ctx := ctxT(t, 20*time.Second)
	for _, tc := range []struct {
		name  string
		shard client.ShardFunc
	}{
		{"default", nil},
		{"crc32", client.CRC32Shard},
		{"jump", client.JumpShard},
		{"rendezvous", client.RendezvousShard(servers)},
	} {
		want := tc.shard
		if want == nil {
			want = client.CRC32Shard
		}
		seen := map[int]bool{}
		for i := range 24 {
			key := fmt.Sprintf("%s-key-%d", tc.name, i)
			idx := want(key, len(servers))
			seen[idx] = true
			l := &client.Lock{Key: key, Servers: servers, ShardFunc: tc.shard}
			ok, err := l.Acquire(ctx)
			require.NoError(t, err)
			require.True(t, ok)
			for j, srv := range srvs {
				require.Equal(t, j == idx, held(srv, key), "%s: key %q on server %d, want %d", tc.name, key, j, idx)
			}
			require.NoError(t, l.Release(ctx))
		}
		require.Len(t, seen, len(servers), "%s: 24 keys use every server", tc.name)
	}

	// A shard function that names no server is an error, not a panic.
	l := &client.Lock{Key: "k", Servers: servers, ShardFunc: client.RendezvousShard(servers[:2])}
	_, err := l.Acquire(ctx)
	require.ErrorIs(t, err, client.ErrInvalid)
}

func TestLockDefaultsAndValidation(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t, 10*time.Second)
	_, err := (&client.Lock{Key: "bad key", Servers: []string{serverAddr}}).Acquire(ctx)
	require.ErrorIs(t, err, client.ErrInvalid)
	_, err = (&client.Lock{Key: "", Servers: []string{serverAddr}}).Enqueue(ctx)
	require.ErrorIs(t, err, client.ErrInvalid)
	// The default server is 127.0.0.1:6388; whatever listens there (most
	// likely nothing), the attempt must not hang or panic.
	dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	l := &client.Lock{Key: "k", AcquireTimeout: time.Second}
	if ok, err := l.Acquire(dctx); err == nil && ok {
		require.NoError(t, l.Release(ctx))
	}
	var lost *client.Lock
	require.NotPanics(t, func() { lost = &client.Lock{}; _ = lost.Close(); _ = lost.Release(ctx) })
	require.ErrorIs(t, func() error { _, err := lost.Wait(ctx, time.Second); return err }(), client.ErrNotQueued)
	select {
	case <-lost.Done():
	default:
		t.Fatal("Done of an idle Lock must be closed")
	}
	require.NotErrorIs(t, lost.Err(), client.ErrLost)
}

// TestLockWaitNeverGivesAwayAHold: Wait without a place to collect (after
// Acquire, or a second Wait) answers ErrNotQueued and leaves the lock
// held; a Wait collecting a fast-path grant whose context ends keeps the
// lock too.
func TestLockWaitNeverGivesAwayAHold(t *testing.T) {
	t.Parallel()
	srv := start(t)
	ctx := ctxT(t, 20*time.Second)
	other := dial(t, srv.Addr)
	stillHeld := func(l *client.Lock, key string) {
		t.Helper()
		require.True(t, held(srv, key), "the server no longer holds %s", key)
		_, err := other.TryAcquire(ctx, key)
		require.ErrorIs(t, err, client.ErrTimeout, "%s must stay held", key)
		require.NoError(t, l.Err())
		require.NotEmpty(t, l.Token())
	}

	a := &client.Lock{Key: "wa", Servers: []string{srv.Addr}}
	ok, err := a.Acquire(ctx)
	require.NoError(t, err)
	require.True(t, ok)
	ok, err = a.Wait(ctx, time.Second)
	require.ErrorIs(t, err, client.ErrNotQueued)
	require.False(t, ok)
	stillHeld(a, "wa")
	require.NoError(t, a.Release(ctx))

	b := &client.Lock{Key: "wb", Servers: []string{srv.Addr}}
	st, err := b.Enqueue(ctx)
	require.NoError(t, err)
	require.Equal(t, client.StatusAcquired, st)
	ok, err = b.Wait(ctx, time.Second)
	require.NoError(t, err)
	require.True(t, ok)
	ok, err = b.Wait(ctx, time.Second) // nothing left to collect
	require.ErrorIs(t, err, client.ErrNotQueued)
	require.False(t, ok)
	stillHeld(b, "wb")
	require.NoError(t, b.Release(ctx))

	c := &client.Lock{Key: "wc", Servers: []string{srv.Addr}}
	st, err = c.Enqueue(ctx)
	require.NoError(t, err)
	require.Equal(t, client.StatusAcquired, st)
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	_, err = c.Wait(cancelled, time.Second)
	require.ErrorIs(t, err, context.Canceled)
	stillHeld(c, "wc")
	ok, err = c.Wait(ctx, time.Second) // the place is still there to collect
	require.NoError(t, err)
	require.True(t, ok)
	require.NoError(t, c.Release(ctx))
}

// TestLockReacquireWithoutAutoRelease: Acquire on a Lock that holds
// releases the old hold first, so with the server's auto-release off the
// new Acquire does not queue behind its own old grant until its lease ends.
func TestLockReacquireWithoutAutoRelease(t *testing.T) {
	t.Parallel()
	srv := reactortest.Start(t, func(c *reactortest.Config) { c.NoAutoRelease = true })
	ctx := ctxT(t, 20*time.Second)
	l := &client.Lock{Key: "re", LeaseTTL: 30, AcquireTimeout: 2 * time.Second, Servers: []string{srv.Addr}}
	ok, err := l.Acquire(ctx)
	require.NoError(t, err)
	require.True(t, ok)
	first := l.Token()
	start := time.Now()
	ok, err = l.Acquire(ctx)
	require.NoError(t, err)
	require.True(t, ok, "the second Acquire queued behind the first hold")
	require.Less(t, time.Since(start), time.Second)
	require.NotEqual(t, first, l.Token())
	require.NoError(t, l.Release(ctx))
	require.False(t, held(srv, "re"))
}
