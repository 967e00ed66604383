package reactor_test

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// TestLongLineAcrossTrim: after a burst behind a parked request,
// the buffer is trimmed with the start of a line left; the line limit
// still counts those bytes: a 256-byte key line completed later is fine,
// and a line that reaches 257 bytes without a newline answers error and
// closes at once (not after the read timeout), whatever was left at the
// trim.
func TestLongLineAcrossTrim(t *testing.T) {
	const pings = 30 << 10 / 11
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			srv := tr.start(t, func(c *reactortest.Config) { c.Server.Loops = 2 })
			h := srv.Connect(t)
			burst := strings.Repeat(req("ping", "_", "_"), pings)
			type tc struct {
				left  int // bytes of the key line left at the trim
				later int // bytes of it sent later, then "\n" if ok
				ok    bool
			}
			var cases []tc
			for _, left := range []int{0, 1, 100, 255, 256} {
				cases = append(cases, tc{left, 256 - left, true})
				cases = append(cases, tc{left, 257 - left, false})
			}
			conns := make([]*reactortest.Conn, len(cases))
			var toks []string
			for i, cs := range cases {
				key := fmt.Sprintf("ll-%d", i)
				toks = append(toks, mustGrant(t, h.Do("l", key, "0"), rOK, 33))
				conns[i] = srv.Connect(t)
				conns[i].Send(req("l", key, "10") + burst + "ping\n" + strings.Repeat("k", cs.left))
			}
			time.Sleep(100 * time.Millisecond)
			for i := range cases {
				require.Equal(t, rOK, h.Do("r", fmt.Sprintf("ll-%d", i), toks[i]))
			}
			var wg sync.WaitGroup
			for i, cs := range cases {
				c := conns[i]
				wg.Add(1)
				go func() {
					defer wg.Done()
					mustGrant(t, c.Line(), rOK, 33)
					for range pings {
						require.Equal(t, rOK, c.Line())
					}
					c.NoReply(30 * time.Millisecond)
					for j := 0; j < cs.later; {
						m := min(1+j%3, cs.later-j)
						c.Send(strings.Repeat("k", m))
						j += m
					}
					if cs.ok {
						c.Send("\n_\n")
						require.Equal(t, rOK, c.Line(), "case %+v", cs)
						require.Equal(t, rOK, c.Do("ping", "_", "_"))
						return
					}
					line, err := c.ReadLine(2 * time.Second)
					require.NoError(t, err, "case %+v: a 257-byte line must be refused at once", cs)
					require.Equal(t, rError, line, "case %+v", cs)
					c.Closed(2 * time.Second)
				}()
			}
			wg.Wait()
		})
	}
}

// TestInputDuringReplyStop: a client sends stats requests whose
// replies exceed the high-water mark and does not read for a while, sending
// more requests meanwhile (piling up while decoding is stopped), ending
// with a partial request; then it reads everything, and completes the
// partial one byte at a time. Every reply in order, none extra.
func TestInputDuringReplyStop(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			srv := tr.start(t, func(c *reactortest.Config) { c.Server.Loops = 2 })
			big := srv.Connect(t)
			bigKeysForStats(t, big, 100) // ~31 KB stats replies
			c := srv.Connect(t)
			var want []string
			var b strings.Builder
			for i := range 12 {
				b.WriteString(req("stats", "_", "_"))
				want = append(want, "stats")
				for j := range 150 {
					if j%7 == 3 {
						b.WriteString(req("l", fmt.Sprintf("ids-%d-%d", i, j), "0"))
						want = append(want, "grant")
						continue
					}
					b.WriteString(req("ping", strings.Repeat("x", 1+j%40), "_"))
					want = append(want, rOK)
				}
			}
			all := b.String() + "ping\r\n_"
			// Send in pieces without reading (stays under the 64 KiB
			// inbound cap: ~30 KB of requests).
			for off := 0; off < len(all); {
				m := min(1+(off*7)%1500, len(all)-off)
				c.Send(all[off : off+m])
				off += m
			}
			time.Sleep(200 * time.Millisecond)
			for i, w := range want {
				line := c.Line()
				switch w {
				case "stats":
					require.True(t, strings.HasPrefix(line, "ok {\"connections\":") && strings.HasSuffix(line, "]}"), "reply %d: %.80q", i, line)
				case "grant":
					mustGrant(t, line, rOK, 33)
				default:
					require.Equal(t, w, line, "reply %d", i)
				}
			}
			c.NoReply(30 * time.Millisecond)
			for _, p := range []string{"\r", "\n", "_", "\r", "\n"} {
				c.Send(p)
				time.Sleep(time.Millisecond)
			}
			require.Equal(t, rOK, c.Line())
			c.NoReply(30 * time.Millisecond)
		})
	}
}

// TestHalfCloseAfterTrim: a burst behind a parked request ends
// with a partial request; once the park is granted the client half-closes
// (its first reply read, the burst possibly still being decoded, in steps
// under a small reply high-water mark). Every complete request is
// answered, the partial one is not, then the server closes.
func TestHalfCloseAfterTrim(t *testing.T) {
	for _, tr := range transports {
		for _, hw := range []int{0, 400} {
			t.Run(fmt.Sprintf("%s/hw%d", tr.name, hw), func(t *testing.T) {
				srv := tr.start(t, func(c *reactortest.Config) {
					c.Server.Loops = 2
					c.Server.OutboundHighWater = hw
				})
				h := srv.Connect(t)
				const n = 8
				const pings = 40 << 10 / 11
				burst := strings.Repeat(req("ping", "_", "_"), pings)
				tails := []string{"", "p", "ping\r", "ping\n_\n", "ping\n_\n_", "ping\n_\n_\r"}
				var wg sync.WaitGroup
				var hmu sync.Mutex
				for i := range n {
					key := fmt.Sprintf("hc14-%d", i)
					tok := mustGrant(t, h.Do("l", key, "0"), rOK, 33)
					c := dialRaw(t, tr, srv)
					tail := tails[i%len(tails)]
					_, err := c.Write([]byte(req("l", key, "10") + burst + tail))
					require.NoError(t, err)
					wg.Add(1)
					go func() {
						defer wg.Done()
						time.Sleep(50 * time.Millisecond)
						hmu.Lock()
						defer hmu.Unlock()
						require.Equal(t, rOK, h.Do("r", key, tok))
					}()
					wg.Add(1)
					go func() {
						defer wg.Done()
						require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
						buf := make([]byte, 39) // the grant line exactly: "ok " + 32 hex + " 33\n"
						_, err := io.ReadFull(c, buf)
						require.NoError(t, err)
						mustGrant(t, strings.TrimSuffix(string(buf), "\n"), rOK, 33)
						halfClose(t, c)
						lines, closed := readAll(t, c, 5*time.Second)
						require.True(t, closed, "tail %q: not closed", tail)
						require.Len(t, lines, pings, "tail %q", tail)
						for k, l := range lines {
							require.Equal(t, rOK, l, "tail %q reply %d", tail, k)
						}
					}()
				}
				wg.Wait()
			})
		}
	}
}

// TestCapBoundaryAfterTrim: the inbound cap behind a blocked
// request is exact on a connection whose buffer was trimmed with the
// start of that request left in it: exactly the cap behind it is kept and
// answered, one byte more (1 KiB on TLS, see TestFloodBehindBlockingBoundary)
// closes.
func TestCapBoundaryAfterTrim(t *testing.T) {
	const inboundCap = 16 << 10
	for _, tr := range transports {
		over := 1
		if tr.tls {
			over = 1024
		}
		for _, extra := range []int{0, over} {
			t.Run(fmt.Sprintf("%s/extra%d", tr.name, extra), func(t *testing.T) {
				srv := tr.start(t, func(c *reactortest.Config) { c.Server.InboundCap = inboundCap })
				obs := srv.Connect(t)
				h := srv.Connect(t)
				tokA := mustGrant(t, h.Do("l", "cap-a", "0"), rOK, 33)
				tokB := mustGrant(t, h.Do("l", "cap-b", "0"), rOK, 33)
				c := srv.Connect(t)
				const pings = 12 << 10 / 10
				c.Send(req("l", "cap-a", "10") + strings.Repeat(req("ping", "_", "_"), pings) + "l\ncap-")
				waitLockWaiters(t, obs, "cap-a", 1)
				require.Equal(t, rOK, h.Do("r", "cap-a", tokA))
				mustGrant(t, c.Line(), rOK, 33)
				for range pings {
					require.Equal(t, rOK, c.Line())
				}
				behind, k := behindBlocked(inboundCap + extra)
				c.Send("b\n10\n" + string(behind))
				if extra > 0 {
					c.Closed(5 * time.Second)
					waitLockWaiters(t, obs, "cap-b", 0)
					return
				}
				waitLockWaiters(t, obs, "cap-b", 1)
				time.Sleep(100 * time.Millisecond)
				require.Equal(t, rOK, h.Do("r", "cap-b", tokB))
				mustGrant(t, c.Line(), rOK, 33)
				for range k {
					require.Equal(t, rOK, c.Line())
				}
				c.NoReply(30 * time.Millisecond)
			})
		}
	}
}
