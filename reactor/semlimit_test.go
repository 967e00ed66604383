package reactor_test

import (
	"bufio"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// A client picks a semaphore's limit, and one connection can take every
// slot with timeout-0 tries: MaxSemaphoreLimit bounds what one client can
// make the server hold (before it, 150,000 slots of one key were granted
// to one connection).
func TestMaxSemaphoreLimit(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		srv := tr.start(t, func(c *reactortest.Config) { c.Core.MaxSemaphoreLimit = 64 })
		c := srv.Connect(t)
		require.Equal(t, rError, c.Do("sl", "big", "0 65"))
		require.Equal(t, rError, c.Do("se", "big", "9223372036854775807"))
		require.Equal(t, rOK, c.Do("ping", "_", "_"), "the connection stays open")

		const tries = 200
		c.Send(strings.Repeat(req("sl", "big", "0 64 3600"), tries))
		r := bufio.NewReader(c.Conn)
		require.NoError(t, c.SetReadDeadline(time.Now().Add(10*time.Second)))
		granted := 0
		for range tries {
			line, err := r.ReadString('\n')
			require.NoError(t, err)
			if strings.HasPrefix(line, "ok ") {
				granted++
			} else {
				require.Equal(t, rTimeout+"\n", line)
			}
		}
		require.Equal(t, 64, granted, "one connection holds at most the limit's slots")
	})
}
