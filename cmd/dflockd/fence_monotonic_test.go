package main

import (
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestFenceMonotonicAcrossKillAndCutOff: fences stay monotonic
// across a restart whatever ended the previous run, with the wall clock
// out of the picture (the state file holds a ceiling far ahead of it, as
// after the clock stepped back): a SIGKILL (no final write), and a
// SIGTERM whose drain is cut off at --shutdown-timeout with a waiter
// parked (the final write after Shutdown reported the cut-off).
func TestFenceMonotonicAcrossKillAndCutOff(t *testing.T) {
	t.Parallel()
	const ahead = uint64(9_000_000_000_000_000_000)
	path := writeFile(t, "fence", strconv.FormatUint(ahead, 10)+"\n")
	args := []string{"--fence-state-file", path, "--shutdown-timeout", "1"}

	// Run 1: many grants, then SIGKILL.
	srv := startServer(t, procConfig{args: args})
	c := dialServer(t, srv.addr)
	var last uint64
	for range 200 {
		tok := requireGrant(t, c.do("l", "k", "0"), 33)
		f := fenceOf(t, tok)
		require.Greater(t, f, last)
		last = f
		require.Equal(t, "ok", c.do("r", "k", tok))
	}
	require.Greater(t, last, ahead)
	require.NoError(t, srv.cmd.Process.Signal(syscall.SIGKILL))
	srv.waitExit(t, 10*time.Second)

	// Run 2: a grant, a parked waiter, SIGTERM cut off at the deadline.
	srv = startServer(t, procConfig{args: args})
	holder := dialServer(t, srv.addr)
	tok := requireGrant(t, holder.do("l", "k", "0"), 33)
	f2 := fenceOf(t, tok)
	require.Greater(t, f2, last, "fence repeated after SIGKILL")
	waiter := dialServer(t, srv.addr)
	waiter.send("l", "k", "30")
	waitWaiters(t, dialServer(t, srv.addr), "k", 1)
	srv.signal(t, syscall.SIGTERM)
	require.Equal(t, 0, srv.waitExit(t, 10*time.Second))
	require.Greater(t, readFenceFile(t, path), f2)

	// Run 3: above both.
	srv = startServer(t, procConfig{args: args})
	c = dialServer(t, srv.addr)
	f3 := fenceOf(t, requireGrant(t, c.do("l", "k", "0"), 33))
	require.Greater(t, f3, f2, "fence repeated after a cut-off drain")
	srv.signal(t, syscall.SIGTERM)
	require.Equal(t, 0, srv.waitExit(t, 10*time.Second))
}
