package reactor_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// PROTOCOL.md "stats".

func TestStatsEmpty(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		srv := tr.start(t)
		c := srv.Connect(t)
		require.Equal(t,
			`ok {"connections":1,"locks":[],"semaphores":[],"idle_locks":[],"idle_semaphores":[]}`,
			c.Do("stats", "_", "_"))
		// The key and argument lines are ignored.
		require.Equal(t,
			`ok {"connections":1,"locks":[],"semaphores":[],"idle_locks":[],"idle_semaphores":[]}`,
			c.Do("stats", "", "anything at all"))
	})
}

func TestStatsContent(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		srv := tr.start(t)
		a := srv.Connect(t)
		b, c, d, e := srv.Connect(t), srv.Connect(t), srv.Connect(t), srv.Connect(t)

		mustGrant(t, a.Do("l", "b", "0 10"), rOK, 10)
		lock(t, a, "a")
		b.Request("l", "a", "60")
		waitLockWaiters(t, a, "a", 1)
		require.Equal(t, rQueued, c.Do("e", "a", "")) // two-phase waiters count too
		mustGrant(t, a.Do("sl", "s", "0 2"), rOK, 33)
		mustGrant(t, a.Do("sl", "s", "0 2"), rOK, 33)
		d.Request("sl", "s", "60 2")
		waitSemWaiters(t, a, "s", 1)
		require.Equal(t, rQueued, e.Do("se", "s", "2"))
		ti := lock(t, a, "zi")
		require.Equal(t, rOK, a.Do("r", "zi", ti))
		tz := mustGrant(t, a.Do("sl", "zs", "0 4"), rOK, 33)
		require.Equal(t, rOK, a.Do("sr", "zs", tz))
		f := srv.Connect(t)
		lock(t, f, "c") // held by another connection

		line := a.Do("stats", "_", "_")
		body := strings.TrimPrefix(line, rOK+" ")
		require.Equal(t, []string{"connections", "locks", "semaphores", "idle_locks", "idle_semaphores"}, objectKeys(t, body, ""))
		require.Equal(t, []string{"key", "owner_conn_id", "lease_expires_in_s", "waiters"}, objectKeys(t, body, "locks"))
		require.Equal(t, []string{"key", "limit", "holders", "waiters"}, objectKeys(t, body, "semaphores"))
		require.Equal(t, []string{"key", "idle_s"}, objectKeys(t, body, "idle_locks"))
		require.Equal(t, []string{"key", "idle_s"}, objectKeys(t, body, "idle_semaphores"))
		require.NotContains(t, body, "\n")

		s := stats(t, a)
		require.Equal(t, 6, s.Connections)
		require.Len(t, s.Locks, 3, "%+v", s.Locks)
		la, lb, lc := s.Locks[0], s.Locks[1], s.Locks[2]
		require.Equal(t, []string{"a", "b", "c"}, []string{la.Key, lb.Key, lc.Key}, "sorted by key")
		require.NotZero(t, la.OwnerConnID)
		require.Equal(t, la.OwnerConnID, lb.OwnerConnID, "same holder")
		require.NotEqual(t, la.OwnerConnID, lc.OwnerConnID, "different holders")
		require.Equal(t, 2, la.Waiters)
		require.Zero(t, lb.Waiters)
		require.Greater(t, la.LeaseExpiresInS, 20.0)
		require.LessOrEqual(t, la.LeaseExpiresInS, 33.0)
		require.Greater(t, lb.LeaseExpiresInS, 0.0)
		require.LessOrEqual(t, lb.LeaseExpiresInS, 10.0)
		require.Equal(t, []semStat{{Key: "s", Limit: 2, Holders: 2, Waiters: 2}}, s.Semaphores)
		require.Len(t, s.IdleLocks, 1)
		require.Equal(t, "zi", s.IdleLocks[0].Key)
		require.GreaterOrEqual(t, s.IdleLocks[0].IdleS, 0.0)
		require.Less(t, s.IdleLocks[0].IdleS, 10.0)
		require.Len(t, s.IdleSems, 1)
		require.Equal(t, "zs", s.IdleSems[0].Key)

		// Closing the other connections drops their waiters and releases
		// their holdings. (connections and the lock state are read at
		// different instants, so wait for both.)
		require.NoError(t, b.Close())
		require.NoError(t, c.Close())
		require.NoError(t, d.Close())
		require.NoError(t, e.Close())
		require.NoError(t, f.Close())
		s = waitStats(t, a, "the others' connections closed", func(s statsReply) bool {
			return s.Connections == 1 && len(s.Locks) == 2
		})
		require.Zero(t, s.Locks[0].Waiters)
		require.Equal(t, []semStat{{Key: "s", Limit: 2, Holders: 2, Waiters: 0}}, s.Semaphores)
		require.Equal(t, []string{"c", "zi"}, []string{s.IdleLocks[0].Key, s.IdleLocks[1].Key}, "c was auto-released")
	})
}

func TestIdleKeysPruned(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		srv := tr.start(t, func(c *reactortest.Config) {
			c.Core.GCInterval = 100 * time.Millisecond
			c.Core.GCMaxIdle = time.Second
		})
		c := srv.Connect(t)
		require.Equal(t, rOK, c.Do("r", "gc", lock(t, c, "gc")))
		tok := mustGrant(t, c.Do("sl", "gcs", "0 2"), rOK, 33)
		require.Equal(t, rOK, c.Do("sr", "gcs", tok))
		s := stats(t, c)
		require.Len(t, s.IdleLocks, 1)
		require.Len(t, s.IdleSems, 1)
		waitStats(t, c, "idle keys pruned", func(s statsReply) bool {
			return len(s.IdleLocks) == 0 && len(s.IdleSems) == 0
		})
	})
}

// objectKeys returns, in order, the keys of the top-level object of body
// (path "") or of the first element of its array field path.
func objectKeys(t testing.TB, body, path string) []string {
	t.Helper()
	var raw json.RawMessage = []byte(body)
	if path != "" {
		var top map[string]json.RawMessage
		require.NoError(t, json.Unmarshal(raw, &top))
		var arr []json.RawMessage
		require.NoError(t, json.Unmarshal(top[path], &arr))
		require.NotEmpty(t, arr, "%s is empty", path)
		raw = arr[0]
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	tok, err := dec.Token()
	require.NoError(t, err)
	require.Equal(t, json.Delim('{'), tok)
	var keys []string
	for dec.More() {
		k, err := dec.Token()
		require.NoError(t, err)
		keys = append(keys, k.(string))
		var skip json.RawMessage
		require.NoError(t, dec.Decode(&skip))
	}
	return keys
}
