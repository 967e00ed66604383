package client_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/client"
	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// TestGrantTokenFieldIsTheToken: Grant is documented as a plain
// value whose exported Token is "the server's 32-hex token"; a Grant whose
// Token was set to another grant's token must address that token. The
// client caches the parsed token in an unexported field and prefers it, so
// a copied Grant with a changed Token still releases the original one.
func TestGrantTokenFieldIsTheToken(t *testing.T) {
	t.Parallel()
	srv := reactortest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.Dial(srv.Addr)
	require.NoError(t, err)
	defer func() { _ = c.Close() }()

	g1, err := c.Acquire(ctx, "p", 0, client.WithLimit(2))
	require.NoError(t, err)
	g2, err := c.Acquire(ctx, "p", 0, client.WithLimit(2))
	require.NoError(t, err)

	h := g1
	h.Token = g2.Token // e.g. a stored Grant updated with a new token
	assert.Equal(t, client.FenceOf(g2.Token), h.Fence(), "Fence must follow Token")
	require.NoError(t, c.Release(ctx, h))

	// h named g2's token: g2 must be gone and g1 still held.
	_, err = c.Renew(ctx, g1)
	assert.NoError(t, err, "releasing a Grant whose Token is g2's released g1 instead")
	_, err = c.Renew(ctx, g2)
	require.ErrorIs(t, err, client.ErrServer)
}

// TestAuthenticateCompat: dflockd's client returns ErrAuth from
// Authenticate for any reply other than "ok" (it has no other outcome);
// against a server started without --auth-token, which answers "error",
// code ported from it checks errors.Is(err, ErrAuth).
func TestAuthenticateCompat(t *testing.T) {
	t.Parallel()
	srv := reactortest.Start(t)
	c, err := client.Dial(srv.Addr)
	require.NoError(t, err)
	defer func() { _ = c.Close() }()
	err = client.Authenticate(c, "secret")
	require.Error(t, err)
	require.True(t, errors.Is(err, client.ErrAuth), "dflockd's Authenticate returns ErrAuth here; got %v", err)
}

// TestShardEdges: the shard functions never panic and stay in
// range on edge inputs (no servers, one server, empty key), and are stable.
func TestShardEdges(t *testing.T) {
	t.Parallel()
	for _, f := range []client.ShardFunc{client.CRC32Shard, client.JumpShard} {
		require.Equal(t, 0, f("", 0))
		require.Equal(t, 0, f("k", -3))
		require.Equal(t, 0, f("", 1))
		require.Equal(t, 0, f("k", 1))
		for n := 1; n <= 17; n++ {
			for _, k := range []string{"", "a", "key-with-\x00-nul", "é"} {
				i := f(k, n)
				require.True(t, i >= 0 && i < n, "%q/%d -> %d", k, n, i)
				require.Equal(t, i, f(k, n))
			}
		}
	}
	require.Equal(t, -1, client.RendezvousShard(nil)("k", 0))
	require.Equal(t, -1, client.RendezvousShard([]string{"a"})("k", 2))
	one := client.RendezvousShard([]string{"a:1"})
	require.Equal(t, 0, one("", 1))
	three := []string{"a:1", "b:2", "c:3"}
	f := client.RendezvousShard(three)
	g := client.RendezvousShard([]string{"c:3", "a:1", "b:2"})
	for _, k := range []string{"", "x", "y", "zz"} {
		require.Equal(t, three[f(k, 3)], []string{"c:3", "a:1", "b:2"}[g(k, 3)], "order changed the owner of %q", k)
	}
	// CRC32 of "" is 0; of "123456789" the IEEE check value 0xCBF43926.
	require.Equal(t, 0, client.CRC32Shard("", 7))
	require.Equal(t, int(uint32(0xCBF43926)%1000), client.CRC32Shard("123456789", 1000))
}
