//go:build linux

package gnet

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

type r7srv struct {
	BuiltinEventEngine
	eng  chan Engine
	loop chan EventLoop
}

func (h *r7srv) OnBoot(e Engine) Action { h.eng <- e; return None }
func (h *r7srv) OnOpen(c Conn) ([]byte, Action) {
	select {
	case h.loop <- c.EventLoop():
	default:
	}
	return nil, None
}

// A server engine without ReusePort runs its loops with orbit/rotate, not
// run: Exited closes for them too once the engine has stopped (dflockd
// uses a Client, whose loops use run).
func TestExitedClosesForServerLoops(t *testing.T) {
	h := &r7srv{eng: make(chan Engine, 1), loop: make(chan EventLoop, 1)}
	l0, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	hp := l0.Addr().String()
	require.NoError(t, l0.Close())
	done := make(chan error, 1)
	go func() { done <- Run(h, "tcp://"+hp, WithMulticore(true), WithNumEventLoop(2)) }()
	eng := <-h.eng
	var c net.Conn
	require.Eventually(t, func() bool {
		c, err = net.Dial("tcp", hp)
		return err == nil
	}, 2*time.Second, 5*time.Millisecond)
	defer c.Close()
	var el EventLoop
	select {
	case el = <-h.loop:
	case <-time.After(3 * time.Second):
		t.Fatal("no OnOpen")
	}
	ex := el.(interface{ Exited() <-chan struct{} }).Exited()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, eng.Stop(ctx))
	<-done
	select {
	case <-ex:
	case <-time.After(2 * time.Second):
		t.Fatal("engine stopped, its loop has returned (orbit), but Exited is still open")
	}
}
