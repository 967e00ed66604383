package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestBadFilesExit: odd files exit 2 with one line naming the flag.
func TestBadFilesExit(t *testing.T) {
	t.Parallel()
	cert1, _, _ := selfSignedCert(t)
	_, key2, _ := selfSignedCert(t)
	empty := writeFile(t, "fence-empty", "")
	neg := writeFile(t, "fence-neg", "-5\n")
	over := writeFile(t, "fence-over", "18446744073709551616\n")
	emptyTok := writeFile(t, "tok", "\n\n")
	// A FIFO nobody writes to hung the start before any output (review 13).
	fifo := func(name string) string {
		p := filepath.Join(t.TempDir(), name)
		require.NoError(t, syscall.Mkfifo(p, 0o600))
		return p
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"cert does not match key", []string{"--tls-cert", cert1, "--tls-key", key2}, "--tls-cert"},
		{"key is the cert", []string{"--tls-cert", cert1, "--tls-key", cert1}, "--tls-cert"},
		{"fence file empty", []string{"--fence-state-file", empty}, "--fence-state-file"},
		{"fence file negative", []string{"--fence-state-file", neg}, "--fence-state-file"},
		{"fence file over 2^64", []string{"--fence-state-file", over}, "--fence-state-file"},
		{"token file blank", []string{"--auth-token-file", emptyTok}, "--auth-token-file"},
		{"token file is dir", []string{"--auth-token-file", t.TempDir()}, "--auth-token-file"},
		{"cert is dir", []string{"--tls-cert", t.TempDir(), "--tls-key", key2}, "--tls-cert"},
		{"token file is endless", []string{"--auth-token-file", "/dev/zero"}, "--auth-token-file: /dev/zero: larger than 64 KiB"},
		{"fence file is endless", []string{"--fence-state-file", "/dev/zero"}, "--fence-state-file: /dev/zero: larger than 64 KiB"},
		{"cert is endless", []string{"--tls-cert", "/dev/zero", "--tls-key", key2}, "--tls-cert/--tls-key: /dev/zero: larger than 1024 KiB"},
		{"token file is a FIFO", []string{"--auth-token-file", fifo("tok")}, "--auth-token-file"},
		{"fence file is a FIFO", []string{"--fence-state-file", fifo("fence")}, "--fence-state-file"},
		{"cert and key are FIFOs", []string{"--tls-cert", fifo("cert"), "--tls-key", fifo("key")}, "--tls-cert"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := startProc(t, procConfig{args: append([]string{"--port", strconv.Itoa(freePort(t))}, tt.args...)})
			assert.Equal(t, 2, p.waitExit(t, 10*time.Second))
			stderr := p.stderr.String()
			require.True(t, strings.HasSuffix(stderr, "\n"), "%q", stderr)
			assert.NotContains(t, strings.TrimSuffix(stderr, "\n"), "\n", "one line: %q", stderr)
			assert.Contains(t, stderr, tt.want)
		})
	}
}

// TestConfigFileFromPipe: a file that is a pipe is read (a process
// substitution such as --auth-token-file <(pass show dflockd), a FIFO
// whose writer comes a little later), but the files must all be there
// within pipeWait of the start: a stalled writer or a FIFO nobody opens is
// refused rather than waited on for ever (review 13), and a late FIFO
// writer is waited for, as before (review 14 found the first fix refused
// it at once).
func TestConfigFileFromPipe(t *testing.T) {
	if _, err := os.Stat("/proc/self/fd"); err != nil {
		t.Skip("names a pipe by /proc/self/fd (Linux)")
	}
	defer func(w time.Duration) { pipeWait = w }(pipeWait)
	pipeWait = time.Second
	fdPath := func(f *os.File) string { return "/proc/self/fd/" + strconv.Itoa(int(f.Fd())) }

	r, w, err := os.Pipe()
	require.NoError(t, err)
	defer func() { _ = r.Close() }()
	_, err = w.WriteString("s3cret\n")
	require.NoError(t, err)
	require.NoError(t, w.Close())
	b, err := readSmallFile(fdPath(r), time.Time{})
	require.NoError(t, err)
	assert.Equal(t, "s3cret\n", string(b))

	r2, w2, err := os.Pipe()
	require.NoError(t, err)
	defer func() { _ = r2.Close(); _ = w2.Close() }()
	_, err = w2.WriteString("s3c") // the writer stalls, its end open
	require.NoError(t, err)
	start := time.Now()
	_, err = readSmallFile(fdPath(r2), time.Time{})
	require.EqualError(t, err, fdPath(r2)+": still being written 1s after the start")
	assert.Less(t, time.Since(start), 3*time.Second)

	fifo := filepath.Join(t.TempDir(), "fifo")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))
	go func() {
		time.Sleep(100 * time.Millisecond)
		if f, err := os.OpenFile(fifo, os.O_WRONLY, 0); err == nil {
			_, _ = f.WriteString("late\n")
			_ = f.Close()
		}
	}()
	b, err = readSmallFile(fifo, time.Time{})
	require.NoError(t, err, "a FIFO's writer 100 ms late")
	assert.Equal(t, "late\n", string(b))

	// Nobody writes: refused at the deadline. The deadline is shared: a
	// second file read after it fails at once.
	by := time.Now().Add(pipeWait)
	start = time.Now()
	_, err = readSmallFile(fifo, by)
	require.EqualError(t, err, fifo+": not opened 1s after the start (a FIFO without a writer?)")
	assert.Less(t, time.Since(start), 3*time.Second)
	start = time.Now()
	_, err = readSmallFile(fifo, by)
	require.EqualError(t, err, fifo+": not opened 1s after the start (a FIFO without a writer?)")
	assert.Less(t, time.Since(start), 700*time.Millisecond, "the deadline had passed: only pipeGrace (100 ms, 200 ms to give up)")
	// A regular file or a missing one is not held to the deadline (review
	// 15: both failed "no writer" once it had passed).
	b, err = readSmallFile(writeFile(t, "regular", "tok\n"), time.Now().Add(-time.Second))
	require.NoError(t, err)
	assert.Equal(t, "tok\n", string(b))
	_, err = readSmallFile(filepath.Join(t.TempDir(), "missing"), time.Now().Add(-time.Second))
	require.True(t, os.IsNotExist(err), "%v", err)
	// A pipe whose content is all there is read, within pipeGrace.
	r3, w3, err := os.Pipe()
	require.NoError(t, err)
	defer func() { _ = r3.Close() }()
	_, err = w3.WriteString("there\n")
	require.NoError(t, err)
	require.NoError(t, w3.Close())
	b, err = readSmallFile(fdPath(r3), time.Now().Add(-time.Second))
	require.NoError(t, err)
	assert.Equal(t, "there\n", string(b))
	// The opens left waiting end when a writer comes, and close. (Without
	// a reader waiting, this open would fail with ENXIO.)
	f, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0)
	require.NoError(t, err)
	_ = f.Close()
}
