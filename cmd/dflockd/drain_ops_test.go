package main

// Drain with two-phase enqueues, pipelined requests and side-port probes
// at the moment of the signal.

import (
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A client that did `e` (answered `queued`) before SIGTERM can still `w`:
// it finishes a request made before the drain. Refused, the enqueue kept
// its place in line, the holder's release went to it, and the `l` parked
// behind it was cut off at --shutdown-timeout without an answer.
func TestDrainTwoPhaseEnqueueFinishes(t *testing.T) {
	t.Parallel()
	srv := startServer(t, procConfig{args: []string{"--shutdown-timeout", "4"}})
	holder := dialServer(t, srv.addr)
	tok := requireGrant(t, holder.do("l", "k", "0"), 33)
	enq := dialServer(t, srv.addr)
	require.Equal(t, "queued", enq.do("e", "k", ""))
	waiter := dialServer(t, srv.addr)
	waiter.send("l", "k", "30")
	probe := dialServer(t, srv.addr)
	waitWaiters(t, probe, "k", 2)

	start := time.Now()
	srv.signal(t, syscall.SIGTERM)
	eventually(t, ioTimeout, "draining", func() bool { return probe.do("ping", "_", "_") == "error_draining" })

	enq.send("w", "k", "10")
	require.Equal(t, "ok", holder.do("r", "k", tok))
	wReply, err := enq.readLine(ioTimeout)
	require.NoError(t, err)
	etok := requireGrant(t, wReply, 33)
	require.Equal(t, "ok", enq.do("r", "k", etok))

	line, err := waiter.readLine(8 * time.Second)
	elapsed := time.Since(start)
	t.Logf("enqueuer's w during drain: %q; parked waiter after release: %q err=%v after %v", wReply, line, err, elapsed.Round(time.Millisecond))
	assert.NoError(t, err, "the parked l was never answered: the release went to the enqueuer that cannot w")
	assert.Less(t, elapsed, 2*time.Second, "drain should end soon after the release, not at --shutdown-timeout")
	require.Equal(t, 0, srv.waitExit(t, 10*time.Second))
}

// TestDrainPipelinedBehindParked: requests pipelined behind a
// parked acquire when SIGTERM arrives: once it is granted, the release
// behind it still works, others get error_draining, every one is answered
// before the close, and exit is 0.
func TestDrainPipelinedBehindParked(t *testing.T) {
	t.Parallel()
	srv := startServer(t, procConfig{args: []string{"--shutdown-timeout", "10"}})
	holder := dialServer(t, srv.addr)
	tok := requireGrant(t, holder.do("l", "k", "0"), 33)
	w := dialServer(t, srv.addr)
	// parked l, then ping, l other, stats, renew of a bogus token, sl.
	_, err := io.WriteString(w.nc, "l\nk\n30\nping\n_\n_\nl\nother\n0\nstats\n_\n_\nn\nk\n0123\nsl\ns\n0 2\n")
	require.NoError(t, err)
	probe := dialServer(t, srv.addr)
	waitWaiters(t, probe, "k", 1)
	srv.signal(t, syscall.SIGTERM)
	eventually(t, ioTimeout, "draining", func() bool { return probe.do("ping", "_", "_") == "error_draining" })
	require.Equal(t, "ok", holder.do("r", "k", tok))
	var got []string
	for {
		line, err := w.readLine(ioTimeout)
		if err != nil {
			break
		}
		got = append(got, line)
	}
	t.Logf("replies: %q", got)
	require.Len(t, got, 6)
	requireGrant(t, got[0], 33)
	assert.Equal(t, []string{"error_draining", "error_draining", "error_draining", "error", "error_draining"}, got[1:])
	require.Equal(t, 0, srv.waitExit(t, 5*time.Second))
}

// TestDrainProbes: /healthz 200, /readyz 503 and
// dflockd_draining 1 for the whole drain; metrics still scrapeable.
func TestDrainProbes(t *testing.T) {
	t.Parallel()
	p, base := startHTTPServer(t, "--shutdown-timeout", "3")
	holder := dialServer(t, p.addr)
	requireGrant(t, holder.do("l", "k", "0"), 33)
	waiter := dialServer(t, p.addr)
	waiter.send("l", "k", "30")
	waitSeries(t, base, "", "dflockd_parked_requests", 1)
	code, _ := get(t, base+"/readyz", "")
	require.Equal(t, http.StatusOK, code)
	p.signal(t, syscall.SIGTERM)
	eventually(t, ioTimeout, "readyz 503", func() bool { c, _ := get(t, base+"/readyz", ""); return c == 503 })
	for range 5 {
		c, body := get(t, base+"/healthz", "")
		assert.Equal(t, 200, c, body)
		c, body = get(t, base+"/readyz", "")
		assert.Equal(t, 503, c)
		assert.Equal(t, "draining\n", body)
		m := scrapeText(t, base, "")
		assert.Equal(t, 1.0, m["dflockd_draining"])
		assert.Equal(t, 1.0, m["dflockd_parked_requests"])
		code, body := get(t, base+"/v1/stats", "")
		assert.Equal(t, 200, code)
		assert.True(t, strings.Contains(body, `"waiters":1`), body)
		time.Sleep(200 * time.Millisecond)
	}
	require.Equal(t, 0, p.waitExit(t, 10*time.Second))
	assert.Contains(t, p.stderr.String(), "shutdown timeout")
}

// TestDrainPipelinedFlood: SIGTERM while clients pipeline
// bursts of pings without waiting: every connection's reply stream is
// whole lines, ok then error_draining, never a partial line, then EOF.
func TestDrainPipelinedFlood(t *testing.T) {
	t.Parallel()
	srv := startServer(t, procConfig{args: []string{"--shutdown-timeout", "3"}})
	const conns = 6
	type result struct {
		data    []byte
		readErr error
	}
	results := make([]result, conns)
	done := make(chan int, conns)
	stop := make(chan struct{})
	burst := strings.Repeat("ping\n_\n_\n", 100)
	for i := range conns {
		nc, err := netDial(srv.addr)
		require.NoError(t, err)
		t.Cleanup(func() { _ = nc.Close() })
		go func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				_ = nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
				if _, err := io.WriteString(nc, burst); err != nil {
					return
				}
				time.Sleep(time.Millisecond)
			}
		}()
		go func() {
			_ = nc.SetReadDeadline(time.Now().Add(20 * time.Second))
			b, err := io.ReadAll(nc)
			results[i].data, results[i].readErr = b, err
			done <- i
		}()
	}
	time.Sleep(400 * time.Millisecond)
	srv.signal(t, syscall.SIGTERM)
	require.Equal(t, 0, srv.waitExit(t, 10*time.Second))
	for range conns {
		<-done
	}
	close(stop)
	for i, r := range results {
		s := string(r.data)
		lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
		oks, drains := 0, 0
		bad := ""
		for _, l := range lines {
			switch {
			case l == "ok" && drains == 0:
				oks++
			case l == "error_draining":
				drains++
			default:
				if bad == "" {
					bad = l
				}
			}
		}
		t.Logf("conn %d: %d ok, %d error_draining, read err %v", i, oks, drains, r.readErr)
		assert.True(t, s == "" || strings.HasSuffix(s, "\n"), "conn %d: partial last line %q", i, lines[len(lines)-1])
		assert.Empty(t, bad, "conn %d: unexpected line", i)
		assert.Positive(t, oks)
	}
}

func netDial(addr string) (net.Conn, error) { return net.DialTimeout("tcp", addr, ioTimeout) }
