package reactor_test

import (
	"bufio"
	"context"
	"encoding/pem"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// TestTLSKeyUpdateAfterIdle: a TLS 1.3 client sends a KeyUpdate asking for
// one back (RFC 8446 4.6.3; openssl s_client's "K" command) more than
// WriteTimeout after the server's last reply. crypto/tls answers it inside
// the reader goroutine's Read, under the write deadline that process left
// on the connection (time of last reply + WriteTimeout, now in the past):
// the answer fails, crypto/tls keeps that error for the next Write, and
// the next reply drops the connection of a client that reads everything.
// With a write timeout longer than the pause (control) all is well.
func TestTLSKeyUpdateAfterIdle(t *testing.T) {
	bin, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("needs the openssl binary: its s_client is the only client here that can send a TLS 1.3 KeyUpdate")
	}
	t.Parallel()
	for _, tc := range []struct {
		name string
		wt   time.Duration
	}{
		{"control write timeout 1m", time.Minute},
		{"write timeout 200ms", 200 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			keyUpdate(t, bin, tc.wt)
		})
	}
}

func keyUpdate(t *testing.T, bin string, wt time.Duration) {
	serverTLS, _ := reactortest.SelfSignedTLS(t)
	srv := reactortest.Start(t, func(c *reactortest.Config) {
		c.Server.TLS = serverTLS
		c.Server.WriteTimeout = wt
		c.Server.ReadTimeout = time.Minute
	})
	ca := filepath.Join(t.TempDir(), "ca.pem")
	leaf := serverTLS.Certificates[0].Leaf.Raw
	require.NoError(t, os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf}), 0o600))

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// No -quiet/-ign_eof: they turn s_client's command letters off.
	cmd := exec.CommandContext(ctx, bin, "s_client", "-connect", srv.Addr, "-tls1_3", "-CAfile", ca)
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = io.Discard
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = stdin.Close(); _ = cmd.Process.Kill(); _ = cmd.Wait() })

	lines := make(chan string, 1000)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	// The replies are the only stdout lines that are exactly "ok"
	// (s_client prints the session details first).
	pingOK := func() bool {
		_, err := io.WriteString(stdin, req("ping", "_", "_"))
		require.NoError(t, err)
		timer := time.NewTimer(5 * time.Second)
		defer timer.Stop()
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					return false
				}
				if l == rOK {
					return true
				}
			case <-timer.C:
				return false
			}
		}
	}

	require.True(t, pingOK(), "first ping not answered")
	// Well past that reply's write deadline: a key update, update requested.
	time.Sleep(500 * time.Millisecond)
	_, err = io.WriteString(stdin, "K\n")
	require.NoError(t, err)
	time.Sleep(300 * time.Millisecond)
	for i := range 3 {
		require.True(t, pingOK(), "ping %d after the client's KeyUpdate not answered (server connections open: %d)", i, srv.Connections())
	}
}
