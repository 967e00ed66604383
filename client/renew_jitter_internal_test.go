package client

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestRenewAfterJitter: a renewal comes at RenewRatio of the lease, up to
// RenewJitter of that early, at random; never later. Out-of-range values
// take the default (0.1).
func TestRenewAfterJitter(t *testing.T) {
	const lease = 10 * time.Second
	for _, tc := range []struct {
		ratio, jitter float64
		lo, hi        time.Duration
	}{
		{0.5, 0.5, 2500 * time.Millisecond, 5 * time.Second},
		{0.8, 0.25, 6 * time.Second, 8 * time.Second},
		{0.5, 0, 4500 * time.Millisecond, 5 * time.Second},  // default
		{0.5, -1, 4500 * time.Millisecond, 5 * time.Second}, // default
		{0.5, 1, 4500 * time.Millisecond, 5 * time.Second},  // default
	} {
		sp, err := newSpec("lock", "k", 0, nil, nil, 0, 0, tc.ratio, tc.jitter, nil, "", 0, nil)
		require.NoError(t, err)
		lo, hi := time.Duration(1<<62), time.Duration(0)
		for range 500 {
			d := sp.renewAfter(lease)
			require.GreaterOrEqual(t, d, tc.lo, "%+v", tc)
			require.LessOrEqual(t, d, tc.hi, "%+v", tc)
			lo, hi = min(lo, d), max(hi, d)
		}
		// Spread over most of the window, not one fixed point.
		require.Greater(t, hi-lo, (tc.hi-tc.lo)*8/10, "%+v: %v..%v", tc, lo, hi)
	}
}
