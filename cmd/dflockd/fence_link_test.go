package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// TestFenceStateDanglingSymlink: a state file that does not exist yet
// starts afresh (first run), also when the configured path is a symlink to
// a file not created yet (a link provisioned ahead of the first run onto a
// persistent volume): the first write creates the target.
func TestFenceStateDanglingSymlink(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "volume", "fence")
	require.NoError(t, os.MkdirAll(filepath.Dir(target), 0o755))
	link := filepath.Join(dir, "fence")
	require.NoError(t, os.Symlink(target, link))

	f, err := newFenceState(link, time.Time{})
	require.NoError(t, err, "a fence state symlink whose target does not exist yet is refused")
	fi, err := os.Lstat(link)
	require.NoError(t, err)
	require.Equal(t, os.ModeSymlink, fi.Mode()&os.ModeSymlink, "the link was replaced")
	require.Greater(t, readFenceFile(t, target), uint64(0))
	_ = f
}

// TestFencePersistFailureCountAfterRecovery: the first failure after a
// recovery reports no earlier failures (the count used to carry over).
func TestFencePersistFailureCountAfterRecovery(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	f, err := newFenceState(filepath.Join(dir, "fence"), time.Time{})
	require.NoError(t, err)
	core, logs := observer.New(zapcore.DebugLevel)
	log := zap.New(core)

	require.NoError(t, os.RemoveAll(dir))
	for range 3 { // logged, then counted twice
		f.persist(f.ceiling+1, log)
	}
	require.NoError(t, os.MkdirAll(dir, 0o755))
	f.persist(f.ceiling+1, log) // "written again", failures_since_last_log 2
	require.NoError(t, os.RemoveAll(dir))
	f.persist(f.ceiling+1, log) // a new episode's first failure

	errs := logs.FilterLevelExact(zapcore.ErrorLevel).All()
	require.Len(t, errs, 2)
	got := errs[1].ContextMap()["failures_since_last_log"]
	require.EqualValues(t, 0, got, "first failure after a recovery reports %v earlier failures", got)
}
