package lockcore

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/codec"
)

// TestLapsedEvictedByOtherConnection: PROTOCOL.md says a w whose
// grant already expired answers error_lease_expired. Connection A lets
// one two-phase grant lapse and its key is pruned. Connection B (another
// client of the same server) lets 64 grants on keys of the same shard
// lapse and be pruned. A's w must still answer error_lease_expired: what
// another connection does should not change A's answers (before aa0346a
// the bound was per connection, so only A's own lapses could push A's
// entry out).
func TestLapsedEvictedByOtherConnection(t *testing.T) {
	now := int64(0)
	tbl := fakeTable(Config{DefaultLease: 1, GCMaxIdle: 1_000_000_000}, &now)
	a, b := NewOwner(1), NewOwner(2)
	victim := []byte("a/job")
	shard := tbl.shardIndex(Locks, string(victim))

	require.Equal(t, codec.CodeAcquired, tbl.Enqueue(a, Locks, victim, 1, 1, now).Code)
	now += 2 * sec
	tbl.Advance(now) // A's grant expires uncollected
	now += 2 * sec
	tbl.GC(now) // its idle key is pruned: A's grant is now "lapsed"

	// B: 64 lapsed grants in the same shard.
	n := 0
	for i := 0; n < maxLapsed; i++ {
		name := fmt.Sprintf("b/%d", i)
		if tbl.shardIndex(Locks, name) != shard {
			continue
		}
		n++
		require.Equal(t, codec.CodeAcquired, tbl.Enqueue(b, Locks, []byte(name), 1, 1, now).Code)
	}
	now += 2 * sec
	tbl.Advance(now)
	now += 2 * sec
	tbl.GC(now)

	got := tbl.Wait(a, Locks, victim, 0, nil, now).Code
	require.Equal(t, codec.CodeErrorLeaseExpired, got,
		"A's w on its lapsed grant answers %v because connection B lapsed %d grants in the same shard", got, maxLapsed)
}
