package reactor_test

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// TestStatsRefusedBeforeRender: once unread stats replies of other
// clients have nearly spent the large-reply budget, a stats request is
// refused ("error") without being rendered. Before, each was rendered in
// full (~6 ms for 1,024 keys, far more under -race) and only then
// refused; a refusal answers 6 bytes, so the decode loop went on to the
// next, and one pipelined write of a few hundred 10-byte stats requests
// held the event loop, and every connection on it, for seconds. The
// bound is calibrated by the time of one refusal measured in this run.
func TestStatsRefusedBeforeRender(t *testing.T) {
	srv := reactortest.Start(t, func(c *reactortest.Config) {
		c.Server.Loops = 1                       // attacker and victim share the loop
		c.Server.WriteTimeout = 60 * time.Second // the stuck readers keep their shares
	})
	holder := srv.Connect(t)
	holdNamed(t, holder, 1024, escapedKey)
	reader := srv.Connect(t)
	line := reader.Do("stats", "_", "_")
	require.Greater(t, len(line), 1<<20)

	// Spend the budget with clients that do not read their stats replies.
	start := time.Now()
	stuck := spendStatsBudget(t, srv, reader)
	t.Logf("budget spent by %d unread replies in %v", stuck, time.Since(start).Round(time.Millisecond))

	// How long one refused stats takes the loop (the mean of three).
	start = time.Now()
	for range 3 {
		require.Equal(t, rError, reader.Do("stats", "_", "_"))
	}
	one := time.Since(start) / 3
	// The attacker: about 1.5 s worth of pipelined stats requests (10
	// bytes each), replies read.
	n := min(max(int(1500*time.Millisecond/one), 50), 2000)
	t.Logf("one refused stats: %v; sending %d", one.Round(time.Microsecond), n)
	atk, err := net.DialTimeout("tcp", srv.Addr, 5*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { _ = atk.Close() })
	done := make(chan time.Duration, 1)
	go func() {
		s := time.Now()
		br := bufio.NewReader(atk)
		_ = atk.SetReadDeadline(time.Now().Add(120 * time.Second))
		for range n {
			if _, err := br.ReadString('\n'); err != nil {
				break
			}
		}
		done <- time.Since(s)
	}()
	_, err = atk.Write([]byte(strings.Repeat(req("stats", "_", "_"), n)))
	require.NoError(t, err)
	time.Sleep(50 * time.Millisecond) // the loop is busy with them now

	// A victim on the same loop: one ping.
	start = time.Now()
	holder.Request("ping", "_", "_")
	line, err = holder.ReadLine(30 * time.Second)
	pingTook := time.Since(start)
	require.NoError(t, err)
	require.Equal(t, rOK, line)
	t.Logf("victim's ping answered after %v; attacker's %d refused stats took %v", pingTook.Round(time.Millisecond), n, (<-done).Round(time.Millisecond))
	// A fair share would be a few renders; the loop rendered all n.
	require.Less(t, pingTook, 10*one+100*time.Millisecond,
		"one client's %d pipelined stats requests (all refused at the budget) held the event loop for %v (one refusal: %v)", n, pingTook, one)
}
