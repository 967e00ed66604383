package main

import (
	"encoding/json"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestMetricsGaugesAfterChurn: holders, parked waiters,
// two-phase enqueuers and semaphore holders; then RST/close churn. The
// gauges (connections, held, waiters, parked, keys) and the counters
// (disconnect releases, handoffs, accepted) must match what happened, and
// agree with /v1/stats.
func TestMetricsGaugesAfterChurn(t *testing.T) {
	p, base := startHTTPServer(t)
	const n = 20
	dial := func() *client {
		nc, err := net.DialTimeout("tcp", p.addr, ioTimeout)
		require.NoError(t, err)
		return newClient(t, nc)
	}
	rst := func(c *client) {
		_ = c.nc.(*net.TCPConn).SetLinger(0)
		c.close()
	}
	holders := make([]*client, n)
	waiters := make([]*client, n)
	for i := range n {
		holders[i] = dial()
		requireGrant(t, holders[i].do("l", fmt.Sprintf("k%d", i), "0"), 33)
	}
	for i := range n {
		waiters[i] = dial()
		waiters[i].send("l", fmt.Sprintf("k%d", i), "60")
	}
	enqs := make([]*client, 10)
	for i := range enqs {
		enqs[i] = dial()
		require.Equal(t, "queued", enqs[i].do("e", fmt.Sprintf("k%d", i), ""))
	}
	sems := make([]*client, 5)
	for i := range sems {
		sems[i] = dial()
		if i < 3 {
			requireGrant(t, sems[i].do("sl", "sem", "0 3"), 33)
		} else {
			sems[i].send("sl", "sem", "60 3")
			waitSeries(t, base, "", "dflockd_parked_requests", float64(n+i-2))
		}
	}
	waitSeries(t, base, "", "dflockd_parked_requests", n+2)
	m := scrapeText(t, base, "")
	conns := float64(2*n + 10 + 5)
	assert.Equal(t, conns, m[`dflockd_connections{transport="plain"}`])
	assert.Equal(t, float64(n), m[`dflockd_held{namespace="lock"}`])
	assert.Equal(t, 3.0, m[`dflockd_held{namespace="semaphore"}`])
	assert.Equal(t, float64(n+10), m[`dflockd_waiters{namespace="lock"}`])
	assert.Equal(t, 2.0, m[`dflockd_waiters{namespace="semaphore"}`])
	assert.Equal(t, float64(n+1), m["dflockd_keys"])
	assert.Equal(t, conns, m["dflockd_connections_accepted_total"])

	// Churn: RST every odd waiter, close every enqueuer, RST the holders
	// of k0..k9, RST one semaphore holder, close one parked sem waiter.
	for i := 1; i < n; i += 2 {
		rst(waiters[i])
	}
	for _, e := range enqs {
		e.close()
	}
	for i := range 10 {
		rst(holders[i])
	}
	rst(sems[0])
	// sems[3] is granted sems[0]'s slot; sems[4] stays parked, then leaves.
	line, err := sems[3].readLine(ioTimeout)
	require.NoError(t, err)
	requireGrant(t, line, 33)
	sems[4].close()
	for i := 0; i < 10; i += 2 {
		line, err := waiters[i].readLine(ioTimeout)
		require.NoError(t, err)
		requireGrant(t, line, 33)
	}
	// Left: holders 10..19 (10), granted waiters 0,2,4,6,8 (5) hold;
	// waiters 10,12,...,18 (5) parked; sem: 3 held, 0 waiting.
	left := float64(n/2 + n/2 + 3)
	waitSeries(t, base, "", `dflockd_connections{transport="plain"}`, left)
	time.Sleep(100 * time.Millisecond)
	m = scrapeText(t, base, "")
	assert.Equal(t, 15.0, m[`dflockd_held{namespace="lock"}`])
	assert.Equal(t, 3.0, m[`dflockd_held{namespace="semaphore"}`])
	assert.Equal(t, 5.0, m[`dflockd_waiters{namespace="lock"}`])
	assert.Equal(t, 0.0, m[`dflockd_waiters{namespace="semaphore"}`])
	assert.Equal(t, 5.0, m["dflockd_parked_requests"])
	assert.Equal(t, 10.0, m[`dflockd_disconnect_releases_total{namespace="lock"}`])
	assert.Equal(t, 1.0, m[`dflockd_disconnect_releases_total{namespace="semaphore"}`])
	assert.Equal(t, 5.0, m[`dflockd_handoffs_total{namespace="lock"}`])
	assert.Equal(t, 1.0, m[`dflockd_handoffs_total{namespace="semaphore"}`])
	assert.Equal(t, float64(n+5), m[`dflockd_grants_total{namespace="lock"}`])
	assert.Equal(t, 4.0, m[`dflockd_grants_total{namespace="semaphore"}`])
	assert.Equal(t, float64(n+1), m["dflockd_keys"], "keys (k1,k3.. k9 now idle, still tracked)")

	code, body := get(t, base+"/v1/stats", "")
	require.Equal(t, 200, code)
	var st struct {
		Connections int `json:"connections"`
		Locks       []struct {
			Key     string `json:"key"`
			Waiters int    `json:"waiters"`
		} `json:"locks"`
		Semaphores []struct {
			Key     string `json:"key"`
			Holders int    `json:"holders"`
			Waiters int    `json:"waiters"`
		} `json:"semaphores"`
		IdleLocks []struct {
			Key string `json:"key"`
		} `json:"idle_locks"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &st), body)
	assert.Equal(t, int(left), st.Connections)
	assert.Len(t, st.Locks, 15)
	assert.Len(t, st.IdleLocks, 5)
	require.Len(t, st.Semaphores, 1)
	assert.Equal(t, 3, st.Semaphores[0].Holders)
	assert.Equal(t, 0, st.Semaphores[0].Waiters)
	t.Logf("stats: %s", body)
	for _, w := range waiters {
		w.close()
	}
	p.stop(t)
}
