//go:build linux

package reactor

import (
	"bufio"
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	errorx "github.com/panjf2000/gnet/v2/pkg/errors"
	"github.com/stretchr/testify/require"
)

// TestDeadLoopBarrierStillWaitsForLiveLoops: one of three event loops has
// exited (a poller error; here the way gnet's own shutdown task makes it
// exit), and gnet cancels the engine's context although the other two
// loops serve on. A lock request read on a live loop just before the
// drain began, held up between its draining check and the parking (the
// shard lock is busy with a stats snapshot), must still park and be
// granted when its holder releases. The barrier once stopped waiting at
// that engine-wide signal and the request was cut off; it now waits per
// loop (its task ran, or that loop exited).
func TestDeadLoopBarrierStillWaitsForLiveLoops(t *testing.T) {
	srv, tbl := bigTableServer(t, 3, 100000)

	loopSet := func() map[*loopTimers]bool {
		srv.loopsMu.Lock()
		defer srv.loopsMu.Unlock()
		m := make(map[*loopTimers]bool)
		for _, lt := range srv.loops {
			m[lt] = true
		}
		return m
	}
	// dial opens a connection, pings it and returns the loop it landed on
	// (the least-connections balancer puts each of three on its own loop).
	dial := func() (net.Conn, *bufio.Reader, *loopTimers) {
		before := loopSet()
		c, err := net.Dial("tcp", srv.Addr().String())
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close() })
		r := bufio.NewReader(c)
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		_, err = c.Write([]byte(hcReq("ping", "_", "_")))
		require.NoError(t, err)
		line, err := r.ReadString('\n')
		require.NoError(t, err)
		require.Equal(t, "ok\n", line)
		_ = c.SetDeadline(time.Time{})
		var lt *loopTimers
		for l := range loopSet() {
			if !before[l] {
				lt = l
			}
		}
		require.NotNil(t, lt, "connection did not land on a new loop")
		return c, r, lt
	}
	h, hr, _ := dial()
	w, wr, _ := dial()
	_, _, ltK := dial()
	require.Equal(t, int64(3), srv.Connections())

	// The holder takes the key.
	_, err := h.Write([]byte(hcReq("l", "dl-held", "0")))
	require.NoError(t, err)
	_ = h.SetReadDeadline(time.Now().Add(3 * time.Second))
	line, err := hr.ReadString('\n')
	require.NoError(t, err)
	tok := strings.Fields(line)[1]

	// The third loop exits (its connection closes); the others run on.
	require.NoError(t, ltK.el.Execute(context.Background(), runFunc(func(context.Context) error {
		return errorx.ErrEngineShutdown
	})))
	require.True(t, pollFor(2*time.Second, func() bool { return srv.Connections() == 2 }))

	// A snapshot holds the shard lock; the waiter's request is read before
	// the drain and its (live) loop waits for the lock.
	snap := make(chan time.Duration, 1)
	go func() {
		s := time.Now()
		tbl.Stats(tbl.Now())
		snap <- time.Since(s)
	}()
	time.Sleep(15 * time.Millisecond)
	_, err = w.Write([]byte(hcReq("ping", "_", "_") + hcReq("l", "dl-held", "30")))
	require.NoError(t, err)
	time.Sleep(15 * time.Millisecond)

	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		shut <- srv.Shutdown(ctx)
	}()
	time.Sleep(300 * time.Millisecond)
	_, _ = h.Write([]byte(hcReq("r", "dl-held", tok))) // allowed while draining

	_ = w.SetReadDeadline(time.Now().Add(6 * time.Second))
	got, _ := io.ReadAll(wr)
	var shutErr error
	select {
	case shutErr = <-shut:
	case <-time.After(6 * time.Second):
		t.Fatal("Shutdown did not return")
	}
	t.Logf("snapshot held the table for %v; Shutdown returned %v; cutOff %d", <-snap, shutErr, srv.cutOff.Load())
	require.True(t, strings.HasPrefix(string(got), "ok\nok "),
		"with one loop dead, the lock request read on a live loop before the drain got %q "+
			"(closed without a reply; Shutdown returned %v, cutOff %d)", got, shutErr, srv.cutOff.Load())
}
