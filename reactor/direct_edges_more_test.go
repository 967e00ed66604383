package reactor_test

import (
	"bufio"
	"context"
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

// TestDrainHandsOnAcrossLoops: waiters parked on both loops while
// the server drains; the holders release (allowed while draining), each
// release granting a waiter on some loop (often written directly by the
// releasing loop), whose client releases in turn. Every waiter must read
// its grant, and Shutdown must return nil: nothing was cut off.
func TestDrainHandsOnAcrossLoops(t *testing.T) {
	srv := reactortest.Start(t, func(c *reactortest.Config) {
		c.Server.Loops = 2
		c.Server.Metrics = true
	})
	const keys, chain = 8, 6
	type cl struct {
		c  net.Conn
		br *bufio.Reader
	}
	dial := func() cl {
		c, err := net.Dial("tcp", srv.Addr)
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close() })
		return cl{c, bufio.NewReader(c)}
	}
	readLine := func(x cl) (string, error) {
		_ = x.c.SetReadDeadline(time.Now().Add(8 * time.Second))
		l, err := x.br.ReadString('\n')
		return strings.TrimSuffix(l, "\n"), err
	}
	clients := make([][]cl, keys)
	for k := range keys {
		for range chain {
			clients[k] = append(clients[k], dial())
		}
	}
	// The first of each chain holds; the others park behind it.
	for k := range keys {
		key := fmt.Sprintf("d%d", k)
		for i, x := range clients[k] {
			_, err := io.WriteString(x.c, req("l", key, "30"))
			require.NoError(t, err)
			if i == 0 {
				l, err := readLine(x)
				require.NoError(t, err)
				require.Regexp(t, grantRe, l)
				tokens.Store(x.c, grantRe.FindStringSubmatch(l)[2])
				continue
			}
			// Queue order is the slice's order.
			want := int64(k*(chain-1) + i)
			require.Eventually(t, func() bool { return srv.Metrics().Parked == want }, 5*time.Second, time.Millisecond)
		}
	}
	require.Eventually(t, func() bool { return srv.Metrics().Parked == keys*(chain-1) }, 5*time.Second, 5*time.Millisecond)
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shut <- srv.Shutdown(ctx)
	}()
	time.Sleep(20 * time.Millisecond) // draining now
	var wg sync.WaitGroup
	errs := make(chan error, keys*chain)
	for k := range keys {
		wg.Go(func() {
			key := fmt.Sprintf("d%d", k)
			for i, x := range clients[k] {
				tok, _ := tokens.Load(x.c)
				if i > 0 {
					l, err := readLine(x)
					if err != nil {
						errs <- fmt.Errorf("%s waiter %d: %v", key, i, err)
						return
					}
					m := grantRe.FindStringSubmatch(l)
					if m == nil {
						errs <- fmt.Errorf("%s waiter %d: reply %q", key, i, l)
						return
					}
					tok = m[2]
				}
				if i == chain-1 {
					// Nothing parked is left once the last grants are
					// out: Shutdown may close before this release.
					return
				}
				if _, err := io.WriteString(x.c, req("r", key, tok.(string))); err != nil {
					errs <- fmt.Errorf("%s client %d release: %v", key, i, err)
					return
				}
				if l, err := readLine(x); err != nil || l != rOK {
					errs <- fmt.Errorf("%s client %d release reply %q %v", key, i, l, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	select {
	case err := <-shut:
		require.NoError(t, err, "Shutdown")
	case <-time.After(12 * time.Second):
		t.Fatal("Shutdown did not return")
	}
	t.Logf("directs %d", srv.Metrics().DirectResults)
}

var tokens sync.Map

// TestReadTimeoutAfterDirectGrant: a request parked longer than
// the read timeout, then granted by a release on (possibly) another loop
// and written directly: the read timeout must count from the grant (a
// release sent soon after is served), and must still fire once the client
// idles past it after that.
func TestReadTimeoutAfterDirectGrant(t *testing.T) {
	const rt = 300 * time.Millisecond
	srv := reactortest.Start(t, func(c *reactortest.Config) {
		c.Server.Loops = 2
		c.Server.Metrics = true
		c.Server.ReadTimeout = rt
	})
	for round := range 6 {
		key := fmt.Sprintf("rt%d", round)
		holder := srv.Dial(t)
		tok := mustGrant(t, holder.Do("l", key, "10"), rOK, 33)
		waiter := srv.Dial(t)
		waiter.Request("l", key, "10")
		// The holder must stay active too; the waiter is parked (no read
		// timeout while parked) for longer than rt.
		time.Sleep(rt / 2)
		require.Equal(t, rOK, holder.Do("ping", "_", "_"))
		time.Sleep(rt / 2)
		require.Equal(t, rOK, holder.Do("ping", "_", "_"))
		time.Sleep(rt / 2)
		require.Equal(t, rOK, holder.Do("r", key, tok))
		granted := time.Now()
		_ = waiter.SetReadDeadline(time.Now().Add(5 * time.Second))
		l, err := bufio.NewReader(waiter).ReadString('\n')
		require.NoError(t, err)
		wtok := mustGrant(t, strings.TrimSuffix(l, "\n"), rOK, 33)
		// Within rt of the grant: served.
		time.Sleep(rt / 3)
		waiter.Request("r", key, wtok)
		_ = waiter.SetReadDeadline(time.Now().Add(5 * time.Second))
		// reactortest.Conn reads through its own reader; we used a fresh
		// one above only for the grant (nothing else was pending).
		l, err = bufio.NewReader(waiter).ReadString('\n')
		require.NoError(t, err, "round %d: release %v after grant", round, time.Since(granted))
		require.Equal(t, rOK+"\n", l, "round %d", round)
		// Then idle: the read timeout ends it.
		start := time.Now()
		_ = waiter.SetReadDeadline(time.Now().Add(5 * time.Second))
		l, err = bufio.NewReader(waiter).ReadString('\n')
		require.Equal(t, rError+"\n", l, "round %d: %v", round, err)
		require.Less(t, time.Since(start), rt+500*time.Millisecond)
	}
	t.Logf("directs %d", srv.Metrics().DirectResults)
}
