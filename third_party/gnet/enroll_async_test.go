//go:build linux

// dflockd patch: tests of Client.EnrollAsync (see PATCHES.md). Upstream's
// tests are not vendored; dflockd's make test runs this file.

package gnet

import (
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

type openCounter struct {
	BuiltinEventEngine
	opened chan string // the remote address of each opened connection
}

func (h *openCounter) OnOpen(c Conn) ([]byte, Action) {
	h.opened <- c.RemoteAddr().String()
	return nil, None
}

func startClient(t *testing.T, loops int) (*Client, *openCounter) {
	h := &openCounter{opened: make(chan string, 16)}
	cli, err := NewClient(h, WithMulticore(true), WithNumEventLoop(loops))
	require.NoError(t, err)
	require.NoError(t, cli.Start())
	t.Cleanup(func() { _ = cli.Stop() })
	return cli, h
}

func openFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	return len(ents)
}

// A registration the loop cannot make (epoll refuses a regular file) closes
// the descriptor, calls failed once on the loop, never runs OnOpen, gives
// back the balancer's count, and leaves the loop serving.
func TestEnrollAsyncRegistrationFails(t *testing.T) {
	cli, h := startClient(t, 1)
	el := cli.eng.eventLoops.next(nil)

	f, err := os.Create(filepath.Join(t.TempDir(), "not-a-socket"))
	require.NoError(t, err)
	defer f.Close()
	fd, err := unix.Dup(int(f.Fd()))
	require.NoError(t, err)
	before := openFDs(t)

	failed := make(chan struct{}, 2)
	addr := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}
	el.registerAsync(newStreamConn("tcp", fd, el, &unix.SockaddrInet4{}, addr, addr), func() { failed <- struct{}{} })

	select {
	case <-failed:
	case <-time.After(5 * time.Second):
		t.Fatal("failed was not called")
	}
	require.Equal(t, before-1, openFDs(t), "the descriptor was not closed")
	require.Zero(t, el.load(), "the loop still counts the failed connection")
	select {
	case <-h.opened:
		t.Fatal("OnOpen ran for a connection that was not added")
	case <-failed:
		t.Fatal("failed was called twice")
	case <-time.After(50 * time.Millisecond):
	}

	// The loop still registers and opens a real connection.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	peer, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer peer.Close()
	sc, err := ln.Accept()
	require.NoError(t, err)
	require.NoError(t, cli.EnrollAsync(sc, nil, func() { failed <- struct{}{} }))
	select {
	case remote := <-h.opened:
		require.Equal(t, peer.LocalAddr().String(), remote)
	case <-failed:
		t.Fatal("failed was called for a good connection")
	case <-time.After(5 * time.Second):
		t.Fatal("OnOpen did not run")
	}
	require.Eventually(t, func() bool { return el.load() == 1 }, time.Second, time.Millisecond)
}

// A connection that is not a socket gnet knows is refused before anything
// is queued, and its descriptor is not leaked.
func TestEnrollAsyncUnsupported(t *testing.T) {
	cli, _ := startClient(t, 1)
	a, b := net.Pipe()
	defer b.Close()
	require.Error(t, cli.EnrollAsync(a, nil, func() { t.Error("failed called") }))
	require.Zero(t, cli.eng.eventLoops.next(nil).load())
}
