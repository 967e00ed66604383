package main

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/lockreactor/dflockd/lockcore"
)

// TestFenceCeilingNearMaxUint64: a fence state file "from the far future"
// (a ceiling a few steps below 2^64) is refused at start: served, the
// counter and the persisted ceiling wrapped to small numbers, and fences
// went backwards. The largest ceiling accepted still serves, with fences
// increasing and the persisted ceiling above them.
func TestFenceCeilingNearMaxUint64(t *testing.T) {
	t.Parallel()
	t.Run("refused", func(t *testing.T) {
		t.Parallel()
		path := writeFile(t, "fence", strconv.FormatUint(^uint64(0)-2, 10)+"\n")
		p := startProc(t, procConfig{args: []string{"--port", strconv.Itoa(freePort(t)), "--fence-state-file", path}})
		require.Error(t, p.waitReady(15*time.Second), "served with a fence state file near 2^64")
		require.Equal(t, 2, p.exit)
		require.Contains(t, p.stderr.String(), "dflockd: invalid --fence-state-file:")
		require.Contains(t, p.stderr.String(), "too close to 2^64")
	})
	t.Run("largest accepted", func(t *testing.T) {
		t.Parallel()
		const ceiling = uint64(fenceMax)
		path := writeFile(t, "fence", strconv.FormatUint(ceiling, 10)+"\n")
		srv := startServer(t, procConfig{args: []string{"--fence-state-file", path}})
		c := dialServer(t, srv.addr)
		var fences []uint64
		for range 5 {
			tok := requireGrant(t, c.do("l", "k", "0"), 33)
			fences = append(fences, fenceOf(t, tok))
			require.Equal(t, "ok", c.do("r", "k", tok))
		}
		srv.stop(t)
		persisted := readFenceFile(t, path)
		require.GreaterOrEqual(t, fences[0], ceiling)
		for i := 1; i < len(fences); i++ {
			assert.Greater(t, fences[i], fences[i-1], "fence %d not above fence %d: the counter wrapped", i, i-1)
		}
		assert.Greater(t, persisted, fences[len(fences)-1], "persisted ceiling below the last fence issued")
	})
}

// TestFencePersistFailureLog: a fence state write that keeps failing is
// retried every fencePersistEvery (100 ms) but logged once (then at most
// once per fenceLogEvery), and its recovery is logged. It used to log an
// error on every tick.
func TestFencePersistFailureLog(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "fence")
	require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
	f, err := newFenceState(path, time.Time{})
	require.NoError(t, err)
	table := lockcore.New(lockcore.Config{FenceStart: f.start()})
	// The state directory goes away (unmounted volume, disk error...):
	// every write from now on fails.
	require.NoError(t, os.RemoveAll(filepath.Dir(path)))

	core, logs := observer.New(zapcore.DebugLevel)
	stop := f.persistLoop(table, zap.New(core))
	time.Sleep(time.Second)
	errs := logs.FilterLevelExact(zapcore.ErrorLevel).Len()
	assert.Equal(t, 1, errs, "a persistent write failure is logged on every 100 ms tick")

	// The directory comes back: the write is still due (the ceiling never
	// moved ahead of the fence), and the next tick makes it.
	require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
	require.Eventually(t, func() bool { return logs.FilterMessage("fence state written again").Len() == 1 },
		5*time.Second, 10*time.Millisecond, "recovery not logged")
	stop()
	assert.Greater(t, readFenceFile(t, path), table.Fence())
	assert.Equal(t, 1, logs.FilterLevelExact(zapcore.ErrorLevel).Len())
}

// TestFenceStateFileSymlink: a state file that is a symlink (to a
// persistent volume, say) is updated through the link. The
// temp-file-and-rename write used to replace the link with a regular file,
// leaving the target with a stale ceiling.
func TestFenceStateFileSymlink(t *testing.T) {
	t.Parallel()
	target := writeFile(t, "fence-target", "1\n")
	link := filepath.Join(t.TempDir(), "fence")
	require.NoError(t, os.Symlink(target, link))

	srv := startServer(t, procConfig{args: []string{"--fence-state-file", link}})
	c := dialServer(t, srv.addr)
	fence := fenceOf(t, requireGrant(t, c.do("l", "k", "10"), 33))
	srv.stop(t)

	fi, err := os.Lstat(link)
	require.NoError(t, err)
	assert.Equal(t, os.ModeSymlink, fi.Mode()&os.ModeSymlink, "the symlink was replaced by a %v", fi.Mode())
	assert.Greater(t, readFenceFile(t, target), fence, "the link's target holds a stale ceiling")
}
