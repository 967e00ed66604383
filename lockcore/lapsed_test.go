package lockcore

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/codec"
)

// TestLapsedBounded: the lapsed two-phase grants the lock table keeps
// after their keys went (reclaimed at --max-locks, or pruned) are bounded
// per shard, however many connections lapse how many grants: an earlier
// version kept 8 per connection and shard, up to 512 names (~150 KB) per
// connection, counted by nothing. The newest answers error_lease_expired;
// CloseOwner drops an owner's.
func TestLapsedBounded(t *testing.T) {
	now := int64(0)
	const maxLocks = 8
	tbl := fakeTable(Config{MaxLocks: maxLocks, DefaultLease: 1}, &now)
	owners := make([]*Owner, 20)
	for i := range owners {
		owners[i] = NewOwner(uint64(i + 1))
	}
	pad := strings.Repeat("k", 240)
	n := 0
	var last []byte
	for round := 0; round < 200; round++ {
		for i := 0; i < maxLocks; i++ {
			last = []byte(fmt.Sprintf("%s-%06d", pad, n))
			o := owners[n%len(owners)]
			n++
			r := tbl.Enqueue(o, Locks, last, 1, 1, now)
			require.Equal(t, codec.CodeAcquired, r.Code, "e %d", n)
		}
		now += 2 * sec
		tbl.Advance(now) // the grants expire uncollected: tombstones, idle keys
	}
	lapsed := func() (entries, bytes int) {
		for i := range tbl.shards {
			s := &tbl.shards[i]
			s.mu.Lock()
			for _, g := range s.c.lapsed {
				entries++
				bytes += len(g.name)
			}
			s.mu.Unlock()
		}
		return
	}
	entries, bytes := lapsed()
	t.Logf("%d grants lapsed by %d connections: %d kept, %d KiB of names", n, len(owners), entries, bytes>>10)
	require.LessOrEqual(t, entries, len(tbl.shards)*maxLapsed)

	// The newest lapsed grant whose key went answers error_lease_expired,
	// once. (The last round's keys are still there as idle tombstone
	// keys: reclaim one more round's worth first.)
	lastOwner := owners[(n-1)%len(owners)]
	for i := 0; i < maxLocks; i++ {
		r := tbl.Acquire(NewOwner(999), Locks, []byte(fmt.Sprintf("fresh-%d", i)), 0, 0, 30, nil, now)
		require.Equal(t, codec.CodeOK, r.Code)
	}
	require.Equal(t, codec.CodeErrorLeaseExpired, tbl.Wait(lastOwner, Locks, last, 0, nil, now).Code)
	require.Equal(t, codec.CodeErrorNotEnqueued, tbl.Wait(lastOwner, Locks, last, 0, nil, now).Code)

	for _, o := range owners {
		tbl.CloseOwner(o, now)
	}
	entries, _ = lapsed()
	require.Zero(t, entries, "closed owners keep nothing")
	require.NoError(t, tbl.CheckInvariants())
}
