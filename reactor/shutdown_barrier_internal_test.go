//go:build linux

package reactor

import (
	"bufio"
	"context"
	"io"
	"net"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/lockcore"
)

// A request a loop read just before draining was set must park and finish,
// even when the loop is held up between its draining check and the parking
// (here: the shard lock is busy with a stats snapshot of a large table, as
// /v1/stats or a `stats` request on another loop would be). Two parked==0
// checks 5 ms apart still cut it off without a reply, and Shutdown returned
// nil; dispatchBarrier waits for every loop to finish its callback.
// drainRace is a request read just before a drain begins while its loop
// is held up on the shard lock: srv (one loop) and a table of nKeys held
// keys, a holder h of key (its token tok), and a waiter w that has sent
// ping then "l key 30" while a Stats snapshot (its duration on snap)
// holds the shard lock. The caller begins the drain.
type drainRace struct {
	srv  *Server
	h    net.Conn
	tok  string
	w    net.Conn
	wr   *bufio.Reader
	snap chan time.Duration
}

// bigTableServer serves a one-shard table of nKeys keys held by someone
// else (a Stats snapshot of it holds the shard lock for a while) on loops
// event loops.
func bigTableServer(t *testing.T, loops, nKeys int) (*Server, *lockcore.Table) {
	tbl := lockcore.New(lockcore.Config{Shards: 1, AutoRelease: true})
	tbl.Start()
	t.Cleanup(tbl.Stop)
	srv, err := New(Config{Addr: "127.0.0.1:0", Loops: loops, ReadTimeout: 23 * time.Second}, tbl)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- srv.Serve() }()
	t.Cleanup(func() { srv.Close(); <-done })
	o := lockcore.NewOwner(1 << 40)
	for i := range nKeys {
		tbl.Acquire(o, lockcore.Locks, []byte("k"+strconv.Itoa(i)), 0, 1, 0, nil, tbl.Now())
	}
	return srv, tbl
}

func startDrainRace(t *testing.T, nKeys int, key string) *drainRace {
	srv, tbl := bigTableServer(t, 1, nKeys)
	dial := func() (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", srv.Addr().String())
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close() })
		return c, bufio.NewReader(c)
	}
	r := &drainRace{srv: srv, snap: make(chan time.Duration, 1)}
	var hr *bufio.Reader
	r.h, hr = dial()
	_, err := r.h.Write([]byte(hcReq("l", key, "0")))
	require.NoError(t, err)
	line, err := hr.ReadString('\n')
	require.NoError(t, err)
	r.tok = strings.Fields(line)[1]
	r.w, r.wr = dial()
	require.True(t, pollFor(3*time.Second, func() bool { return srv.Connections() == 2 }))

	// A snapshot holds the shard lock; the waiter's request is read (not
	// draining yet) and its loop waits for the lock.
	go func() {
		s := time.Now()
		tbl.Stats(tbl.Now())
		r.snap <- time.Since(s)
	}()
	time.Sleep(15 * time.Millisecond)
	// The ping's answer shows the loop read the pipeline before the drain
	// began (while draining it would answer error_draining).
	_, err = r.w.Write([]byte(hcReq("ping", "_", "_") + hcReq("l", key, "30")))
	require.NoError(t, err)
	time.Sleep(15 * time.Millisecond)
	return r
}

func TestShutdownWaitsForRequestReadBeforeDrain(t *testing.T) {
	r := startDrainRace(t, 100000, "dr-held")
	srv, h, tok, w, wr, snap := r.srv, r.h, r.tok, r.w, r.wr, r.snap
	shut := make(chan error, 1)
	var shutTook time.Duration
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s := time.Now()
		err := srv.Shutdown(ctx)
		shutTook = time.Since(s)
		shut <- err
	}()
	// Whether the request parks after all (it does, once the lock is free).
	maxParked := make(chan int64, 1)
	go func() {
		var m int64
		for end := time.Now().Add(time.Second); time.Now().Before(end); runtime.Gosched() {
			m = max(m, srv.parked.Load())
		}
		maxParked <- m
	}()
	// The holder releases a little later (allowed while draining): the
	// waiter should be granted, and Shutdown return once it is.
	time.Sleep(300 * time.Millisecond)
	_, _ = h.Write([]byte(hcReq("r", "dr-held", tok)))

	_ = w.SetReadDeadline(time.Now().Add(6 * time.Second))
	got, _ := io.ReadAll(wr)
	var shutErr error
	select {
	case shutErr = <-shut:
	case <-time.After(6 * time.Second):
		t.Fatal("Shutdown did not return")
	}
	t.Logf("snapshot held the table for %v; Shutdown returned %v after %v; parked rose to %d after it",
		<-snap, shutErr, shutTook, <-maxParked)
	require.True(t, strings.HasPrefix(string(got), "ok\nok "),
		"the lock request read before the drain began got %q (closed without a reply); Shutdown returned %v after %v",
		got, shutErr, shutTook)
}
