//go:build linux

package reactor_test

import (
	"bufio"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// TestReadTimeoutWhileRepliesDrain: the read timeout is for a
// client that does not send its next line. A client that has sent all its
// requests (pipelined) and is reading the replies steadily, only slower than
// the server produces them, must not be timed out: its lines arrived long
// ago and it is the server that stopped decoding them (outbound above the
// high-water mark).
func TestReadTimeoutWhileRepliesDrain(t *testing.T) {
	const rt = 500 * time.Millisecond
	srv := reactortest.Start(t, func(c *reactortest.Config) {
		c.Server.Loops = 1
		c.Server.ReadTimeout = rt
		c.Server.WriteTimeout = 30 * time.Second
	})
	h := srv.Dial(t)
	holdKeys(t, h, 150) // stats replies of ~20 KB

	w := dialSmallBuffers(t, srv, 2)

	const n = 12 // ~240 KB of replies
	_, err := w.Write([]byte(strings.Repeat(req("stats", "_", "_"), n) + req("ping", "_", "_")))
	require.NoError(t, err)
	// Read steadily at ~160 KB/s: about 1.5 s for everything.
	r := bufio.NewReaderSize(w, 4096)
	buf := make([]byte, 4096)
	var got []byte
	start := time.Now()
	for {
		require.NoError(t, w.SetReadDeadline(time.Now().Add(10*time.Second)))
		k, err := r.Read(buf)
		got = append(got, buf[:k]...)
		if err != nil || strings.HasSuffix(string(got), "\n"+rOK+"\n") {
			break
		}
		time.Sleep(25 * time.Millisecond)
	}
	lines := strings.Split(strings.TrimSuffix(string(got), "\n"), "\n")
	last := lines[len(lines)-1]
	t.Logf("after %v: %d bytes, %d lines, last %.40q", time.Since(start), len(got), len(lines), last)
	require.True(t, last == rOK && len(lines) == n+1,
		"a client reading its pipelined replies was cut off (read timeout %v): %d of %d replies, last %.40q", rt, len(lines), n+1, last)
}
