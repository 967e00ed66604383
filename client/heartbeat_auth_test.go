package client_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/client"
	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// TestHeartbeatAfterAuth: with auth (plain and TLS) and without,
// a DialContext heartbeat keeps an idle connection past a short read
// timeout; the first ping comes after auth, so it is not error_auth.
func TestHeartbeatAfterAuth(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		tls, auth bool
	}{{"plain-auth", false, true}, {"tls-auth", true, true}, {"plain-noauth", false, false}, {"tls-noauth", true, false}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := start(t, func(c *reactortest.Config) {
				c.Server.ReadTimeout = 300 * time.Millisecond
				c.SelfSignedTLS = tc.tls
				if tc.auth {
					c.Server.AuthToken = "tok"
				}
			})
			opts := []client.DialOption{client.WithHeartbeat(time.Millisecond)} // fires at once
			if tc.tls {
				opts = append(opts, client.WithTLS(srv.ClientTLS))
			}
			if tc.auth {
				opts = append(opts, client.WithAuth("tok"))
			}
			c := dial(t, srv.Addr, opts...)
			time.Sleep(900 * time.Millisecond)
			require.NoError(t, c.Err())
			require.NoError(t, c.Ping(ctxT(t, 5*time.Second)))
		})
	}
}

// TestDialHasNoHeartbeat: Dial and DialTLS start no heartbeat
// (as before): an idle connection is closed by the server's read timeout.
func TestDialHasNoHeartbeat(t *testing.T) {
	t.Parallel()
	srv := start(t, func(c *reactortest.Config) { c.Server.ReadTimeout = 200 * time.Millisecond })
	c, err := client.Dial(srv.Addr)
	require.NoError(t, err)
	defer func() { _ = c.Close() }()
	select {
	case <-c.Done():
	case <-time.After(3 * time.Second):
		t.Fatal("idle Dial connection not closed by the read timeout")
	}
	tsrv := start(t, func(c *reactortest.Config) {
		c.Server.ReadTimeout = 200 * time.Millisecond
		c.SelfSignedTLS = true
	})
	tc, err := client.DialTLS(tsrv.Addr, tsrv.ClientTLS)
	require.NoError(t, err)
	defer func() { _ = tc.Close() }()
	select {
	case <-tc.Done():
	case <-time.After(3 * time.Second):
		t.Fatal("idle DialTLS connection not closed by the read timeout")
	}
}

// TestHeartbeatRacesRequests: requests at once after DialContext
// with a 1 ms heartbeat, from many goroutines (run with -race).
func TestHeartbeatRacesRequests(t *testing.T) {
	t.Parallel()
	srv := start(t, func(c *reactortest.Config) { c.Server.AuthToken = "tok" })
	ctx := ctxT(t, 10*time.Second)
	for range 5 {
		c, err := client.DialContext(ctx, srv.Addr, client.WithAuth("tok"), client.WithHeartbeat(time.Millisecond))
		require.NoError(t, err)
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for range 30 {
					if err := c.Ping(ctx); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		require.NoError(t, c.Close())
	}
}

// TestSecondAuthIsErrAuth: Conn.Auth's doc says "A wrong secret
// is ErrAuth, and the server then closes the connection". A second auth
// with the right secret (answered a bare error, the connection kept and
// still authenticated) now matches ErrAuth too.
func TestSecondAuthIsErrAuth(t *testing.T) {
	t.Parallel()
	srv := start(t, func(c *reactortest.Config) { c.Server.AuthToken = "tok" })
	ctx := ctxT(t, 5*time.Second)
	c := dial(t, srv.Addr, client.WithAuth("tok"))
	err := c.Auth(ctx, "tok")
	t.Logf("second auth: %v", err)
	require.ErrorIs(t, err, client.ErrAuth)
	require.ErrorIs(t, err, client.ErrServer)
	require.NoError(t, c.Err(), "the connection is kept")
	_, err = c.Acquire(ctx, "k", 0)
	require.NoError(t, err, "and still authenticated")
}

// TestGrantTokenEdits: every use of a Grant follows its Token:
// Renew of an edited copy renews (and returns) the new token; editing
// the returned Grant back releases the original; a Token edited to
// garbage or "" is refused (ErrInvalid) rather than using the cache.
func TestGrantTokenEdits(t *testing.T) {
	t.Parallel()
	srv := start(t)
	ctx := ctxT(t, 5*time.Second)
	c := dial(t, srv.Addr)
	g1, err := c.Acquire(ctx, "s", 0, client.WithLimit(2))
	require.NoError(t, err)
	g2, err := c.Acquire(ctx, "s", 0, client.WithLimit(2))
	require.NoError(t, err)

	h := g1
	h.Token = g2.Token
	r, err := c.Renew(ctx, h)
	require.NoError(t, err)
	require.Equal(t, g2.Token, r.Token)
	require.Equal(t, g2.Fence(), r.Fence())

	r.Token = g1.Token
	require.Equal(t, g1.Fence(), r.Fence())
	require.NoError(t, c.Release(ctx, r)) // releases g1
	_, err = c.Renew(ctx, g1)
	require.ErrorIs(t, err, client.ErrServer)
	_, err = c.Renew(ctx, g2)
	require.NoError(t, err)

	for _, bad := range []string{"", "zz", strings.ToUpper(g2.Token)} {
		b := g2
		b.Token = bad
		require.ErrorIs(t, c.Release(ctx, b), client.ErrInvalid, "token %q", bad)
		require.Equal(t, uint64(0), b.Fence())
	}
	_, err = c.Renew(ctx, g2)
	require.NoError(t, err, "g2 still held")

	// A Grant built from a token string only (no cache).
	require.NoError(t, c.Release(context.Background(), client.Grant{Key: "s", Limit: 2, Token: g2.Token}))
}
