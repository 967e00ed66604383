package main

import (
	"fmt"
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
)

// fenceState seeds the fence counter above anything a previous run issued:
// above the wall clock in nanoseconds (a run cannot grant faster than one
// lock a nanosecond), and above the ceiling persisted in the optional state
// file (which keeps fences monotonic even if the clock steps back).
type fenceState struct {
	path    string
	ceiling uint64
}

func newFenceState(path string) (*fenceState, error) {
	f := &fenceState{path: path}
	if path == "" {
		return f, nil
	}
	b, err := os.ReadFile(path)
	switch {
	case os.IsNotExist(err):
	case err != nil:
		return nil, err
	default:
		v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s: not a fence number: %v", path, err)
		}
		f.ceiling = v
	}
	// Prove the file is writable before serving.
	return f, f.write(max(f.ceiling, f.start()))
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
	f.ceiling = ceiling
	return nil
}

// persistLoop keeps the persisted ceiling ahead of the table's fence until
// the returned stop function is called (which persists a final ceiling).
func (f *fenceState) persistLoop(t *lockcore.Table, log *zap.Logger) (stop func()) {
	if f.path == "" {
		return func() {}
	}
	// The first ceiling must be above the seed itself.
	if err := f.write(t.Fence() + fenceMargin); err != nil {
		log.Error("fence state", zap.Error(err))
	}
	// keepAhead moves the ceiling when the fence has used up half the
	// margin. Only the loop goroutine (and stop, after it) calls it.
	keepAhead := func() {
		if cur := t.Fence(); cur+fenceMargin/2 > f.ceiling {
			if err := f.write(cur + fenceMargin); err != nil {
				log.Error("fence state", zap.Error(err))
			}
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
