package client_test

import (
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/client"
)

// Golden values computed independently with Python's zlib.crc32, which the
// Python client uses: a mixed fleet must agree on every key.
func TestCRC32ShardGolden(t *testing.T) {
	t.Parallel()
	ns := [...]int{1, 2, 3, 5, 7, 16}
	for _, tc := range []struct {
		key   string
		crc   uint32
		shard [len(ns)]int
	}{
		{"my-key", 3605215937, [...]int{0, 1, 2, 2, 1, 1}},
		{"a", 3904355907, [...]int{0, 1, 0, 2, 4, 3}},
		{"foo", 2356372769, [...]int{0, 1, 2, 4, 2, 1}},
		{"bar", 1996459178, [...]int{0, 0, 2, 3, 0, 10}},
		{"orders:42", 218055877, [...]int{0, 1, 1, 2, 4, 5}},
		{"user/1001", 1081294727, [...]int{0, 1, 2, 2, 2, 7}},
		{"lock-α", 3286734230, [...]int{0, 0, 2, 0, 3, 6}},
		{"0", 4108050209, [...]int{0, 1, 2, 4, 4, 1}},
		{"resource-with-a-longer-name-123456789", 2468676585, [...]int{0, 1, 0, 0, 4, 9}},
	} {
		require.Equal(t, tc.crc, crc32.ChecksumIEEE([]byte(tc.key)), tc.key)
		for i, n := range ns {
			require.Equal(t, tc.shard[i], client.CRC32Shard(tc.key, n), "CRC32Shard(%q, %d)", tc.key, n)
			require.Equal(t, int(tc.crc%uint32(n)), client.CRC32Shard(tc.key, n))
		}
	}
	require.Zero(t, client.CRC32Shard("k", 0))
	require.Zero(t, client.CRC32Shard("k", -1))
}

// Golden values from an independent Python implementation of the
// algorithms as documented, so ports can check themselves against them.
func TestConsistentShardGolden(t *testing.T) {
	t.Parallel()
	ns := [...]int{1, 2, 3, 5, 16}
	servers := []string{"10.0.0.1:6388", "10.0.0.2:6388", "10.0.0.3:6388"}
	rendezvous := client.RendezvousShard(servers)
	for _, tc := range []struct {
		key        string
		jump       [len(ns)]int
		rendezvous int
	}{
		{"my-key", [...]int{0, 1, 1, 1, 6}, 0},
		{"a", [...]int{0, 1, 2, 2, 12}, 0},
		{"foo", [...]int{0, 1, 1, 1, 1}, 0},
		{"bar", [...]int{0, 0, 0, 3, 11}, 0},
		{"orders:42", [...]int{0, 1, 2, 2, 5}, 1},
		{"user/1001", [...]int{0, 0, 0, 0, 15}, 0},
		{"lock-α", [...]int{0, 0, 0, 0, 8}, 2},
		{"0", [...]int{0, 0, 0, 0, 12}, 2},
		{"resource-with-a-longer-name-123456789", [...]int{0, 0, 0, 4, 4}, 0},
	} {
		for i, n := range ns {
			require.Equal(t, tc.jump[i], client.JumpShard(tc.key, n), "JumpShard(%q, %d)", tc.key, n)
		}
		require.Equal(t, tc.rendezvous, rendezvous(tc.key, len(servers)), "rendezvous %q", tc.key)
	}
	require.Zero(t, client.JumpShard("k", 0))
	require.Equal(t, -1, rendezvous("k", 2), "a server count that does not match the list")
}

func randomKeys(n int) []string {
	r := rand.New(rand.NewPCG(1, 2))
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("key-%d-%x", i, r.Uint64())
	}
	return keys
}

// Growing the fleet by one server moves about 1/(n+1) of the keys with
// the consistent functions, and only onto the new server; CRC32 moves most.
func TestShardMovementOnGrowth(t *testing.T) {
	t.Parallel()
	keys := randomKeys(20000)
	addrs := func(n int) []string {
		s := make([]string, n)
		for i := range s {
			s[i] = fmt.Sprintf("10.0.0.%d:6388", i+1)
		}
		return s
	}
	for _, n := range []int{1, 3, 7} {
		before, after := addrs(n), addrs(n+1)
		for _, tc := range []struct {
			name          string
			old, new      client.ShardFunc
			consistent    bool
			maxMovedRatio float64
		}{
			{"jump", client.JumpShard, client.JumpShard, true, 1.3 / float64(n+1)},
			{"rendezvous", client.RendezvousShard(before), client.RendezvousShard(after), true, 1.3 / float64(n+1)},
			{"crc32", client.CRC32Shard, client.CRC32Shard, false, 1},
		} {
			moved := 0
			counts := make([]int, n+1)
			for _, k := range keys {
				o, w := tc.old(k, n), tc.new(k, n+1)
				counts[w]++
				if o != w {
					moved++
					if tc.consistent {
						require.Equal(t, n, w, "%s: key %q moved between old servers", tc.name, k)
					}
				}
			}
			ratio := float64(moved) / float64(len(keys))
			require.LessOrEqual(t, ratio, tc.maxMovedRatio, "%s %d→%d moved %.3f", tc.name, n, n+1, ratio)
			if !tc.consistent && n > 1 {
				require.Greater(t, ratio, 0.5, "crc32 %d→%d", n, n+1)
			}
			for i, c := range counts { // balance: within 20% of even
				even := float64(len(keys)) / float64(n+1)
				require.InDelta(t, even, float64(c), 0.2*even, "%s: server %d of %d", tc.name, i, n+1)
			}
		}
	}
}

// Rendezvous depends on the addresses only: removing a server from the
// middle moves only its keys, and the list order does not matter.
func TestRendezvousRemovalAndOrder(t *testing.T) {
	t.Parallel()
	full := []string{"a:1", "b:1", "c:1", "d:1", "e:1"}
	without := []string{"a:1", "b:1", "d:1", "e:1"}
	reversed := []string{"e:1", "d:1", "c:1", "b:1", "a:1"}
	f, w, r := client.RendezvousShard(full), client.RendezvousShard(without), client.RendezvousShard(reversed)
	for _, k := range randomKeys(5000) {
		owner := full[f(k, len(full))]
		require.Equal(t, owner, reversed[r(k, len(reversed))], "order must not matter")
		if owner != "c:1" {
			require.Equal(t, owner, without[w(k, len(without))], "key %q moved", k)
		}
	}
}
