package reactor_test

import (
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
