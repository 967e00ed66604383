package client

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// stubLockServer accepts connections and answers "l" with a fresh grant and
// "r" never (a stalled release); closedCh receives a value when the client
// closes a connection.
func stubLockServer(t *testing.T, closedCh chan<- struct{}, conns chan<- net.Conn) string {
	t.Helper()
	return acceptingServer(t, func(nc net.Conn) {
		conns <- nc
		br := bufio.NewReader(nc)
		n := 0
		for {
			var verb string
			for j := range 3 {
				line, err := br.ReadString('\n')
				if err != nil {
					closedCh <- struct{}{}
					return
				}
				if j == 0 {
					verb = strings.TrimSuffix(line, "\n")
				}
			}
			n++
			if verb == "l" {
				_, _ = fmt.Fprintf(nc, "ok %016x%016x 30\n", n, 7)
			}
			// "r": never answered.
		}
	})
}

// goroutinesIn counts the goroutines whose stack mentions fn.
func goroutinesIn(fn string) int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, fn) {
			n++
		}
	}
	return n
}

// TestLockCloseEndsBackgroundRelease: Lock.Close "stops renewal and
// closes the connection". After a Release whose ctx ended first (the
// release goes on in the background), Close cuts that release off with
// its connection: nothing the Lock started outlives Close (it lived on
// for up to releaseWait, 5 s).
func TestLockCloseEndsBackgroundRelease(t *testing.T) {
	closed := make(chan struct{}, 4)
	conns := make(chan net.Conn, 4)
	addr := stubLockServer(t, closed, conns)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l := &Lock{Key: "rv2-close", LeaseTTL: 30, Servers: []string{addr}, Heartbeat: -1}
	ok, err := l.Acquire(ctx)
	require.NoError(t, err)
	require.True(t, ok)

	rctx, rcancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer rcancel()
	require.ErrorIs(t, l.Release(rctx), context.DeadlineExceeded)
	require.NoError(t, l.Close())
	closedAt := time.Now()

	defer func() {
		// End the background release now (the server side hangs up)
		// and wait for it, so that it does not leak into later tests.
		for len(conns) > 0 {
			_ = (<-conns).Close()
		}
		dctx, dcancel := context.WithTimeout(context.Background(), releaseWait+2*time.Second)
		defer dcancel()
		_ = l.Release(dctx)
	}()

	select {
	case <-closed:
	case <-time.After(time.Second):
		t.Errorf("after Lock.Close returned, the hold's connection was still open %v later "+
			"(release goroutines %d, Conn writers %d still running)",
			time.Since(closedAt).Round(time.Millisecond),
			goroutinesIn("(*holder).runRelease"), goroutinesIn("(*Conn).writeLoop"))
	}
}

// TestConnGatedRequestsKeepOrder: "Requests from any number of
// goroutines are written in the order they are made." Two acquires of
// the same key, B then C (C made only after B is seen held back), are
// both held back behind an abandoned acquire. When its grant arrives and
// its release is queued, they go in call order (all woken at once, they
// raced for c.mu, and C was often written first, so the server, granting
// in FIFO order, served the later request first).
func TestConnGatedRequestsKeepOrder(t *testing.T) {
	t.Parallel()
	addr := scriptedServer(t, func(i int, verb string) (string, time.Duration) {
		switch verb {
		case "l":
			if i%4 == 0 { // the abandoned acquire of each round: a late grant
				return fmt.Sprintf("ok %016x%016x 30\n", i+1, 7), 150 * time.Millisecond
			}
			return fmt.Sprintf("ok %016x%016x 30\n", i+1, 7), 0
		case "r":
			return "ok\n", 0
		}
		return "ok\n", 0
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	const rounds = 16
	reordered := 0
	for round := range rounds {
		c, err := Dial(addr)
		require.NoError(t, err)

		actx, acancel := context.WithCancel(ctx)
		aerr := make(chan error, 1)
		go func() { _, err := c.Acquire(actx, "g", 5*time.Second); aerr <- err }()
		require.Eventually(t, func() bool {
			c.mu.Lock()
			defer c.mu.Unlock()
			return c.pending.len() == 1
		}, 2*time.Second, time.Millisecond)
		acancel()
		require.ErrorIs(t, <-aerr, context.Canceled)

		type res struct {
			g   Grant
			err error
		}
		bres, cres := make(chan res, 1), make(chan res, 1)
		go func() { g, err := c.Acquire(ctx, "g", 5*time.Second); bres <- res{g, err} }()
		require.Eventually(t, func() bool { // B is held back
			c.mu.Lock()
			defer c.mu.Unlock()
			return len(c.gates[abandonKey{key: "g"}]) == 1
		}, 2*time.Second, time.Millisecond)
		time.Sleep(10 * time.Millisecond)
		go func() { g, err := c.Acquire(ctx, "g", 5*time.Second); cres <- res{g, err} }()
		b, cc := <-bres, <-cres
		require.NoError(t, b.err)
		require.NoError(t, cc.err)
		if b.g.Fence() > cc.g.Fence() {
			reordered++
			t.Logf("round %d: C (made later) was written before B: fences B=%d C=%d", round, b.g.Fence(), cc.g.Fence())
		}
		_ = c.Close()
	}
	require.Zero(t, reordered, "in %d of %d rounds a held-back request made later went out first", reordered, rounds)
}
