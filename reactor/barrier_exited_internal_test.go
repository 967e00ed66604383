//go:build linux

package reactor

import (
	"context"
	"fmt"
	"testing"
	"time"

	errorx "github.com/panjf2000/gnet/v2/pkg/errors"
	"github.com/stretchr/testify/require"
)

// The loops the reactor stores (keys of s.loops, from
// c.EventLoop() in OnOpen) satisfy the barrier's type assertion, so the
// barrier gets a real (non-nil) Exited channel, which is open while the
// loop serves and closed once the loop has exited.
func TestExitedAssertionOnStoredLoops(t *testing.T) {
	srv := hcServer(t, Config{Loops: 1})
	lt := oneLoopOf(t, srv)
	t.Logf("stored loop: key type %T, lt.el type %T", lt.el, lt.el)
	require.Equal(t, "*gnet.eventloop", fmt.Sprintf("%T", lt.el))
	srv.loopsMu.Lock()
	for k, v := range srv.loops {
		require.Same(t, lt, v)
		_, ok := k.(interface{ Exited() <-chan struct{} })
		require.True(t, ok, "map key %T lacks Exited", k)
	}
	srv.loopsMu.Unlock()

	ex, ok := lt.el.(interface{ Exited() <-chan struct{} })
	require.True(t, ok, "assertion failed: the barrier would wait on a nil channel")
	ch := ex.Exited()
	require.NotNil(t, ch)
	select {
	case <-ch:
		t.Fatal("Exited closed while the loop serves")
	default:
	}
	require.NoError(t, lt.el.Execute(context.Background(), runFunc(func(context.Context) error {
		return errorx.ErrEngineShutdown
	})))
	select {
	case <-ch:
	case <-time.After(3 * time.Second):
		t.Fatal("Exited not closed after the loop exited")
	}
	// Same channel on a later call (Once-initialised, not re-made).
	require.Equal(t, ch, ex.Exited())
	require.Equal(t, int64(0), srv.Connections(), "connections closed before Exited")
}

// The barrier with several loops, one of which has exited and one
// of which runs its task only after a delay: Shutdown must wait for the
// slow live loop and return once its task ran (not at the dead loop's
// Exited, not at ctx).
func TestBarrierDeadPlusSlowLoop(t *testing.T) {
	srv := hcServer(t, Config{Loops: 3})
	// Three connections, one per loop (least-connections balancer).
	for range 3 {
		c := hcDial(t, srv)
		_, err := c.Write([]byte(hcReq("ping", "_", "_")))
		require.NoError(t, err)
		buf := make([]byte, 3)
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		_, err = c.Read(buf)
		require.NoError(t, err)
	}
	require.True(t, pollFor(2*time.Second, func() bool {
		srv.loopsMu.Lock()
		defer srv.loopsMu.Unlock()
		return len(srv.loops) == 3
	}))
	srv.loopsMu.Lock()
	var lts []*loopTimers
	for _, lt := range srv.loops {
		lts = append(lts, lt)
	}
	srv.loopsMu.Unlock()
	dead, slow := lts[0], lts[1]
	require.NoError(t, dead.el.Execute(context.Background(), runFunc(func(context.Context) error {
		return errorx.ErrEngineShutdown
	})))
	<-dead.el.(interface{ Exited() <-chan struct{} }).Exited()

	// The slow loop is busy in a callback for 500ms.
	release := make(chan struct{})
	require.NoError(t, slow.el.Execute(context.Background(), runFunc(func(context.Context) error {
		<-release
		return nil
	})))
	go func() { time.Sleep(500 * time.Millisecond); close(release) }()

	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := srv.dispatchBarrier(ctx)
	el := time.Since(start)
	require.NoError(t, err)
	require.GreaterOrEqual(t, el, 400*time.Millisecond, "barrier returned before the busy live loop ran its task")
	require.Less(t, el, 3*time.Second)
}
