package client_test

// The README's Go client example, copied verbatim except
// for the server address (a parameter here) and the work time, run
// against a real in-process server.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/client"
	"github.com/lockreactor/dflockd/reactor/reactortest"
)

var stdoutMu sync.Mutex

// lockedBuffer is a bytes.Buffer safe for concurrent use.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// readmeMain is README.md's "Go client" main, with Servers and the work
// duration as parameters.
func readmeMain(server string, work time.Duration) {
	ctx := context.Background()
	l := &client.Lock{
		Key:            "my-key",
		AcquireTimeout: 10 * time.Second,
		Servers:        []string{server},
		OnRenewError:   func(err error) { log.Print("lost the lock: ", err) },
	}
	ok, err := l.Acquire(ctx)
	if err != nil {
		log.Fatal(err)
	}
	if !ok {
		log.Fatal("timed out: someone else holds my-key")
	}
	defer func() {
		if err := l.Release(ctx); err != nil {
			log.Print(err)
		}
	}()

	fmt.Println("acquired, fence", l.Fence())
	// Do the work. Stop if the lock is lost; pass l.Fence() with every
	// write to storage that can reject stale fences.
	select {
	case <-time.After(work):
		fmt.Println("work done")
	case <-l.Done():
		log.Print("stopping: ", l.Err())
	}
}

// captureOutput runs f with os.Stdout and the log package's output
// captured.
func captureOutput(t *testing.T, f func()) (stdout, logs string) {
	t.Helper()
	stdoutMu.Lock()
	defer stdoutMu.Unlock()
	r, w, err := os.Pipe()
	require.NoError(t, err)
	old := os.Stdout
	os.Stdout = w
	// OnRenewError may log from the client's goroutine while f returns.
	lb := &lockedBuffer{}
	log.SetOutput(lb)
	defer log.SetOutput(os.Stderr)
	var out bytes.Buffer
	done := make(chan struct{})
	go func() { _, _ = io.Copy(&out, r); close(done) }()
	f()
	os.Stdout = old
	_ = w.Close()
	<-done
	return out.String(), lb.String()
}

func TestReadmeExample(t *testing.T) {
	out, logs := captureOutput(t, func() { readmeMain(serverAddr, 300*time.Millisecond) })
	t.Logf("stdout: %q logs: %q", out, logs)
	assert.Regexp(t, `^acquired, fence [1-9][0-9]*\nwork done\n$`, out)
	assert.Empty(t, logs)
}

// TestReadmeExampleServerGone: the server goes away during the
// work: Done fires, Err is ErrLost, and the deferred Release reports it.
func TestReadmeExampleServerGone(t *testing.T) {
	srv := reactortest.Start(t)
	go func() {
		time.Sleep(300 * time.Millisecond)
		srv.Close()
	}()
	start := time.Now()
	out, logs := captureOutput(t, func() { readmeMain(srv.Addr, 20*time.Second) })
	t.Logf("stdout: %q logs: %q after %v", out, logs, time.Since(start))
	assert.Regexp(t, `^acquired, fence [1-9][0-9]*\n$`, out)
	assert.Contains(t, logs, "stopping: ")
	assert.Less(t, time.Since(start), 5*time.Second, "loss not noticed promptly")
}

// TestLockTimeoutFalseNil: AcquireTimeout elapsing is
// (false, nil), as the README's example relies on; a sub-second timeout
// rounds up to 1 s.
func TestLockTimeoutFalseNil(t *testing.T) {
	srv := reactortest.Start(t)
	ctx := context.Background()
	a := heldLock(t, srv, "k")
	defer func() { _ = a.Close() }()
	b := &client.Lock{Key: "k", Servers: []string{srv.Addr}, AcquireTimeout: 200 * time.Millisecond}
	defer func() { _ = b.Close() }()
	start := time.Now()
	ok, err := b.Acquire(ctx)
	el := time.Since(start)
	assert.NoError(t, err)
	assert.False(t, ok)
	assert.GreaterOrEqual(t, el, 900*time.Millisecond, "sub-second timeout should round up to 1 s")
	require.NoError(t, a.Release(ctx))
}

// TestClientDuringDrain: a Lock holder whose server drains can
// still release (the README: release keeps working while draining); a new
// Acquire gets ErrDraining.
func TestClientDuringDrain(t *testing.T) {
	srv := reactortest.Start(t)
	ctx := context.Background()
	a := heldLock(t, srv, "k")
	w := &client.Lock{Key: "k", Servers: []string{srv.Addr}, AcquireTimeout: 20 * time.Second}
	defer func() { _ = w.Close() }()
	got := inBackground(func() (bool, error) { return w.Acquire(ctx) })
	require.Eventually(t, func() bool {
		st, ok := lockStat(srv, "k")
		return ok && st.Waiters == 1
	}, 5*time.Second, 10*time.Millisecond)
	shut := drainInBackground(t, srv, 10*time.Second)
	c := &client.Lock{Key: "other", Servers: []string{srv.Addr}}
	_, err := c.Acquire(ctx) // no new connections while draining
	t.Logf("new Lock during drain: %v", err)
	assert.Error(t, err)
	_ = c.Close()
	require.NoError(t, a.Release(ctx))
	require.NoError(t, <-got, "the parked waiter is granted by the release")
	require.NoError(t, <-shut)
}

// TestTwoPhaseAcrossDrain: the Go client's two-phase flow
// (Enqueue, then Wait) across a drain. B enqueued before the drain may
// still Wait: it finishes a request made before the drain. A's release
// goes to B, B's release to C (parked behind B), and the drain ends then.
func TestTwoPhaseAcrossDrain(t *testing.T) {
	srv := reactortest.Start(t)
	ctx := context.Background()
	a := heldLock(t, srv, "k")
	b := &client.Lock{Key: "k", Servers: []string{srv.Addr}}
	defer func() { _ = b.Close() }()
	st, err := b.Enqueue(ctx)
	require.NoError(t, err)
	t.Logf("B enqueue: %v", st)
	c := &client.Lock{Key: "k", Servers: []string{srv.Addr}, AcquireTimeout: 20 * time.Second}
	defer func() { _ = c.Close() }()
	got := inBackground(func() (bool, error) { return c.Acquire(ctx) })
	require.Eventually(t, func() bool {
		st, ok := lockStat(srv, "k")
		return ok && st.Waiters == 2
	}, 5*time.Second, 10*time.Millisecond)
	start := time.Now()
	shut := drainInBackground(t, srv, 3*time.Second)

	waited := inBackground(func() (bool, error) { return b.Wait(ctx, 5*time.Second) })
	require.NoError(t, a.Release(ctx))
	require.NoError(t, <-waited, "B's Wait during the drain")
	require.NoError(t, b.Release(ctx))
	errC := <-got
	errShut := <-shut
	t.Logf("C acquire: %v; shutdown: %v after %v", errC, errShut, time.Since(start).Round(time.Millisecond))
	assert.NoError(t, errC, "C, parked before the drain, should get the lock A released")
	assert.NoError(t, errShut, "the drain should end once A released")
}

// inBackground runs an acquire-like call on its own goroutine and sends
// its outcome, a timeout as an error.
func inBackground(f func() (bool, error)) <-chan error {
	ch := make(chan error, 1)
	go func() {
		ok, err := f()
		if err == nil && !ok {
			err = errors.New("timeout")
		}
		ch <- err
	}()
	return ch
}

// drainInBackground starts srv.Shutdown, bounded by d, and returns once
// the server drains; Shutdown's result comes on the channel.
func drainInBackground(t *testing.T, srv *reactortest.Server, d time.Duration) <-chan error {
	t.Helper()
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		shut <- srv.Shutdown(ctx)
	}()
	require.Eventually(t, srv.Draining, 5*time.Second, time.Millisecond)
	return shut
}

// heldLock returns a Lock on key that holds it.
func heldLock(t *testing.T, srv *reactortest.Server, key string) *client.Lock {
	t.Helper()
	l := &client.Lock{Key: key, Servers: []string{srv.Addr}}
	ok, err := l.Acquire(context.Background())
	require.NoError(t, err)
	require.True(t, ok)
	return l
}
