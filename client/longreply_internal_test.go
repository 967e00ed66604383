package client

import (
	"bufio"
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestReplyTooLong: a reply past maxReplyLen fails its own call only; the
// stream stays in step and the connection (with whatever it holds) stays.
func TestReplyTooLong(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer func() { _ = ln.Close() }()
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		defer func() { _ = nc.Close() }()
		br := bufio.NewReader(nc)
		for i := 0; ; i++ {
			for range 3 { // one request
				if _, err := br.ReadString('\n'); err != nil {
					return
				}
			}
			reply := "ok\n"
			if i == 0 {
				reply = "ok " + strings.Repeat("x", maxReplyLen+4096) + "\n"
			}
			if _, err := nc.Write([]byte(reply)); err != nil {
				return
			}
		}
	}()
	c, err := Dial(ln.Addr().String())
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
