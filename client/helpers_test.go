package client_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/client"
	"github.com/lockreactor/dflockd/lockcore"
	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// dial connects to addr and closes the connection in t.Cleanup.
func dial(t *testing.T, addr string, opts ...client.DialOption) *client.Conn {
	t.Helper()
	c, err := client.DialContext(context.Background(), addr, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// ctxT returns a context that ends with the test or after d.
func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// lockStat returns the server's view of lock key (ok false when the key has
// neither holder nor waiters).
func lockStat(srv *reactortest.Server, key string) (lockcore.LockStat, bool) {
	for _, ls := range srv.Table.Stats(srv.Table.Now()).Locks {
		if ls.Key == key {
			return ls, true
		}
	}
	return lockcore.LockStat{}, false
}

// held reports whether some connection holds lock key on srv.
func held(srv *reactortest.Server, key string) bool {
	ls, ok := lockStat(srv, key)
	return ok && ls.OwnerConnID != 0
}
