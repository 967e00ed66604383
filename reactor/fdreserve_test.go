package reactor_test

import (
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// The connection cap leaves the reserve free plus each event loop's own
// descriptors (epoll + eventfd): with many loops, a cap of limit − 64
// would let accept run into EMFILE below the advertised cap.
func TestConnCapReservesLoopDescriptors(t *testing.T) {
	var rl syscall.Rlimit
	require.NoError(t, syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl))
	if rl.Cur > 1<<30 {
		t.Skipf("open-file limit %d is effectively unlimited: the cap is not derived from it", rl.Cur)
	}
	capFor := func(loops int, tls bool) int64 {
		srv := reactortest.Start(t, func(c *reactortest.Config) {
			c.Server.Loops = loops
			c.Server.FDReserve = 64
			c.SelfSignedTLS = tls
		})
		return srv.ConnCap()
	}
	one, eight := capFor(1, false), capFor(8, false)
	// The soft limit is read at each New; it is the same for both.
	require.Equal(t, int64(14), one-eight, "7 more loops reserve 14 more descriptors")
	require.Equal(t, int64(rl.Cur)-64-2, one)
	// TLS runs no event loops: only the reserve.
	require.Equal(t, int64(rl.Cur)-64, capFor(8, true))
}
