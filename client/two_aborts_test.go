package client_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/client"
	"github.com/lockreactor/dflockd/reactor/reactortest"
)

func waitCond(d time.Duration, cond func() bool) bool {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if cond() {
			return true
		}
		time.Sleep(time.Millisecond)
	}
	return false
}

// TestTwoAbortsThenClose: auto-release off, auth on, a slow link.
// An Acquire whose ctx ends with its grant on the way leaves an abort in
// the background (op1: releasing that grant from a fresh connection). A
// second Acquire queues; its grant is on the way when Release is called:
// the server answers the half-close within ~0.3 s (inside abortWait), so
// Release must wait for the late grant's release "like any release". But
// Release first waits for op1's done, which spends the shared 0.5 s
// abortDeadline, and then (select between a fired timer and a closed
// answered) skips op2 about half the time: Release returns nil, the
// program closes the Lock, the release is cut off before it is sent, and
// the lock is held by nobody until its 30 s lease ends. Four runs in
// parallel: the chance all four pick the right case is 1/16.
func TestTwoAbortsThenClose(t *testing.T) {
	srv := start(t, func(c *reactortest.Config) {
		c.NoAutoRelease = true
		c.Server.AuthToken = "s3cret"
	})
	const runs = 4
	results := make(chan error, runs)
	for r := 0; r < runs; r++ {
		key := fmt.Sprintf("rv5-two-aborts-%d", r)
		proxy, accepted := delayProxyPer(t, srv.Addr, func(i int) (time.Duration, time.Duration) {
			switch i {
			case 0: // hold 1
				return 10 * time.Millisecond, 150 * time.Millisecond
			case 1: // op1's release of the late grant
				return 500 * time.Millisecond, 800 * time.Millisecond
			case 2: // hold 2
				return 10 * time.Millisecond, 300 * time.Millisecond
			default: // op2's release of the late grant
				return 400 * time.Millisecond, 400 * time.Millisecond
			}
		})
		b := dial(t, srv.Addr, client.WithAuth("s3cret"))
		probe := dial(t, srv.Addr, client.WithAuth("s3cret"))
		go func() { results <- twoAborts(t, srv, proxy, accepted, b, probe, key) }()
	}
	var failed []error
	for r := 0; r < runs; r++ {
		if err := <-results; err != nil {
			failed = append(failed, err)
			t.Log(err)
		}
	}
	require.Empty(t, failed)
}

func twoAborts(t *testing.T, srv *reactortest.Server, proxy string, accepted *atomic.Int32, b, probe *client.Conn, key string) error {
	ctx, cancelAll := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancelAll()
	gb, err := b.Acquire(ctx, key, 0, client.WithLeaseTTL(30))
	if err != nil {
		return err
	}
	l := &client.Lock{Key: key, LeaseTTL: 30, Servers: []string{proxy}, AuthToken: "s3cret", Heartbeat: -1}

	// Hold 1: queued behind b; its grant is on the way when its ctx ends.
	ctx1, cancel1 := context.WithCancel(ctx)
	defer cancel1()
	acq1 := make(chan error, 1)
	go func() { _, err := l.Acquire(ctx1); acq1 <- err }()
	if !waitCond(5*time.Second, func() bool { ls, ok := lockStat(srv, key); return ok && ls.Waiters == 1 }) {
		return fmt.Errorf("%s: hold 1 never queued", key)
	}
	if err := b.Release(ctx, gb); err != nil {
		return err
	}
	cancel1()
	<-acq1
	if !waitCond(5*time.Second, func() bool { return accepted.Load() == 2 }) {
		return fmt.Errorf("%s: op1 never dialled its release", key)
	}

	// Hold 2: queued behind op1's late grant; granted when op1's release
	// arrives, and Release is called with that grant on its way.
	acq2 := make(chan error, 1)
	go func() { _, err := l.Acquire(ctx); acq2 <- err }()
	if !waitCond(5*time.Second, func() bool { ls, ok := lockStat(srv, key); return ok && ls.Waiters == 1 }) {
		return fmt.Errorf("%s: hold 2 never queued", key)
	}
	if !waitCond(5*time.Second, func() bool { ls, ok := lockStat(srv, key); return ok && ls.Waiters == 0 && ls.OwnerConnID != 0 }) {
		return fmt.Errorf("%s: hold 2 never granted", key)
	}
	began := time.Now()
	rerr := l.Release(ctx)
	took := time.Since(began)
	<-acq2
	t.Logf("%s: Release returned %v after %v", key, rerr, took.Round(time.Millisecond))
	_ = l.Close() // defer l.Close(), or the process exiting
	time.Sleep(3 * time.Second)
	free, perr := probe.TryAcquire(ctx, key)
	if errors.Is(perr, client.ErrTimeout) {
		return fmt.Errorf("%s: Release returned %v after %v, then Close: the lock is held by nobody until its 30 s lease ends", key, rerr, took.Round(time.Millisecond))
	}
	if perr != nil {
		return perr
	}
	return probe.Release(ctx, free)
}
