package client

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestReplyTooLong: a reply past maxReplyLen fails its own call only; the
// stream stays in step and the connection (with whatever it holds) stays.
func TestReplyTooLong(t *testing.T) {
	t.Parallel()
	addr := scriptedServer(t, func(i int, _ string) (string, time.Duration) {
		if i == 0 {
			return "ok " + strings.Repeat("x", maxReplyLen+4096) + "\n", 0
		}
		return "ok\n", 0
	})
	c, err := Dial(addr)
	require.NoError(t, err)
	defer func() { _ = c.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = c.Stats(ctx)
	require.ErrorIs(t, err, ErrServer)
	require.ErrorContains(t, err, "reply longer than")
	require.NoError(t, c.Err(), "the connection stays")
	require.NoError(t, c.Ping(ctx), "and the next reply is read in step")
}
