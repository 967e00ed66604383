package main

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestLogReaderGoneKeepsServing: when whatever reads the server's stderr
// goes away (a log pipe's reader dies, `dflockd | tee` whose tee is
// killed), a log line must not kill the lock server: Go exits a program
// with SIGPIPE on a write to a broken pipe on fd 1 or 2 unless the signal
// is ignored or notified, and the locks would go with it. Here the reader
// closes after the start-up line, a connection over --max-connections
// makes the server log a refusal, and the server must still answer.
func TestLogReaderGoneKeepsServing(t *testing.T) {
	r, w, err := os.Pipe()
	require.NoError(t, err)
	port := strconv.Itoa(freePort(t))
	cmd := exec.Command(serverBinary(t), "--port", port, "--max-connections", "1")
	cmd.Env = append(cleanEnv(), "GORACE=atexit_sleep_ms=0")
	cmd.Stdout, cmd.Stderr = w, w
	require.NoError(t, cmd.Start())
	_ = w.Close()
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
	})
	br := bufio.NewReader(r)
	_ = r.SetReadDeadline(time.Now().Add(15 * time.Second))
	for {
		line, err := br.ReadString('\n')
		require.NoError(t, err, "no start-up line")
		if strings.Contains(line, "dflockd listening") {
			break
		}
	}
	require.NoError(t, r.Close()) // the log reader is gone
	addr := net.JoinHostPort("127.0.0.1", port)

	first, err := net.DialTimeout("tcp", addr, time.Second)
	require.NoError(t, err)
	defer func() { _ = first.Close() }()
	fr := bufio.NewReader(first)
	_ = first.SetDeadline(time.Now().Add(5 * time.Second))
	_, err = first.Write([]byte("ping\n_\n_\n"))
	require.NoError(t, err)
	line, err := fr.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "ok\n", line)
	// Over the cap: refused and logged (to the broken pipe).
	for range 3 {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			_ = c.SetDeadline(time.Now().Add(time.Second))
			_, _ = c.Read(make([]byte, 64))
			_ = c.Close()
		}
	}
	time.Sleep(300 * time.Millisecond)
	select {
	case <-done:
		t.Fatalf("the server exited (%v) once its log reader was gone", cmd.ProcessState)
	default:
	}
	_, err = first.Write([]byte("ping\n_\n_\n"))
	require.NoError(t, err)
	line, err = fr.ReadString('\n')
	require.NoError(t, err, "the server stopped answering once its log reader was gone")
	require.Equal(t, "ok\n", line)
}
