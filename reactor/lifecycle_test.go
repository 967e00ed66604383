package reactor_test

import (
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/lockcore"
	"github.com/lockreactor/dflockd/reactor"
	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// TestCloseRacingServe: Close (here reactortest's cleanup) may run before
// the goroutine running Serve has started; -race checks that Serve's
// registration and Close's wait for it are ordered.
func TestCloseRacingServe(t *testing.T) {
	t.Parallel()
	for range 50 {
		t.Run("start-stop", func(t *testing.T) { reactortest.Start(t) })
	}
}

func TestServeAfterClose(t *testing.T) {
	t.Parallel()
	table := lockcore.New(lockcore.Config{})
	table.Start()
	defer table.Stop()
	for _, stop := range []string{"close", "shutdown"} {
		srv, err := reactor.New(reactor.Config{Addr: "127.0.0.1:0"}, table)
		require.NoError(t, err)
		if stop == "close" {
			srv.Close()
		} else {
			require.NoError(t, srv.Shutdown(t.Context()))
		}
		done := make(chan error, 1)
		go func() { done <- srv.Serve() }()
		select {
		case err := <-done:
			require.NoError(t, err, stop)
		case <-time.After(5 * time.Second):
			t.Fatalf("Serve after %s did not return", stop)
		}
		srv.Close() // idempotent
	}
}

// TestCloseDuringConnectStorm: the accept loop hands connections to the
// event loops without waiting for them to be registered. Closing the
// server in the middle of a connection storm must still serve or close
// every accepted connection: none is left counted, holding a lock, or
// holding a descriptor (a registration lost between accept and the loops'
// exit would leave all three).
func TestCloseDuringConnectStorm(t *testing.T) {
	// Not parallel: it counts the process's open descriptors.
	fdsBefore := openFDs(t)
	table := lockcore.New(lockcore.Config{AutoRelease: true})
	table.Start()
	defer table.Stop()
	for round := range 5 {
		srv, err := reactor.New(reactor.Config{Addr: "127.0.0.1:0", Loops: 2}, table)
		require.NoError(t, err)
		go func() { _ = srv.Serve() }()
		addr := srv.Addr().String()

		var (
			mu      sync.Mutex
			clients []net.Conn
			wg      sync.WaitGroup
			stop    atomic.Bool
		)
		for d := range 4 {
			wg.Go(func() {
				for i := 0; !stop.Load() && i < 2000; i++ {
					c, err := net.DialTimeout("tcp", addr, time.Second)
					if err != nil {
						return // the listener is closed
					}
					mu.Lock()
					clients = append(clients, c)
					mu.Unlock()
					_, _ = fmt.Fprintf(c, "l\nstorm-%d-%d-%d\n10\n", round, d, i)
				}
			})
		}
		// Close once the storm is under way.
		require.Eventually(t, func() bool {
			return srv.Metrics().Accepted >= 200 && table.Counters().Held[lockcore.Locks] > 0
		}, 10*time.Second, time.Millisecond)
		srv.Close()
		stop.Store(true)
		wg.Wait()
		require.Zero(t, srv.Connections(), "round %d: connections still counted after Close", round)
		require.Eventually(t, func() bool {
			c := table.Counters()
			return c.Held[lockcore.Locks] == 0
		}, 5*time.Second, 5*time.Millisecond, "round %d: locks of closed connections still held", round)
		for _, c := range clients {
			_ = c.Close()
		}
	}
	require.Eventually(t, func() bool { return openFDs(t) <= fdsBefore }, 5*time.Second, 10*time.Millisecond,
		"descriptors leaked: %d open before, %d after", fdsBefore, openFDs(t))
}

// openFDs counts the process's open descriptors.
func openFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count descriptors here: %v", err)
	}
	return len(ents)
}

// TestCloseDuringAuthFailDelay: Server.Close "stops the server at
// once". A connection that failed auth and is waiting out AuthFailDelay
// before its close must not hold Close up for the rest of that delay.
func TestCloseDuringAuthFailDelay(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		srv := tr.start(t, func(c *reactortest.Config) {
			c.Server.AuthToken = "s3cret"
			c.Server.AuthFailDelay = 3 * time.Second
		})
		c := srv.Connect(t)
		require.Equal(t, rErrAuth, c.Do("auth", "_", "wrong"))
		start := time.Now()
		srv.Close()
		require.Less(t, time.Since(start), time.Second, "Close waited for the auth-failure pause")
	})
}
