package reactor_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// Misbehaving clients: the server must bound what it buffers for them,
// drop them, and keep serving everyone else.

// dialRaw connects to srv the way tr serves it, for raw I/O.
func dialRaw(t *testing.T, tr transport, srv *reactortest.Server) net.Conn {
	t.Helper()
	return dialTuned(t, tr, srv, nil)
}

// dialTuned is dialRaw with socket options set by tune (when not nil)
// before the connect.
func dialTuned(t *testing.T, tr transport, srv *reactortest.Server, tune func(fd int) error) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if tune != nil {
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) { serr = tune(int(fd)) }); err != nil {
				return err
			}
			return serr
		}
	}
	nc, err := d.Dial("tcp", srv.Addr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = nc.Close() })
	if !tr.tls {
		return nc
	}
	tc := tlsClient(nc, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, tc.HandshakeContext(ctx))
	return tc
}

// tlsClient wraps nc in a TLS client trusting srv's certificate.
func tlsClient(nc net.Conn, srv *reactortest.Server) *tls.Conn {
	return tls.Client(nc, srv.ClientTLS)
}

// isTimeout reports whether err is a deadline expiry.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// holdKeys makes stats replies large (~115 bytes a key) by holding n locks
// on c.
func holdKeys(t testing.TB, c *reactortest.Conn, n int) {
	t.Helper()
	holdNamed(t, c, n, func(i int) string {
		return "key-with-a-reasonably-long-name-to-grow-the-stats-reply-" + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + string(rune('a'+i/26))
	})
}

// bigKeysForStats holds n locks with ~240-byte keys on c (about 310 bytes of
// stats JSON each).
func bigKeysForStats(t testing.TB, c *reactortest.Conn, n int) {
	t.Helper()
	pad := strings.Repeat("k", 230)
	holdNamed(t, c, n, func(i int) string { return fmt.Sprintf("%s-%07d", pad, i) })
}

// holdNamed locks the keys name(0..n-1) on c, pipelined, reading the
// grants as they come (a writer goroutine: many grants fill the buffers).
func holdNamed(t testing.TB, c *reactortest.Conn, n int, name func(int) string) {
	t.Helper()
	var b strings.Builder
	for i := range n {
		b.WriteString(req("l", name(i), "0"))
	}
	werr := make(chan error, 1)
	go func() {
		_ = c.SetWriteDeadline(time.Now().Add(15 * time.Second))
		_, err := c.Write([]byte(b.String()))
		werr <- err
	}()
	for i := range n {
		line, err := c.ReadLine(15 * time.Second)
		require.NoError(t, err, "grant %d", i)
		mustGrant(t, line, rOK, 33)
	}
	require.NoError(t, <-werr)
}

// heapPeak samples the heap in use until stop is closed and returns the
// largest reading.
func heapPeak(stop <-chan struct{}) <-chan uint64 {
	res := make(chan uint64, 1)
	go func() {
		var ms runtime.MemStats
		var peak uint64
		for {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
			select {
			case <-stop:
				res <- peak
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return res
}

func heapInuse() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// TestNonReadingClientIsDropped: a client pipelines 2 MB of requests
// (pings, with a stats every tenth request so that the replies outgrow
// every socket buffer) and never reads a reply.
func TestNonReadingClientIsDropped(t *testing.T) {
	forTransports(t, func(t *testing.T, tr transport) {
		srv := tr.start(t, func(c *reactortest.Config) { c.Server.WriteTimeout = time.Second })
		good := srv.Connect(t)
		holdKeys(t, good, 150)
		flood := dialRaw(t, tr, srv)
		waitConnections(t, srv, 2)

		var payload bytes.Buffer
		for i := 0; payload.Len() < 2<<20; i++ {
			if i%10 == 9 {
				payload.WriteString(req("stats", "_", "_"))
			} else {
				payload.WriteString(req("ping", "_", "_"))
			}
		}
		base := heapInuse()
		stopSampling := make(chan struct{})
		peak := heapPeak(stopSampling)
		start := time.Now()
		var writeDone atomic.Bool
		go func() {
			_ = flood.SetWriteDeadline(time.Now().Add(30 * time.Second))
			_, _ = flood.Write(payload.Bytes()) // fails once the server drops us
			writeDone.Store(true)
		}()

		// Everyone else is served meanwhile, and the flooder is dropped
		// within the write timeout plus slack.
		for srv.Connections() > 1 {
			require.Less(t, time.Since(start), 10*time.Second, "a client that never reads is still connected")
			before := time.Now()
			require.Equal(t, rOK, good.Do("ping", "_", "_"))
			require.Less(t, time.Since(before), 2*time.Second, "other clients starve")
			time.Sleep(20 * time.Millisecond)
		}
		close(stopSampling)
		grew := int64(<-peak) - int64(base)
		t.Logf("dropped after %v; heap grew by at most %d KiB", time.Since(start), grew>>10)
		require.Less(t, grew, int64(64<<20), "the server buffered without bound")
		require.Equal(t, rOK, good.Do("ping", "_", "_"))
		require.Eventually(t, writeDone.Load, 10*time.Second, 10*time.Millisecond)
	})
}

// TestStalledReaderIsDropped: the client sends a few kilobytes (far below
// the inbound cap) whose replies fill every buffer, then never reads:
// only the write-stall timer can drop it.
func TestStalledReaderIsDropped(t *testing.T) {
	forTransports(t, func(t *testing.T, tr transport) {
		srv := tr.start(t, func(c *reactortest.Config) {
			c.Server.WriteTimeout = time.Second
			c.Server.ReadTimeout = time.Minute
		})
		obs := srv.Connect(t)
		holdKeys(t, obs, 150)
		c := dialRaw(t, tr, srv)
		waitConnections(t, srv, 2)
		start := time.Now()
		// 6 KB in, 10 MB of replies out.
		_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		_, err := c.Write(bytes.Repeat([]byte(req("stats", "_", "_")), 600))
		require.NoError(t, err)
		for srv.Connections() > 1 {
			require.Less(t, time.Since(start), 10*time.Second, "a stalled reader is still connected")
			require.Equal(t, rOK, obs.Do("ping", "_", "_"))
			time.Sleep(20 * time.Millisecond)
		}
		t.Logf("dropped after %v", time.Since(start))
		require.Greater(t, time.Since(start), 500*time.Millisecond, "dropped before the write timeout")
	})
}

// TestPipelinedRepliesBeyondHighWater: a client that does read gets every
// reply, even when one pipelined burst answers more than the outbound
// high-water mark and nothing more arrives to restart decoding.
func TestPipelinedRepliesBeyondHighWater(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		t.Run("pings, small mark", func(t *testing.T) {
			t.Parallel()
			srv := tr.start(t, func(c *reactortest.Config) { c.Server.OutboundHighWater = 512 })
			c := srv.Connect(t)
			const n = 5000
			c.Send(strings.Repeat(req("ping", "_", "_"), n))
			for i := range n {
				require.Equal(t, rOK, c.Line(), "reply %d", i)
			}
		})
		t.Run("stats, default mark", func(t *testing.T) {
			t.Parallel()
			srv := tr.start(t)
			c := srv.Connect(t)
			holdKeys(t, c, 150)
			const n = 40 // ~700 KB of replies
			c.Send(strings.Repeat(req("stats", "_", "_"), n) + req("ping", "_", "_"))
			for i := range n {
				require.True(t, strings.HasPrefix(c.Line(), rOK+" {"), "reply %d", i)
			}
			require.Equal(t, rOK, c.Line())
		})
	})
}

// TestFloodWhileParked: a parked connection with more than the inbound cap
// unread is closed, with no reply, and its waiter leaves the queue. Also
// just past a small cap: over TLS the slack kept for an incomplete request
// once applied to parked connections too (cap + 771 bytes were kept).
func TestFloodWhileParked(t *testing.T) {
	for _, tc := range []struct {
		name          string
		inboundCap, n int // the cap; bytes sent while parked
	}{
		{"1 MB over 16 KiB", 16 << 10, 1 << 20},
		{"594 B over 100 B", 100, 600},
	} {
		t.Run(tc.name, func(t *testing.T) {
			eachTransport(t, func(t *testing.T, tr transport) {
				srv := tr.start(t, func(c *reactortest.Config) { c.Server.InboundCap = tc.inboundCap })
				obs := srv.Connect(t)
				a := srv.Connect(t)
				lock(t, a, "fl")
				b := dialRaw(t, tr, srv)
				_, err := b.Write([]byte(req("l", "fl", "60")))
				require.NoError(t, err)
				waitLockWaiters(t, obs, "fl", 1)

				payload := bytes.Repeat([]byte(req("ping", "_", "_")), tc.n/9)
				wrote := make(chan struct{})
				go func() {
					defer close(wrote)
					_ = b.SetWriteDeadline(time.Now().Add(20 * time.Second))
					_, _ = b.Write(payload) // fails once the server closes, or the kernel takes it all
				}()
				require.NoError(t, b.SetReadDeadline(time.Now().Add(10*time.Second)))
				n, rerr := io.Copy(io.Discard, b)
				require.False(t, isTimeout(rerr), "a client flooding while parked was not closed")
				require.Zero(t, n, "no reply for a parked request")
				<-wrote
				waitLockWaiters(t, obs, "fl", 0)
				require.Equal(t, rOK, a.Do("ping", "_", "_"))
			})
		})
	}
}

// TestFloodBehindBlockingRequest: more than the inbound cap sent in the
// same write as a request that blocks is bounded at once, when the request
// parks, not from the next read on (none comes: the client sent it all),
// which let up to a read's worth past the cap wait for the request.
func TestFloodBehindBlockingRequest(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		const inboundCap = 16 << 10
		srv := tr.start(t, func(c *reactortest.Config) { c.Server.InboundCap = inboundCap })
		obs := srv.Connect(t)
		a := srv.Connect(t)
		lock(t, a, "fb")
		b := dialRaw(t, tr, srv)
		burst := []byte(req("l", "fb", "60"))
		for len(burst) < inboundCap+inboundCap/2 {
			burst = append(burst, req("ping", "_", "_")...)
		}
		_, err := b.Write(burst)
		require.NoError(t, err)
		require.NoError(t, b.SetReadDeadline(time.Now().Add(10*time.Second)))
		n, rerr := io.Copy(io.Discard, b)
		require.False(t, isTimeout(rerr), "%d bytes behind a blocked request (cap %d) were kept", len(burst), inboundCap)
		require.Zero(t, n, "no reply for a parked request")
		waitLockWaiters(t, obs, "fb", 0)
		require.Equal(t, rOK, a.Do("ping", "_", "_"))
	})
}

// TestPipelineBurstWhileReading: a client that pipelines a large burst of
// requests while reading every reply is never "not being decoded"
// (Config.InboundCap), so it gets every reply. Over TLS the reader
// goroutine used to run more than the cap ahead of the processor and close
// the connection after ~8,000 replies.
func TestPipelineBurstWhileReading(t *testing.T) {
	forTransports(t, func(t *testing.T, tr transport) {
		srv := tr.start(t)
		c := dialRaw(t, tr, srv)
		const n = 100_000 // 900 KB of pings
		payload := bytes.Repeat([]byte(req("ping", "_", "_")), n)
		werr := make(chan error, 1)
		go func() {
			_ = c.SetWriteDeadline(time.Now().Add(20 * time.Second))
			_, err := c.Write(payload)
			werr <- err
		}()
		r := bufio.NewReaderSize(c, 64<<10)
		require.NoError(t, c.SetReadDeadline(time.Now().Add(20*time.Second)))
		got := 0
		for ; got < n; got++ {
			line, err := r.ReadString('\n')
			if err != nil {
				break
			}
			require.Equal(t, rOK+"\n", line)
		}
		require.Equal(t, n, got, "replies received before the server closed the connection")
		require.NoError(t, <-werr)
	})
}
