//go:build linux

package reactor_test

import (
	"bufio"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/reactor"
	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// r20Pinger keeps a helper connection within a short read timeout.
type r20Pinger struct {
	t    *testing.T
	c    *reactortest.Conn
	last time.Time
}

func (p *r20Pinger) tick() {
	if time.Since(p.last) >= 100*time.Millisecond {
		require.Equal(p.t, rOK, p.c.Do("ping", "_", "_"))
		p.last = time.Now()
	}
}

// sleep waits d while keeping the pinger's connection alive.
func (p *r20Pinger) sleep(d time.Duration) {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		p.tick()
		time.Sleep(min(25*time.Millisecond, time.Until(end)))
	}
}

// waitConns waits (keeping the pinger alive) until srv has n connections,
// and returns how long that took; it fails after max.
func (p *r20Pinger) waitConns(srv *reactortest.Server, n int64, max time.Duration) time.Duration {
	start := time.Now()
	for srv.Connections() != n {
		if time.Since(start) > max {
			p.t.Fatalf("connections still %d (want %d) after %v", srv.Connections(), n, max)
		}
		p.tick()
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

func r20Setup(t *testing.T, tr transport, rt, wt time.Duration) (*reactortest.Server, *r20Pinger, net.Conn) {
	srv := tr.start(t, func(c *reactortest.Config) {
		c.Server.Loops = 1
		c.Server.ReadTimeout = rt
		c.Server.WriteTimeout = wt
	})
	h := srv.Connect(t)
	holdKeys(t, h, 150) // stats replies of ~20 KB
	p := &r20Pinger{t: t, c: h, last: time.Now()}
	w := r19SmallConn(t, tr, srv, 2)
	return srv, p, w
}

func r20Closes(srv *reactortest.Server) (rt, wt uint64) {
	m := srv.Metrics()
	return m.Closes[reactor.CloseReadTimeout], m.Closes[reactor.CloseWriteTimeout]
}

// TestNeverReadsNeverSendsWriteTimeout: a client that pipelines
// requests whose replies do not fit the socket buffers and then neither
// reads nor sends is closed by the write timeout (not never, and not by
// the shorter read timeout).
func TestNeverReadsNeverSendsWriteTimeout(t *testing.T) {
	forTransports(t, func(t *testing.T, tr transport) {
		const rt, wt = 300 * time.Millisecond, 1500 * time.Millisecond
		srv, p, w := r20Setup(t, tr, rt, wt)
		_ = w.SetWriteDeadline(time.Now().Add(5 * time.Second))
		_, err := w.Write([]byte(strings.Repeat(req("stats", "_", "_"), 12) + req("ping", "_", "_")))
		require.NoError(t, err)
		took := p.waitConns(srv, 1, 6*time.Second)
		r, wr := r20Closes(srv)
		t.Logf("%s: closed after %v; read_timeout=%d write_timeout=%d", tr.name, took, r, wr)
		require.Greater(t, took, wt-200*time.Millisecond, "closed before the write timeout")
		require.Less(t, took, wt+1500*time.Millisecond, "closed late")
		require.Equal(t, uint64(0), r)
		require.Equal(t, uint64(1), wr)
	})
}

// TestReadTimeoutRestartsAfterDrain: a client pauses reading a
// large reply past the read timeout, reads it all, then idles: the read
// timeout runs again from the drain and closes it (error) within about
// the read timeout. And an idle client with nothing unsent is still
// closed by the read timeout.
func TestReadTimeoutRestartsAfterDrain(t *testing.T) {
	forTransports(t, func(t *testing.T, tr transport) {
		const rt, wt = 400 * time.Millisecond, 5 * time.Second
		srv, p, w := r20Setup(t, tr, rt, wt)
		idle := srv.Connect(t)
		idleStart := time.Now()

		_, err := w.Write([]byte(req("stats", "_", "_")))
		require.NoError(t, err)
		p.sleep(time.Second)
		br := bufio.NewReader(w)
		_ = w.SetReadDeadline(time.Now().Add(5 * time.Second))
		line, err := br.ReadString('\n')
		require.NoError(t, err)
		require.Greater(t, len(line), 10000)
		drained := time.Now()

		// The idle one: closed by the read timeout long ago.
		l, err := idle.ReadLine(3 * time.Second)
		require.NoError(t, err)
		require.Equal(t, rError, l)
		idle.Closed(2 * time.Second)
		t.Logf("idle closed within %v", time.Since(idleStart))

		_ = w.SetReadDeadline(time.Now().Add(4 * time.Second))
		var next string
		done := make(chan struct{})
		go func() {
			defer close(done)
			next, err = br.ReadString('\n')
		}()
		for {
			select {
			case <-done:
			default:
				p.sleep(20 * time.Millisecond)
				continue
			}
			break
		}
		after := time.Since(drained)
		t.Logf("%s: after the drain: %q (err %v) after %v", tr.name, next, err, after)
		require.NoError(t, err)
		require.Equal(t, rError+"\n", next)
		require.Greater(t, after, rt/2)
		require.Less(t, after, rt+time.Second)
		r, _ := r20Closes(srv)
		require.Equal(t, uint64(2), r)
	})
}

// TestStalledHalfClose: pipelined requests, a half-close, and no
// reading: closed by the write timeout; with reading after a pause past
// the read timeout: every reply, then EOF (no error).
func TestStalledHalfClose(t *testing.T) {
	forTransports(t, func(t *testing.T, tr transport) {
		const rt, wt = 300 * time.Millisecond, 1500 * time.Millisecond
		for _, reads := range []bool{false, true} {
			srv, p, w := r20Setup(t, tr, rt, wt)
			_ = w.SetWriteDeadline(time.Now().Add(5 * time.Second))
			_, err := w.Write([]byte(strings.Repeat(req("stats", "_", "_"), 8) + req("ping", "_", "_")))
			require.NoError(t, err)
			type closeWriter interface{ CloseWrite() error }
			require.NoError(t, w.(closeWriter).CloseWrite())
			if !reads {
				took := p.waitConns(srv, 1, 6*time.Second)
				r, wr := r20Closes(srv)
				t.Logf("%s no-read: closed after %v; read_timeout=%d write_timeout=%d", tr.name, took, r, wr)
				require.Greater(t, took, wt-200*time.Millisecond)
				require.Less(t, took, wt+1500*time.Millisecond)
				require.Equal(t, uint64(1), wr)
				continue
			}
			p.sleep(time.Second)
			_ = w.SetReadDeadline(time.Now().Add(5 * time.Second))
			var got []byte
			buf := make([]byte, 32<<10)
			for {
				k, err := w.Read(buf)
				got = append(got, buf[:k]...)
				if err != nil {
					t.Logf("%s read: ended %v", tr.name, err)
					break
				}
			}
			lines := strings.Split(strings.TrimSuffix(string(got), "\n"), "\n")
			require.Len(t, lines, 9)
			require.Equal(t, rOK, lines[8])
			p.waitConns(srv, 1, 3*time.Second)
			r, wr := r20Closes(srv)
			require.Equal(t, uint64(0), r+wr)
		}
	})
}

// TestStalledThenParked: replies unsent and, behind them, a
// request that blocks. Paused past the read timeout then read: every
// reply, no error while parked, the grant on release, then the read
// timeout closes the idle client. Never read: the write timeout closes
// it and its queued place goes.
func TestStalledThenParked(t *testing.T) {
	forTransports(t, func(t *testing.T, tr transport) {
		const rt, wt = 400 * time.Millisecond, 1500 * time.Millisecond
		for _, reads := range []bool{true, false} {
			srv, p, w := r20Setup(t, tr, rt, wt)
			tok := lock(t, p.c, "p")
			_ = w.SetWriteDeadline(time.Now().Add(5 * time.Second))
			_, err := w.Write([]byte(strings.Repeat(req("stats", "_", "_"), 6) + req("l", "p", "10")))
			require.NoError(t, err)
			if !reads {
				took := p.waitConns(srv, 1, 6*time.Second)
				r, wr := r20Closes(srv)
				t.Logf("%s no-read: closed after %v; read_timeout=%d write_timeout=%d", tr.name, took, r, wr)
				require.Equal(t, uint64(1), wr)
				require.Equal(t, rOK, p.c.Do("r", "p", tok))
				mustGrant(t, p.c.Do("l", "p", "0"), rOK, 33)
				continue
			}
			p.sleep(time.Second)
			br := bufio.NewReader(w)
			_ = w.SetReadDeadline(time.Now().Add(5 * time.Second))
			for i := range 6 {
				line, err := br.ReadString('\n')
				require.NoError(t, err, "stats reply %d", i)
				require.Greater(t, len(line), 10000)
			}
			// Parked: no read timeout.
			p.sleep(1200 * time.Millisecond)
			require.Equal(t, rOK, p.c.Do("r", "p", tok))
			_ = w.SetReadDeadline(time.Now().Add(3 * time.Second))
			line, err := br.ReadString('\n')
			require.NoError(t, err)
			mustGrant(t, strings.TrimSuffix(line, "\n"), rOK, 33)
			granted := time.Now()
			took := p.waitConns(srv, 1, 3*time.Second)
			t.Logf("%s: idle after the grant, closed in %v", tr.name, time.Since(granted))
			require.Less(t, took, rt+time.Second)
			r, _ := r20Closes(srv)
			require.Equal(t, uint64(1), r)
		}
	})
}

// TestStallNoSpin: a stalled connection (write timeout long)
// costs the server little CPU while it waits: the stall check runs every
// 50 ms, it does not spin the timer wheel.
func TestStallNoSpin(t *testing.T) {
	forTransports(t, func(t *testing.T, tr transport) {
		const rt, wt = 200 * time.Millisecond, 10 * time.Second
		srv, p, w := r20Setup(t, tr, rt, wt)
		_ = w.SetWriteDeadline(time.Now().Add(5 * time.Second))
		_, err := w.Write([]byte(strings.Repeat(req("stats", "_", "_"), 12)))
		require.NoError(t, err)
		p.sleep(200 * time.Millisecond)
		var a, b syscall.Rusage
		require.NoError(t, syscall.Getrusage(syscall.RUSAGE_SELF, &a))
		start := time.Now()
		p.sleep(1500 * time.Millisecond)
		require.NoError(t, syscall.Getrusage(syscall.RUSAGE_SELF, &b))
		cpu := time.Duration(b.Utime.Nano()-a.Utime.Nano()) + time.Duration(b.Stime.Nano()-a.Stime.Nano())
		t.Logf("%s: CPU %v over %v while stalled", tr.name, cpu, time.Since(start))
		require.Less(t, cpu, 500*time.Millisecond)
		require.Equal(t, int64(2), srv.Connections())
	})
}

// TestStalledParkedHalfClose: replies unsent, a request behind
// them that blocks, then a half-close: the waiter leaves the queue at
// once (dropAtHalfClose) and the connection closes after its replies
// drain, or by the write timeout if they never do.
func TestStalledParkedHalfClose(t *testing.T) {
	forTransports(t, func(t *testing.T, tr transport) {
		const rt, wt = 300 * time.Millisecond, 1500 * time.Millisecond
		for _, reads := range []bool{false, true} {
			srv, p, w := r20Setup(t, tr, rt, wt)
			tok := lock(t, p.c, "q")
			_ = w.SetWriteDeadline(time.Now().Add(5 * time.Second))
			_, err := w.Write([]byte(strings.Repeat(req("stats", "_", "_"), 6) + req("l", "q", "10")))
			require.NoError(t, err)
			p.sleep(100 * time.Millisecond)
			type closeWriter interface{ CloseWrite() error }
			require.NoError(t, w.(closeWriter).CloseWrite())
			p.sleep(200 * time.Millisecond)
			// The waiter is gone: a release leaves q free.
			require.Equal(t, rOK, p.c.Do("r", "q", tok))
			mustGrant(t, p.c.Do("l", "q", "0"), rOK, 33)
			if !reads {
				took := p.waitConns(srv, 1, 6*time.Second)
				r, wr := r20Closes(srv)
				t.Logf("%s no-read: closed after %v; read_timeout=%d write_timeout=%d", tr.name, took, r, wr)
				require.Less(t, took, wt+1500*time.Millisecond)
				require.Equal(t, uint64(1), wr)
				continue
			}
			p.sleep(700 * time.Millisecond)
			_ = w.SetReadDeadline(time.Now().Add(5 * time.Second))
			var got []byte
			buf := make([]byte, 32<<10)
			for {
				k, err := w.Read(buf)
				got = append(got, buf[:k]...)
				if err != nil {
					t.Logf("%s read: ended %v", tr.name, err)
					break
				}
			}
			lines := strings.Split(strings.TrimSuffix(string(got), "\n"), "\n")
			require.Len(t, lines, 6, "the six stats replies, nothing for the dropped l")
			p.waitConns(srv, 1, 3*time.Second)
			r, wr := r20Closes(srv)
			require.Equal(t, uint64(0), r+wr)
		}
	})
}
