package reactor_test

import (
	"regexp"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/reactor/reactortest"
)

var grantRe = regexp.MustCompile(`^ok [0-9a-f]{32} 33$`)

func TestLockReleaseRoundTrip(t *testing.T) {
	srv := reactortest.Start(t)
	c := srv.Dial(t)
	reply := c.Do("l", "k", "10")
	require.Regexp(t, grantRe, reply)
	require.Equal(t, "ok", c.Do("r", "k", reply[3:35]))
	require.Equal(t, "error", c.Do("r", "k", reply[3:35]))
}
