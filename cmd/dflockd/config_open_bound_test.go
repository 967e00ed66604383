package main

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestLeasedRegularFileIsBounded: opening a regular file under another
// holder's write lease blocks until the lease is released or broken
// (/proc/sys/fs/lease-break-time, 45 s by default), as a hung mount would.
// The start-up deadline bounds every open, regular files included (review
// 16: one version opened regular files with no bound).
func TestLeasedRegularFileIsBounded(t *testing.T) {
	p := filepath.Join(t.TempDir(), "tok")
	require.NoError(t, os.WriteFile(p, []byte("tok\n"), 0o600))
	h, err := os.OpenFile(p, os.O_RDWR, 0)
	require.NoError(t, err)
	defer func() { _ = h.Close() }()
	const fSetLease = 1024 // F_SETLEASE (Linux)
	if _, _, e := syscall.Syscall(syscall.SYS_FCNTL, h.Fd(), fSetLease, syscall.F_WRLCK); e != 0 {
		t.Skipf("no write lease on this system: %v", e)
	}
	defer func() { _, _, _ = syscall.Syscall(syscall.SYS_FCNTL, h.Fd(), fSetLease, syscall.F_UNLCK) }()
	ret := make(chan error, 1)
	go func() {
		_, err := readSmallFile(p, time.Now().Add(300*time.Millisecond))
		ret <- err
	}()
	select {
	case err := <-ret:
		require.ErrorContains(t, err, p+": not opened")
	case <-time.After(3 * time.Second):
		t.Fatal("readSmallFile with a 300 ms deadline still blocked in open after 3 s")
	}
}
