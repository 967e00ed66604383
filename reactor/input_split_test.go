package reactor_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// TestSplitEveryBoundaryAfterBurst: ~60 KiB of pings pile up
// behind a request parked on a held key, ending with the first i bytes of
// a short script; the park ends (timeout, or the holder's release, or the
// holder's disconnect), the burst is answered and the buffer is trimmed
// with those i bytes left; the rest of the script then comes in 1-byte,
// then larger, writes. For every i the script's replies must be exact.
func TestSplitEveryBoundaryAfterBurst(t *testing.T) {
	const pings = 24 << 10 / 11
	script := func(i int) (string, []string) {
		s := "ping\r\n_\r\n_\r\n" +
			req("l", fmt.Sprintf("split-%d", i), "0") +
			req("bogus", "k", "1") +
			"ping\n" + strings.Repeat("q", 30) + "\n_\n" +
			req("r", fmt.Sprintf("split-%d", i), strings.Repeat("0", 32))
		return s, []string{rOK, "grant", rError, rOK, rError}
	}
	base, _ := script(0)
	n := len(base) // same length for every i below 10 (key length)
	_ = n
	for _, tr := range transports {
		for _, how := range []string{"timeout", "release", "close"} {
			t.Run(tr.name+"/"+how, func(t *testing.T) {
				srv := tr.start(t, func(c *reactortest.Config) { c.Server.Loops = 2 })
				burst := strings.Repeat(req("ping", "_", "_"), pings)
				// Positions: every byte of the script (one connection each).
				s0, _ := script(100)
				positions := len(s0)
				var holders []*reactortest.Conn
				var toks []string
				conns := make([]*reactortest.Conn, positions)
				scripts := make([]string, positions)
				wants := make([][]string, positions)
				for i := range positions {
					key := "hot"
					if how != "timeout" {
						key = fmt.Sprintf("hot-%d", i)
					}
					if how == "timeout" && i == 0 || how != "timeout" {
						h := srv.Connect(t)
						toks = append(toks, mustGrant(t, h.Do("l", key, "0 600"), rOK, 600))
						holders = append(holders, h)
					}
					s, w := script(100 + i)
					scripts[i], wants[i] = s, w
					timeout := "1"
					if how != "timeout" {
						timeout = "10"
					}
					conns[i] = srv.Connect(t)
					conns[i].Send(req("l", key, timeout) + burst + s[:i])
				}
				time.Sleep(150 * time.Millisecond) // all parked, bursts buffered
				switch how {
				case "release":
					for i, h := range holders {
						require.Equal(t, rOK, h.Do("r", fmt.Sprintf("hot-%d", i), toks[i]))
					}
				case "close":
					for _, h := range holders {
						_ = h.Close()
					}
				}
				var wg sync.WaitGroup
				for i, c := range conns {
					wg.Add(1)
					go func() {
						defer wg.Done()
						first := c.Line()
						if how == "timeout" {
							require.Equal(t, rTimeout, first, "conn %d", i)
						} else {
							mustGrant(t, first, rOK, 33)
						}
						for k := range pings {
							require.Equal(t, rOK, c.Line(), "conn %d ping %d", i, k)
						}
						rest := scripts[i][i:]
						// The next bytes one at a time, then the rest.
						for j := 0; j < len(rest); {
							m := 1
							if j >= 5 {
								m = len(rest) - j
							}
							c.Send(rest[j : j+m])
							j += m
							time.Sleep(time.Millisecond)
						}
						for k, w := range wants[i] {
							line := c.Line()
							if w == "grant" {
								mustGrant(t, line, rOK, 33)
								continue
							}
							require.Equal(t, w, line, "conn %d (split at %d) script reply %d", i, i, k)
						}
						c.NoReply(20 * time.Millisecond)
					}()
				}
				wg.Wait()
			})
		}
	}
}
