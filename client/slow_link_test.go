package client_test

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/client"
	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// delayProxy forwards TCP to upstream, delaying every chunk by oneWay in
// each direction (order kept, a half-close passed on after the data
// before it).
func delayProxy(t *testing.T, upstream string, oneWay time.Duration) string {
	t.Helper()
	addr, _ := delayProxyPer(t, upstream, func(int) (time.Duration, time.Duration) { return oneWay, oneWay })
	return addr
}

// delayProxyPer forwards TCP to upstream; the i-th accepted connection
// delays every chunk by delays(i) (client->server, server->client), order
// kept, a half-close passed on after the data before it.
func delayProxyPer(t *testing.T, upstream string, delays func(i int) (up, down time.Duration)) (string, *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var accepted atomic.Int32
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	type chunk struct {
		at   time.Time
		data []byte
	}
	pump := func(dst, src net.Conn, d time.Duration) {
		defer wg.Done()
		q := make(chan chunk, 1024)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range q {
				time.Sleep(time.Until(c.at))
				if c.data == nil {
					if cw, ok := dst.(interface{ CloseWrite() error }); ok {
						_ = cw.CloseWrite()
					}
					return
				}
				if _, err := dst.Write(c.data); err != nil {
					_ = dst.Close()
					_ = src.Close()
					for range q {
					}
					return
				}
			}
		}()
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				q <- chunk{at: time.Now().Add(d), data: append([]byte(nil), buf[:n]...)}
			}
			if err != nil {
				if errors.Is(err, io.EOF) {
					q <- chunk{at: time.Now().Add(d)}
				} else {
					_ = dst.Close()
				}
				close(q)
				return
			}
		}
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			u, err := net.Dial("tcp", upstream)
			if err != nil {
				_ = c.Close()
				continue
			}
			up, down := delays(i)
			mu.Lock()
			conns = append(conns, c, u)
			mu.Unlock()
			wg.Add(2)
			go pump(u, c, up)
			go pump(c, u, down)
		}
	}()
	return ln.Addr().String(), &accepted
}

// On a WAN link (here RTT 200 ms, TLS + auth, auto-release off), a
// Release that ends an Acquire whose grant is already on its way returns
// nil after its 0.5 s abort bound while the grant's release (from a fresh
// connection: dial, handshake, auth, release) is still going on. The lock
// is then still held; and if the program now closes the Lock (defer
// l.Close()) or exits, the release is cut off and the lock stays held by
// nobody until its lease ends.
func TestWANReleaseRacingGrantThenClose(t *testing.T) {
	srv := start(t, func(c *reactortest.Config) {
		c.NoAutoRelease = true
		c.SelfSignedTLS = true
		c.Server.AuthToken = "s3cret"
	})
	proxy := delayProxy(t, srv.Addr, 100*time.Millisecond)
	opts := []client.DialOption{client.WithTLS(srv.ClientTLS), client.WithAuth("s3cret")}
	b := dial(t, srv.Addr, opts...)
	probe := dial(t, srv.Addr, opts...)
	ctx := ctxT(t, 15*time.Second)
	const key = "rv4-wan"
	gb, err := b.Acquire(ctx, key, 0, client.WithLeaseTTL(30))
	require.NoError(t, err)

	l := &client.Lock{Key: key, LeaseTTL: 30, Servers: []string{proxy}, TLSConfig: srv.ClientTLS, AuthToken: "s3cret", Heartbeat: -1}
	acq := make(chan error, 1)
	go func() { _, err := l.Acquire(ctx); acq <- err }()
	require.Eventually(t, func() bool { ls, ok := lockStat(srv, key); return ok && ls.Waiters == 1 },
		5*time.Second, time.Millisecond)

	require.NoError(t, b.Release(ctx, gb)) // the grant is now on its way over the link
	began := time.Now()
	rerr := l.Release(ctx)
	took := time.Since(began)
	<-acq
	heldAfterRelease := !probeFree(t, probe, key, 0)
	t.Logf("Release returned %v after %v; key held right after: %v", rerr, took, heldAfterRelease)
	require.NoError(t, l.Close()) // defer l.Close(), or the process exiting
	time.Sleep(2 * time.Second)   // long past every round trip
	require.True(t, probeFree(t, probe, key, 0),
		"Release returned %v after %v, then Close: the lock is held by nobody until its 30 s lease ends", rerr, took)
}
