package client

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestHeldWaitConnBreakIsLost: a Lock whose Enqueue took the
// fast path (StatusAcquired) holds the lock and renews it. If its
// connection breaks while the Wait that collects that grant is in flight,
// the hold is lost (the server released it with the connection). doc.go
// "Losing a lock": a broken connection is noticed at once and then Done
// closes with Err matching ErrLost, OnRenewError is called once, and the
// next Release returns the loss. The server here answers e with
// "acquired" and hangs up on the w.
func TestHeldWaitConnBreakIsLost(t *testing.T) {
	var seq atomic.Int64
	addr := acceptingServer(t, func(nc net.Conn) {
		defer func() { _ = nc.Close() }()
		br := bufio.NewReader(nc)
		for {
			verb, err := readRequest(br)
			if err != nil {
				return
			}
			switch verb {
			case "e":
				_, _ = fmt.Fprintf(nc, "acquired %016x%016x 30\n", seq.Add(1), 7)
			case "w":
				return // hang up: the connection breaks under the held lock
			default:
				_, _ = nc.Write([]byte("ok\n"))
			}
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	const rounds = 20
	unreported := 0
	for i := range rounds {
		var cbs atomic.Int32
		l := &Lock{Key: "r17-wait", LeaseTTL: 30, Servers: []string{addr}, Heartbeat: -1,
			OnRenewError: func(error) { cbs.Add(1) }}
		st, err := l.Enqueue(ctx)
		require.NoError(t, err)
		require.Equal(t, StatusAcquired, st)
		require.NotEmpty(t, l.Token(), "held after the fast path")
		ok, err := l.Wait(ctx, 2*time.Second)
		require.False(t, ok)
		require.ErrorIs(t, err, ErrClosed)
		select {
		case <-l.Done():
		case <-time.After(2 * time.Second):
			t.Fatal("Done not closed after the connection broke")
		}
		lerr := l.Err()
		rerr := l.Release(ctx)
		if !errors.Is(lerr, ErrLost) || !errors.Is(rerr, ErrLost) || cbs.Load() != 1 {
			unreported++
			if unreported == 1 {
				t.Logf("round %d: Err()=%v, Release()=%v, OnRenewError calls=%d", i, lerr, rerr, cbs.Load())
			}
		}
		_ = l.Close()
	}
	require.Zero(t, unreported, "in %d of %d rounds a held lock (fast-path Enqueue) whose connection broke during Wait "+
		"ended without being reported as lost (Err not ErrLost, Release nil, or OnRenewError not called)", unreported, rounds)
}

// TestHeldWaitRefusedIsLost: the same hold, when the server
// refuses the Wait in a way that says the grant the client held (Token()
// non-empty, renewer running) is gone: error_lease_expired, or
// error_not_enqueued followed by a failed renewal check (holder.wait's
// "the grant expired and the server forgot it"). Wait returns an error, but
// the hold ends as if released: Err() is nil, OnRenewError is not called
// and Release reports nothing, so a worker that watches Done/Err (doc.go
// "Losing a lock"; README "Loss detection") takes the loss for a normal
// end.
func TestHeldWaitRefusedIsLost(t *testing.T) {
	for _, tc := range []struct {
		name, wReply, nReply string
		werr                 error
	}{
		{"lease_expired", "error_lease_expired\n", "ok 30\n", ErrLeaseExpired},
		{"not_enqueued+renew_error", "error_not_enqueued\n", "error\n", ErrNotQueued},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var seq atomic.Int64
			var renewing atomic.Bool
			addr := acceptingServer(t, func(nc net.Conn) {
				defer func() { _ = nc.Close() }()
				br := bufio.NewReader(nc)
				for {
					verb, err := readRequest(br)
					if err != nil {
						return
					}
					switch verb {
					case "e":
						_, _ = fmt.Fprintf(nc, "acquired %016x%016x 30\n", seq.Add(1), 7)
					case "w":
						renewing.Store(true)
						_, _ = nc.Write([]byte(tc.wReply))
					case "n":
						if renewing.Load() {
							_, _ = nc.Write([]byte(tc.nReply))
						} else {
							_, _ = nc.Write([]byte("ok 30\n"))
						}
					default:
						_, _ = nc.Write([]byte("ok\n"))
					}
				}
			})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var cbs atomic.Int32
			l := &Lock{Key: "r17-wait-refused", LeaseTTL: 30, Servers: []string{addr}, Heartbeat: -1,
				OnRenewError: func(error) { cbs.Add(1) }}
			defer func() { _ = l.Close() }()
			st, err := l.Enqueue(ctx)
			require.NoError(t, err)
			require.Equal(t, StatusAcquired, st)
			require.NotEmpty(t, l.Token())
			ok, err := l.Wait(ctx, time.Second)
			require.False(t, ok)
			require.ErrorIs(t, err, tc.werr)
			<-l.Done()
			require.ErrorIs(t, l.Err(), ErrLost, "a held lock the server no longer knows was lost")
			require.EqualValues(t, 1, cbs.Load(), "OnRenewError not called for the lost hold")
		})
	}
}
