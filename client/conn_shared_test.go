package client

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// TestSharedConnCancelStress: one Conn shared by many goroutines
// doing acquire/renew/stats/ping/release, with some acquires abandoned at
// random moments (before, during or after their reply). A reply matched to
// the wrong call shows up as an ErrServer (unexpected reply shape, or a
// release/renew with another key's token answered "error"). Afterwards the
// server must hold nothing: every abandoned grant was released.
func TestSharedConnCancelStress(t *testing.T) {
	t.Parallel()
	srv := reactortest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := Dial(srv.Addr)
	require.NoError(t, err)
	defer func() { _ = c.Close() }()

	const workers, rounds = 12, 40
	var wg sync.WaitGroup
	var bad, cancelled atomic.Int32
	report := func(format string, args ...any) {
		if bad.Add(1) < 5 {
			t.Errorf(format, args...)
		}
	}
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 19))
			for i := range rounds {
				key := fmt.Sprintf("s%d-%d", w, i%4)
				opts := []Option{WithLeaseTTL(w + 2)}
				if i%3 == 1 {
					opts = append(opts, WithLimit(3))
				}
				actx, acancel := context.WithCancel(ctx)
				if r.IntN(3) == 0 {
					d := time.Duration(r.IntN(300)) * time.Microsecond
					time.AfterFunc(d, acancel)
				}
				g, err := c.Acquire(actx, key, time.Second, opts...)
				acancel()
				if errors.Is(err, context.Canceled) {
					cancelled.Add(1)
					continue
				}
				if err != nil {
					report("acquire %s: %v", key, err)
					return
				}
				if g.Key != key || g.Lease != time.Duration(w+2)*time.Second {
					report("acquire %s: got grant %+v", key, g)
				}
				switch r.IntN(3) {
				case 0:
					if _, err := c.Stats(ctx); err != nil {
						report("stats: %v", err)
					}
				case 1:
					if err := c.Ping(ctx); err != nil {
						report("ping: %v", err)
					}
				}
				g2, err := c.Renew(ctx, g, WithLeaseTTL(w+3))
				if err != nil || g2.Lease != time.Duration(w+3)*time.Second {
					report("renew %s: %v %v", key, g2.Lease, err)
				}
				if err := c.Release(ctx, g); err != nil {
					report("release %s: %v", key, err)
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("%d acquires abandoned", cancelled.Load())
	require.NoError(t, c.Err())
	require.Eventually(t, func() bool {
		for w := range workers {
			for i := range 4 {
				if r19Held(srv, fmt.Sprintf("s%d-%d", w, i)) {
					return false
				}
			}
		}
		for _, s := range srv.Table.Stats(srv.Table.Now()).Semaphores {
			if s.Holders > 0 {
				return false
			}
		}
		return true
	}, 5*time.Second, 10*time.Millisecond, "an abandoned grant was never released")
}

// r19Held reports whether some connection holds lock key on srv.
func r19Held(srv *reactortest.Server, key string) bool {
	for _, ls := range srv.Table.Stats(srv.Table.Now()).Locks {
		if ls.Key == key {
			return ls.OwnerConnID != 0
		}
	}
	return false
}

// TestHeartbeatVsOldServer: against a dflockd 1.10 server, which
// answers ping with "error", the heartbeat's pings are absorbed and never
// taken for the answer to a request; the connection stays usable.
func TestHeartbeatVsOldServer(t *testing.T) {
	t.Parallel()
	const tok = "0000000000000001000000000000000a"
	var pings atomic.Int32
	addr := scriptedServer(t, func(i int, verb string) (string, time.Duration) {
		switch verb {
		case "ping":
			pings.Add(1)
			return "error\n", 0
		case "l":
			return "ok " + tok + " 33\n", 0
		case "r":
			return "ok\n", 0
		}
		return "error\n", 0
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := DialContext(ctx, addr, WithHeartbeat(20*time.Millisecond))
	require.NoError(t, err)
	defer func() { _ = c.Close() }()
	for range 10 {
		time.Sleep(15 * time.Millisecond)
		g, err := c.Acquire(ctx, "k", 0)
		require.NoError(t, err)
		require.Equal(t, tok, g.Token)
		require.NoError(t, c.Release(ctx, g))
	}
	require.Eventually(t, func() bool { return pings.Load() > 0 }, 2*time.Second, 5*time.Millisecond)
	require.NoError(t, c.Err())
}

// TestHeartbeatSilentWhilePending: no ping is sent while a request
// is outstanding (the server does not run its read timeout then), and the
// pings resume afterwards.
func TestHeartbeatSilentWhilePending(t *testing.T) {
	t.Parallel()
	const tok = "0000000000000001000000000000000a"
	var mu sync.Mutex
	var verbs []string
	addr := scriptedServer(t, func(i int, verb string) (string, time.Duration) {
		mu.Lock()
		verbs = append(verbs, verb)
		mu.Unlock()
		if verb == "l" {
			return "ok " + tok + " 33\n", 400 * time.Millisecond
		}
		return "ok\n", 0
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := DialContext(ctx, addr, WithHeartbeat(30*time.Millisecond))
	require.NoError(t, err)
	defer func() { _ = c.Close() }()
	_, err = c.Acquire(ctx, "k", time.Second)
	require.NoError(t, err)
	mu.Lock()
	require.Equal(t, []string{"l"}, verbs, "ping sent while a request was outstanding")
	mu.Unlock()
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(verbs) > 1
	}, 2*time.Second, 5*time.Millisecond)
	require.NoError(t, c.Err())
}

// TestOddButLegalReplies: CRLF-terminated replies, a renewal lease
// different from the one asked, and an empty stats object parse; an unknown
// status breaks the connection with an error matching ErrClosed and
// ErrServer (but not net.ErrClosed), and Done is closed.
func TestOddButLegalReplies(t *testing.T) {
	t.Parallel()
	const tok = "00000000000000ff00000000000000aa"
	var reply atomic.Value
	addr := scriptedServer(t, func(int, string) (string, time.Duration) { return reply.Load().(string), 0 })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(addr)
	require.NoError(t, err)
	defer func() { _ = c.Close() }()

	reply.Store("ok " + tok + " 7\r\n")
	g, err := c.Acquire(ctx, "k", 0, WithLeaseTTL(5))
	require.NoError(t, err)
	require.Equal(t, tok, g.Token)
	require.Equal(t, uint64(0xff), g.Fence())
	require.Equal(t, 7*time.Second, g.Lease)

	reply.Store("ok 33\r\n")
	g, err = c.Renew(ctx, g, WithLeaseTTL(5))
	require.NoError(t, err)
	require.Equal(t, 33*time.Second, g.Lease)
	n, err := Renew(c, "k", tok)
	require.NoError(t, err)
	require.Equal(t, 33, n)

	reply.Store("ok {}\r\n")
	body, err := c.Stats(ctx)
	require.NoError(t, err)
	require.Equal(t, "{}", string(body))

	reply.Store("acquired " + tok + " 12\n")
	st, gotTok, lease, err := Enqueue(c, "k")
	require.NoError(t, err)
	require.Equal(t, StatusAcquired, st)
	require.Equal(t, tok, gotTok)
	require.Equal(t, 12, lease)

	reply.Store("queued\r\n")
	st, gotTok, lease, err = SemEnqueue(c, "k", 2)
	require.NoError(t, err)
	require.Equal(t, StatusQueued, st)
	require.Empty(t, gotTok)
	require.Zero(t, lease)
	require.NoError(t, c.Err())

	reply.Store("bogus_status\n")
	err = c.Ping(ctx)
	require.ErrorIs(t, err, ErrClosed)
	select {
	case <-c.Done():
	case <-time.After(2 * time.Second):
		t.Fatal("Done not closed after a malformed reply")
	}
	require.ErrorIs(t, c.Err(), ErrServer)
	require.ErrorIs(t, c.Err(), ErrClosed)
	require.False(t, errors.Is(c.Err(), errClosedHere), "a broken connection must not match net.ErrClosed")
}

// TestGateCloseWhileHeldBack: a request held back behind an
// abandoned acquire of the same key fails with ErrClosed (and net.ErrClosed)
// when the Conn is closed, and Close returns promptly.
func TestGateCloseWhileHeldBack(t *testing.T) {
	t.Parallel()
	srv := reactortest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	other, err := Dial(srv.Addr)
	require.NoError(t, err)
	defer func() { _ = other.Close() }()
	_, err = other.Acquire(ctx, "k", 0)
	require.NoError(t, err)

	c, err := Dial(srv.Addr)
	require.NoError(t, err)
	actx, acancel := context.WithCancel(ctx)
	aerr := make(chan error, 1)
	go func() { _, err := c.Acquire(actx, "k", 5*time.Second); aerr <- err }()
	require.Eventually(t, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.pending.len() == 1
	}, 2*time.Second, time.Millisecond)
	acancel()
	require.ErrorIs(t, <-aerr, context.Canceled)

	berr := make(chan error, 1)
	go func() { _, err := c.Acquire(ctx, "k", 5*time.Second); berr <- err }()
	require.Eventually(t, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.gates[abandonKey{key: "k"}]) == 1
	}, 2*time.Second, time.Millisecond)
	start := time.Now()
	require.NoError(t, c.Close())
	require.Less(t, time.Since(start), time.Second)
	select {
	case err := <-berr:
		require.ErrorIs(t, err, ErrClosed)
		require.True(t, strings.Contains(err.Error(), "closed"))
	case <-time.After(2 * time.Second):
		t.Fatal("held-back acquire not ended by Close")
	}
}
