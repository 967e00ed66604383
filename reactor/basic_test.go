package reactor_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/reactor/reactortest"
)

func TestLockReleaseRoundTrip(t *testing.T) {
	t.Parallel()
	srv := reactortest.Start(t)
	c := srv.Dial(t)
	tok := mustGrant(t, c.Do("l", "k", "10"), rOK, 33)
	require.Equal(t, rOK, c.Do("r", "k", tok))
	require.Equal(t, rError, c.Do("r", "k", tok))
}
