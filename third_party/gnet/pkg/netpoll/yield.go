//go:build darwin || dragonfly || freebsd || linux || netbsd || openbsd

// dflockd patch (see ../../PATCHES.md): an event loop about to block in
// epoll_wait/kevent used to call runtime.Gosched every time. Gosched wakes
// an idle P's thread (runtime.wakep) on every call, so each idle transition
// of a loop cost two more context switches on another thread; yielding at
// most once a millisecond keeps the point of it (goroutines queued on the
// loop's P get to run, and sysmon does not preempt a loop that never
// reschedules) without that cost.

package netpoll

import (
	"runtime"
	"time"
)

// yieldInterval is the least time between two yields of one event loop.
const yieldInterval = time.Millisecond

// yielder rate-limits an event loop's yields before it blocks.
type yielder struct {
	last time.Time
}

// maybeYield calls runtime.Gosched if the loop has not yielded for
// yieldInterval.
func (y *yielder) maybeYield() {
	if now := time.Now(); now.Sub(y.last) >= yieldInterval {
		y.last = now
		runtime.Gosched()
	}
}
