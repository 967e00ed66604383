package client

import (
	"context"
	"sync"
	"testing"
	"time"
)

// TestAbortReleaseSkipsAnsweredAbortAfterSlowOp: Release documents
// that it waits at most 0.5 s for the server's answer to an abort's
// half-close, and then for the release of a grant that turned up "like
// any release". With two operations in flight (an earlier abort or
// release still going, then the abort this Release starts), the single
// abortDeadline is consumed while Release waits for the first one's
// op.done. When it then reaches the second abort, whose server answered
// within 100 ms, the timer has already fired and select picks between a
// closed op.answered and a fired timer at random: half the time Release
// returns nil while the late grant's release is still under way (and a
// Close right after cuts it: with auto-release off the lock is held by
// nobody for its lease — the bug 5a14de8 set out to fix).
func TestAbortReleaseSkipsAnsweredAbortAfterSlowOp(t *testing.T) {
	const runs = 12
	var wg sync.WaitGroup
	early := make(chan time.Duration, runs)
	for i := 0; i < runs; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := &holder{}
			// op1: an earlier abort whose late grant's release (fresh
			// connection over a slow link) takes 0.7 s.
			op1 := &releaseOp{hd: &hold{}, answered: make(chan struct{}), done: make(chan struct{})}
			close(op1.answered)
			// op2: the abort of the hold this Release ends: the server
			// answers the half-close after 100 ms (well within abortWait),
			// the late grant's release then takes until 1.5 s.
			op2 := &releaseOp{hd: &hold{}, answered: make(chan struct{}), done: make(chan struct{})}
			h.releasing = []*releaseOp{op1, op2}
			start := time.Now()
			go func() {
				time.Sleep(100 * time.Millisecond)
				close(op2.answered)
				time.Sleep(600 * time.Millisecond)
				close(op1.done)
				time.Sleep(800 * time.Millisecond)
				close(op2.done)
			}()
			_ = h.release(context.Background())
			took := time.Since(start)
			select {
			case <-op2.done:
			default:
				early <- took
			}
		}()
	}
	wg.Wait()
	close(early)
	n := 0
	for took := range early {
		n++
		t.Logf("Release returned after %v with the answered abort's late release still in flight", took.Round(time.Millisecond))
	}
	if n > 0 {
		t.Fatalf("%d of %d Releases returned before the release of a grant whose abort the server answered within 100 ms (abortWait 500 ms): the shared abortDeadline was spent waiting for an earlier op's done", n, runs)
	}
}
