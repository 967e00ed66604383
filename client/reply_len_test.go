package client

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestReplyLengthBoundaries: stats replies whose line (without the
// newline) is exactly at the buffer size, one past it, and exactly
// maxReplyLen bytes are read whole; maxReplyLen+1 is refused, and in
// every case the next reply is read in step.
func TestReplyLengthBoundaries(t *testing.T) {
	t.Parallel()
	stats := func(n int) string { // a line of n bytes: ok {"x":"xxx"}
		return "ok {\"x\":\"" + strings.Repeat("x", n-len("ok {\"x\":\"\"}")) + "\"}"
	}
	sizes := []int{4095, 4096, 4097, 8192, maxReplyLen, maxReplyLen + 1}
	addr := scriptedServer(t, func(i int, verb string) (string, time.Duration) {
		if verb == "ping" {
			return "ok\n", 0
		}
		return stats(sizes[i/2]) + "\n", 0
	})
	c, err := Dial(addr)
	require.NoError(t, err)
	defer func() { _ = c.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, n := range sizes {
		body, err := c.Stats(ctx)
		if n > maxReplyLen {
			require.ErrorIs(t, err, ErrServer, "size %d", n)
		} else if err != nil {
			t.Errorf("a reply of %d bytes (max %d) refused: %v", n, maxReplyLen, err)
		} else {
			require.Len(t, body, n-len("ok "), "size %d", n)
		}
		require.NoError(t, c.Ping(ctx), "size %d: next reply out of step", n)
	}
	require.NoError(t, c.Err())
}
