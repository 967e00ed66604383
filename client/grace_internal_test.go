package client

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// silentServer accepts connections and reads them, but never answers: a
// wedged server, or a half-open connection.
func silentServer(t *testing.T) string {
	return acceptingServer(t, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })
}

// silentNoReadServer accepts connections and neither reads nor answers.
func silentNoReadServer(t *testing.T) string { return acceptingServer(t, nil) }

// acceptingServer accepts connections and runs serve (if not nil) on each
// in a goroutine; they are closed at the end of the test.
func acceptingServer(t *testing.T, serve func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { _ = c.Close() })
			if serve != nil {
				go serve(c)
			}
		}
	}()
	return ln.Addr().String()
}

// scriptedServer answers requests (three lines each) in the order they
// arrive, over all its connections: the i-th (counted from 0), whose first
// line is verb, with reply after delay; an empty reply is never answered.
func scriptedServer(t *testing.T, answer func(i int, verb string) (reply string, delay time.Duration)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	var mu sync.Mutex
	n := 0
	serve := func(nc net.Conn) {
		defer func() { _ = nc.Close() }()
		br := bufio.NewReader(nc)
		for {
			verb, err := readRequest(br)
			if err != nil {
				return
			}
			mu.Lock()
			i := n
			n++
			mu.Unlock()
			reply, delay := answer(i, verb)
			if reply == "" {
				continue
			}
			time.Sleep(delay)
			if _, err := nc.Write([]byte(reply)); err != nil {
				return
			}
		}
	}
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { _ = nc.Close() })
			go serve(nc)
		}
	}()
	return ln.Addr().String()
}

// TestReplyGrace: a request the server never answers fails once its own
// timeout plus the grace has passed, even with a context that never ends,
// and the connection is closed.
func TestReplyGrace(t *testing.T) {
	t.Parallel()
	addr := silentServer(t)
	const grace = 200 * time.Millisecond
	for _, tc := range []struct {
		name    string
		timeout time.Duration // the request's own
		do      func(c *Conn) error
	}{
		{"acquire", time.Second, func(c *Conn) error {
			_, err := c.Acquire(context.Background(), "k", time.Second)
			return err
		}},
		{"release", 0, func(c *Conn) error {
			return c.Release(context.Background(), Grant{Key: "k", Token: "00000000000000010000000000000002"})
		}},
		{"ping", 0, func(c *Conn) error { return c.Ping(context.Background()) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Dial(addr)
			require.NoError(t, err)
			defer func() { _ = c.Close() }()
			c.grace = grace
			start := time.Now()
			err = tc.do(c)
			took := time.Since(start)
			require.ErrorIs(t, err, ErrClosed)
			require.GreaterOrEqual(t, took, tc.timeout+grace)
			require.Less(t, took, tc.timeout+grace+5*time.Second)
			require.Error(t, c.Err(), "the connection is closed")
		})
	}
}

// TestReleaseAfterLeaseRanOut: a hold whose lease ran out unnoticed (here
// the renewer is stopped, as by a long pause) makes Release report ErrLost,
// not just the server's error: the lock may not have been held until
// Release.
func TestReleaseAfterLeaseRanOut(t *testing.T) {
	t.Parallel()
	srv := reactortest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	l := &Lock{Key: "k", LeaseTTL: 1, Servers: []string{srv.Addr}}
	ok, err := l.Acquire(ctx)
	require.NoError(t, err)
	require.True(t, ok)
	l.h.mu.Lock()
	hd := l.h.cur
	l.h.mu.Unlock()
	l.h.stopRenewer(hd)
	time.Sleep(1500 * time.Millisecond) // the 1 s lease runs out on the server
	err = l.Release(ctx)
	require.ErrorIs(t, err, ErrLost)
	require.ErrorIs(t, err, ErrServer, "the server's answer is kept")
	require.False(t, errors.Is(err, context.DeadlineExceeded))
}

// TestReplyGraceBehindBlockedRequest: a request pipelined behind a blocked
// one is answered only after it, so its grace counts from the blocked
// request's timeout: the connection is not broken while the server is
// doing what it should.
func TestReplyGraceBehindBlockedRequest(t *testing.T) {
	t.Parallel()
	srv := reactortest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	holder, err := Dial(srv.Addr)
	require.NoError(t, err)
	defer func() { _ = holder.Close() }()
	_, err = holder.Acquire(ctx, "k", 0)
	require.NoError(t, err)

	c, err := Dial(srv.Addr)
	require.NoError(t, err)
	defer func() { _ = c.Close() }()
	c.grace = 200 * time.Millisecond
	blocked := make(chan error, 1)
	go func() {
		_, err := c.Acquire(context.Background(), "k", 2*time.Second)
		blocked <- err
	}()
	require.Eventually(t, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.pending.len() == 1
	}, 5*time.Second, time.Millisecond)
	start := time.Now()
	require.NoError(t, c.Ping(context.Background()), "answered after the blocked acquire times out")
	require.Greater(t, time.Since(start), time.Second)
	require.ErrorIs(t, <-blocked, ErrTimeout)
	require.NoError(t, c.Err())
}

// TestReplyGraceRecheck: a call found overdue is given a recheck before
// the connection is broken, so a reply that is late but arrives (as after
// the client process was paused) keeps the connection.
func TestReplyGraceRecheck(t *testing.T) {
	t.Parallel()
	addr := scriptedServer(t, func(int, string) (string, time.Duration) {
		return "ok\n", 400 * time.Millisecond // past due + grace, before the recheck
	})
	c, err := Dial(addr)
	require.NoError(t, err)
	defer func() { _ = c.Close() }()
	c.grace = 50 * time.Millisecond
	require.NoError(t, c.Ping(context.Background()))
	require.NoError(t, c.Err())
}

// TestLockWaitAfterServedCancelledWait: a Wait whose context ended after
// its w had gone out leaves the place collected on the server; the next
// Wait (answered error_not_enqueued) keeps the lock and reports it held.
func TestLockWaitAfterServedCancelledWait(t *testing.T) {
	t.Parallel()
	srv := reactortest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	l := &Lock{Key: "ww", Servers: []string{srv.Addr}}
	st, err := l.Enqueue(ctx)
	require.NoError(t, err)
	require.Equal(t, StatusAcquired, st)
	// What the abandoned Wait's w did on the server: collect the place.
	l.h.mu.Lock()
	conn := l.h.cur.conn
	l.h.mu.Unlock()
	_, err = conn.wait(ctx, "ww", 0, time.Second, keepGrant)
	require.NoError(t, err)

	ok, err := l.Wait(ctx, time.Second)
	require.NoError(t, err)
	require.True(t, ok)
	require.NoError(t, l.Err())
	other, err := Dial(srv.Addr)
	require.NoError(t, err)
	defer func() { _ = other.Close() }()
	_, err = other.TryAcquire(ctx, "ww")
	require.ErrorIs(t, err, ErrTimeout, "the lock must stay held")
	require.NoError(t, l.Release(ctx))
}

// TestReplyGraceSuspectCleared: the call the watchdog suspected is
// forgotten once its reply is read, so a later request that gets the same
// pooled call is rechecked in its own right rather than broken at once.
func TestReplyGraceSuspectCleared(t *testing.T) {
	t.Parallel()
	addr := scriptedServer(t, func(int, string) (string, time.Duration) {
		return "ok\n", 400 * time.Millisecond // past due + grace each time
	})
	c, err := Dial(addr)
	require.NoError(t, err)
	defer func() { _ = c.Close() }()
	c.grace = 50 * time.Millisecond
	for i := range 4 {
		require.NoError(t, c.Ping(context.Background()), "ping %d", i)
	}
	require.NoError(t, c.Err())
}

// TestLockWaitAfterGrantForgotten: a fast-path grant that expired (its
// renewer stopped, as in a long pause) and that the server has since
// forgotten makes Wait fail, not report the lock held: the renewal that
// checks an error_not_enqueued answer is refused.
func TestLockWaitAfterGrantForgotten(t *testing.T) {
	t.Parallel()
	srv := reactortest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	l := &Lock{Key: "wf", LeaseTTL: 1, Servers: []string{srv.Addr}}
	st, err := l.Enqueue(ctx)
	require.NoError(t, err)
	require.Equal(t, StatusAcquired, st)
	l.h.mu.Lock()
	hd := l.h.cur
	conn := hd.conn
	l.h.mu.Unlock()
	l.h.stopRenewer(hd)
	time.Sleep(1500 * time.Millisecond) // the lease runs out; a tombstone stays
	// An abandoned w collects the tombstone (error_lease_expired).
	_, err = conn.wait(ctx, "wf", 0, time.Second, keepGrant)
	require.ErrorIs(t, err, ErrLeaseExpired)

	ok, err := l.Wait(ctx, time.Second)
	require.False(t, ok)
	require.Error(t, err)
	require.Empty(t, l.Token(), "not held")
}

// TestReacquireReleaseBounded: a held Lock that acquires again first
// releases the old hold, but waits at most reacquireReleaseWait for the
// answer, so a silent old connection does not hold up the new acquire.
func TestReacquireReleaseBounded(t *testing.T) {
	verbs := make(chan string, 8)
	addr := scriptedServer(t, func(i int, verb string) (string, time.Duration) {
		verbs <- verb
		if i == 1 {
			return "", 0 // the old hold's release: never answered
		}
		return fmt.Sprintf("ok %032x 30\n", i), 0
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l := &Lock{Key: "re", LeaseTTL: 30, AcquireTimeout: 2 * time.Second, Servers: []string{addr}}
	ok, err := l.Acquire(ctx)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, fmt.Sprintf("%032x", 0), l.Token())

	start := time.Now()
	ok, err = l.Acquire(ctx)
	took := time.Since(start)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, fmt.Sprintf("%032x", 2), l.Token())
	require.Equal(t, []string{"l", "r", "l"}, []string{<-verbs, <-verbs, <-verbs})
	require.GreaterOrEqual(t, took, reacquireReleaseWait-50*time.Millisecond, "did not wait for the release at all")
	require.Less(t, took, reacquireReleaseWait+3*time.Second, "the silent release held up the acquire")
}

// readRequest reads one three-line request and returns its verb.
func readRequest(br *bufio.Reader) (string, error) {
	var verb string
	for j := range 3 {
		line, err := br.ReadString('\n')
		if err != nil {
			return "", err
		}
		if j == 0 {
			verb = strings.TrimSuffix(line, "\n")
		}
	}
	return verb, nil
}
