package reactor_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// TestStatsSmallAfterKeysShrink: the large-reply estimate
// (lastBigKiB) is refreshed only by a render, and no render happens while
// bigOut > 0 and bigOut+lastBigKiB > budget. So after the keys go away, a
// stats whose reply is now small (under bigReply: never charged to the
// budget at all) is refused for as long as the unread large replies of
// other clients hold their shares. Before 780daf7 it was rendered and
// answered (cur < budget, the small reply is not charged).
func TestStatsSmallAfterKeysShrink(t *testing.T) {
	srv := reactortest.Start(t, func(c *reactortest.Config) {
		c.Server.WriteTimeout = 60 * time.Second // the stuck readers keep their shares
	})
	holder := srv.Connect(t)
	holdNamed(t, holder, 1024, escapedKey)
	reader := srv.Connect(t)
	line := reader.Do("stats", "_", "_")
	require.Greater(t, len(line), 1<<20)

	// Spend the budget until the first refusal.
	stuck := spendStatsBudget(t, srv, reader)

	// The keys go away: the holder's connection closes, its locks released.
	_ = holder.Close()
	require.Eventually(t, func() bool { return len(srv.Table.Stats(srv.Table.Now()).Locks) == 0 }, 5*time.Second, 10*time.Millisecond)
	// and are pruned (as the GC would once they have been idle long enough).
	srv.Table.GC(srv.Table.Now() + int64(time.Hour))
	snap := srv.Table.Stats(srv.Table.Now())
	require.Empty(t, snap.IdleLocks)

	// A stats now is a few hundred bytes: it takes nothing from the budget.
	line = reader.Do("stats", "_", "_")
	require.NotEqual(t, rError, line,
		"stats refused with the keys gone (a tiny reply, not charged) while %d unread large replies hold the budget: the stale lastBigKiB estimate refuses it", stuck)
	require.Less(t, len(line), 64<<10)
}

// TestStatsEstimateRefreshes: the estimate scales with the number of keys,
// so as many keys with much shorter names leave it too large. A render a
// second refreshes it: a stats refused on the stale estimate is answered
// again within about a second, while unread large replies still hold the
// budget.
func TestStatsEstimateRefreshes(t *testing.T) {
	srv := reactortest.Start(t, func(c *reactortest.Config) {
		c.Server.WriteTimeout = 60 * time.Second // the stuck readers keep their shares
	})
	holder := srv.Connect(t)
	holdNamed(t, holder, 1024, escapedKey)
	reader := srv.Connect(t)
	require.Greater(t, len(reader.Do("stats", "_", "_")), 1<<20)
	spendStatsBudget(t, srv, reader)

	// As many keys, with short names.
	_ = holder.Close()
	require.Eventually(t, func() bool { return len(srv.Table.Stats(srv.Table.Now()).Locks) == 0 }, 5*time.Second, 10*time.Millisecond)
	short := srv.Connect(t)
	holdNamed(t, short, 1024, func(i int) string { return fmt.Sprintf("s%d", i) })
	srv.Table.GC(srv.Table.Now() + int64(time.Hour)) // prune the long names (idle), not the held short ones
	require.Len(t, srv.Table.Stats(srv.Table.Now()).Locks, 1024)
	require.Empty(t, srv.Table.Stats(srv.Table.Now()).IdleLocks)

	start := time.Now()
	var line string
	require.Eventually(t, func() bool {
		line = reader.Do("stats", "_", "_")
		return line != rError
	}, 5*time.Second, 50*time.Millisecond, "stats still refused on a stale estimate")
	require.Less(t, time.Since(start), 2500*time.Millisecond)
	require.True(t, strings.HasPrefix(line, "ok {"), line)
}

// spendStatsBudget has clients that never read their stats replies hold
// the large-reply budget until reader's stats is refused; it returns how
// many it took.
func spendStatsBudget(t *testing.T, srv *reactortest.Server, reader *reactortest.Conn) int {
	t.Helper()
	tr := transport{name: "tcp"}
	stuck := 0
	for stuck < 40 {
		c := dialSlowReader(t, tr, srv)
		_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		_, err := c.Write([]byte(req("stats", "_", "_")))
		require.NoError(t, err)
		stuck++
		if reader.Do("stats", "_", "_") == rError {
			break
		}
	}
	require.Equal(t, rError, reader.Do("stats", "_", "_"), "budget not spent after %d unread replies", stuck)
	return stuck
}
