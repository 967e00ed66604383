package main

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/lockreactor/dflockd/lockcore"
)

// fenceMargin is how far ahead of the last fence issued the persisted
// ceiling is kept. The persister checks every fencePersistEvery, so fences
// stay monotonic across restarts unless the server grants more than
// fenceMargin/2 locks within one check interval (160 M grants/s).
const (
	fenceMargin       = 1 << 25
	fencePersistEvery = 100 * time.Millisecond
	// fenceMax is the largest ceiling a state file may hold: the counter
	// and the ceilings kept ahead of it must not wrap past 2^64 (that
	// leaves 2^64 - 2^40 fences, centuries of grants).
	fenceMax = math.MaxUint64 - 1<<40
	// fenceLogEvery spaces out the log lines of a state file write that
	// keeps failing (it is retried every fencePersistEvery).
	fenceLogEvery = time.Minute
)

// fenceState seeds the fence counter above anything a previous run issued:
// above the wall clock in nanoseconds (a run cannot grant faster than one
// lock a nanosecond), and above the ceiling persisted in the optional state
// file (which keeps fences monotonic even if the clock steps back).
type fenceState struct {
	path    string
	ceiling uint64

	// Write failures (persistLoop's goroutine, then stop, only).
	failing  bool
	failedAt time.Time // when the last failure was logged
	failures int       // since then
}

// newFenceState reads the ceiling persisted at path, if any, by the time
// by (see readBounded).
func newFenceState(path string, by time.Time) (*fenceState, error) {
	f := &fenceState{path: path}
	if path == "" {
		return f, nil
	}
	// Write through a symbolic link: the rename below would replace the
	// link itself with a file, and leave its target stale. The target may
	// not exist yet (a link made ahead of the first run).
	real, err := resolveLinks(path)
	if err != nil {
		return nil, err
	}
	f.path = real
	b, err := readSmallFile(f.path, by)
	switch {
	case os.IsNotExist(err):
	case err != nil:
		return nil, err
	default:
		v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s: not a fence number: %v", path, err)
		}
		if v > fenceMax {
			return nil, fmt.Errorf("%s: fence %d is too close to 2^64 (at most %d)", path, v, uint64(fenceMax))
		}
		f.ceiling = v
	}
	// Prove the file is writable before serving.
	return f, f.write(max(f.ceiling, f.start()))
}

// resolveLinks follows path's symbolic links, if any, to the file they
// name, which need not exist.
func resolveLinks(path string) (string, error) {
	for range 40 { // as the kernel's limit on nested links
		fi, err := os.Lstat(path)
		if err != nil || fi.Mode()&os.ModeSymlink == 0 {
			return path, nil // not a link (or missing: a first run)
		}
		target, err := os.Readlink(path)
		if err != nil {
			return "", err
		}
		if !filepath.IsAbs(target) {
			target = filepath.Join(filepath.Dir(path), target)
		}
		path = target
	}
	return "", fmt.Errorf("%s: too many levels of symbolic links", path)
}

func (f *fenceState) start() uint64 {
	return max(uint64(time.Now().UnixNano()), f.ceiling)
}

// write persists a new ceiling atomically (temp file, fsync, rename).
func (f *fenceState) write(ceiling uint64) error {
	tmp, err := os.CreateTemp(filepath.Dir(f.path), ".fence-*")
	if err != nil {
		return err
	}
	_, err = tmp.WriteString(strconv.FormatUint(ceiling, 10) + "\n")
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), f.path)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
		return err
	}
	// Make the rename itself durable (best effort: not every file system
	// can sync a directory).
	if d, err := os.Open(filepath.Dir(f.path)); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	f.ceiling = ceiling
	return nil
}

// persist writes a new ceiling and logs a failure: the first at once, then
// at most once per fenceLogEvery while writes keep failing, and the
// recovery.
func (f *fenceState) persist(ceiling uint64, log *zap.Logger) {
	err := f.write(ceiling)
	now := time.Now()
	switch {
	case err == nil && f.failing:
		f.failing = false
		defer func() { f.failures = 0 }()
		log.Info("fence state written again", zap.String("path", f.path), zap.Int("failures_since_last_log", f.failures))
	case err != nil && (!f.failing || now.Sub(f.failedAt) >= fenceLogEvery):
		log.Error("fence state: cannot persist the fence ceiling; fences may repeat after a restart if the clock steps back",
			zap.String("path", f.path), zap.Error(err), zap.Int("failures_since_last_log", f.failures))
		f.failing, f.failedAt, f.failures = true, now, 0
	case err != nil:
		f.failures++
	}
}

// persistLoop keeps the persisted ceiling ahead of the table's fence until
// the returned stop function is called (which persists a final ceiling).
func (f *fenceState) persistLoop(t *lockcore.Table, log *zap.Logger) (stop func()) {
	if f.path == "" {
		return func() {}
	}
	// The first ceiling must be above the seed itself.
	f.persist(t.Fence()+fenceMargin, log)
	// keepAhead moves the ceiling when the fence has used up half the
	// margin. Only the loop goroutine (and stop, after it) calls it.
	keepAhead := func() {
		if cur := t.Fence(); cur+fenceMargin/2 > f.ceiling {
			f.persist(cur+fenceMargin, log)
		}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(fencePersistEvery)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			keepAhead()
		}
	}()
	return func() {
		close(done)
		wg.Wait()
		keepAhead()
	}
}
