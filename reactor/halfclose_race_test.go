package reactor_test

import (
	"bufio"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// TestHalfCloseRacingGrantTwoPhaseAndSem: as
// TestHalfCloseRacingGrantIsAnswered, for a parked w (after e queued) and
// a parked sl, with auto-release off: whether the grant or the half-close
// wins, nobody holds the key afterwards once the told grant is released.
func TestHalfCloseRacingGrantTwoPhaseAndSem(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		srv := tr.start(t, func(c *reactortest.Config) { c.NoAutoRelease = true })
		h := srv.Connect(t)
		deadline := time.Now().Add(5 * time.Second)
		granted, rounds := 0, 0
		for i := 0; i < 150 && time.Now().Before(deadline); i++ {
			rounds++
			sem := i%2 == 1
			key := "r3-race-" + strconv.Itoa(i)
			var tok string
			if sem {
				tok = mustGrant(t, h.Do("sl", key, "0 1"), rOK, 33)
			} else {
				tok = lock(t, h, key)
			}
			c := dialRaw(t, tr, srv)
			br := bufio.NewReader(c)
			if sem {
				_, err := c.Write([]byte(req("sl", key, "10 1")))
				require.NoError(t, err)
				waitSemWaiters(t, h, key, 1)
			} else {
				_, err := c.Write([]byte(req("e", key, "")))
				require.NoError(t, err)
				line, err := br.ReadString('\n')
				require.NoError(t, err)
				require.Equal(t, rQueued+"\n", line)
				_, err = c.Write([]byte(req("w", key, "10")))
				require.NoError(t, err)
				time.Sleep(2 * time.Millisecond) // w parked (no stats for it)
			}
			done := make(chan struct{})
			go func() {
				defer close(done)
				time.Sleep(time.Duration(i%5) * 20 * time.Microsecond)
				halfClose(t, c)
			}()
			rel := "r"
			if sem {
				rel = "sr"
			}
			require.Equal(t, rOK, h.Do(rel, key, tok))
			<-done
			require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
			var replies []string
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					break
				}
				replies = append(replies, strings.TrimSuffix(line, "\n"))
			}
			_ = c.Close()
			if len(replies) == 1 {
				f := strings.Fields(replies[0])
				require.Len(t, f, 3, "round %d: %q", i, replies[0])
				require.Equal(t, rOK, h.Do(rel, key, f[1]), "round %d: the told grant releases", i)
				granted++
			} else {
				require.Empty(t, replies, "round %d", i)
			}
			if sem {
				tok2 := mustGrant(t, h.Do("sl", key, "0 1"), rOK, 33)
				require.Equal(t, rOK, h.Do("sr", key, tok2), "round %d", i)
			} else {
				require.Equal(t, rOK, h.Do("r", key, lock(t, h, key)), "round %d", i)
			}
		}
		t.Logf("%d rounds, %d granted before the half-close took effect", rounds, granted)
	})
}
