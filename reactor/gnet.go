package reactor

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

	"github.com/lockreactor/dflockd/lockcore/wheel"
)

// gnetHandler adapts gnet callbacks to sessions. Every callback runs on the
// connection's event loop.
type gnetHandler struct {
	gnet.BuiltinEventEngine
	srv *Server
}

// gconn is a session served by a gnet event loop.
type gconn struct {
	session
	c     gnet.Conn
	loop  *loopTimers
	timer wheel.Timer

	// Write-stall tracking: written counts bytes handed to c.Write; while
	// replies are pending, drainMark is how many had drained at the last
	// sign of progress, at stallSince. Both count modulo 2^32: only
	// whether drained moved matters, and 4 GiB never drain between two
	// checks.
	stallSince int64
	written    uint32
	drainMark  uint32
	// owedMark is the written count at which the replies of parked
	// requests (session.owed) are out of gnet's buffer: until then a
	// drain waits for them.
	owedMark uint32
	// direct is the direct-delivery state (directOff, directArmed,
	// directBusy, directWanted, directClosing): see tryDirect.
	direct atomic.Uint32
	// stalled (replies pending in gnet's buffer) is in session, where it
	// fits in padding: gconn stays in the 256-byte size class.
}

// Direct delivery. A parked request is often completed on another event
// loop: a release served there grants it. Handing the result to the
// connection's own loop costs that loop a wake-up (an eventfd write, a
// context switch, an epoll round) per result, and in a contended hand-off
// chain it is most of the work. So while a
// connection is parked with nothing buffered in either direction, its loop
// arms it, and the goroutine that completes the request writes the reply
// to the socket itself (tryDirect): there is nothing before the reply to
// keep order with, and nothing after it until the client reads it.
//
// The loop claims the connection back (claim) before it touches the
// session or gnet's buffers in a callback or a timer. If a completer is in
// the middle of its write, the loop does not wait for it (the writer may
// have been preempted by the very client it woke): it leaves the
// connection alone, and the completer, when done, asks the loop to serve
// it (directWanted). Only OnClose waits (directClosing: the completer then
// wakes nobody). The descriptor stays valid while armed or busy: gnet
// closes it only after OnClose, which claims first and never re-arms.
const (
	directOff     uint32 = iota // the loop alone touches the connection
	directArmed                 // parked, nothing buffered: a completer may write
	directBusy                  // a completer is writing the result
	directWanted                // busy, and the loop has work for the connection
	directClosing               // busy, and the loop is closing the connection
)

// claim takes the connection back for its loop (see Direct delivery). It
// reports false when a completer is writing; the loop must then leave the
// connection alone, and the completer wakes it when done.
func (g *gconn) claim() bool {
	for {
		switch g.direct.Load() {
		case directOff:
			return true
		case directArmed:
			if g.direct.CompareAndSwap(directArmed, directOff) {
				return true
			}
		case directBusy:
			if g.direct.CompareAndSwap(directBusy, directWanted) {
				return false
			}
		default: // directWanted, directClosing
			return false
		}
	}
}

// claimWait is claim for OnClose, which cannot come back later: it waits
// out a completer's write, and tells it not to wake the loop for a
// connection that is going away.
func (g *gconn) claimWait() {
	for {
		switch st := g.direct.Load(); st {
		case directOff:
			return
		case directArmed:
			if g.direct.CompareAndSwap(directArmed, directOff) {
				return
			}
		case directBusy, directWanted:
			g.direct.CompareAndSwap(st, directClosing)
		default: // directClosing: the completer is finishing its write
			runtime.Gosched()
		}
	}
}

// armDirect lets a completer write the parked result itself when nothing
// is buffered either way. On the loop, at the end of a callback or timer.
//
// Not after a half-close: the loop must see the result to close once it
// is written (dropAtHalfClose).
func (g *gconn) armDirect() {
	if g.parked && !g.closing && !g.peerEOF && !g.resolved.Load() && len(g.out) == 0 && !g.closed.Load() &&
		g.c.OutboundBuffered() == 0 && g.c.InboundBuffered() == 0 {
		g.direct.Store(directArmed)
	}
}

// tryDirect writes g's parked result to its socket from the completing
// goroutine, if g's loop armed it. It reports whether the loop needs no
// wake-up: false when the connection was not armed, or the socket took
// nothing (the loop then writes the result, or finds the connection
// broken and closes it).
//
// Results of the lock table's timer (timeouts, grants after a lease ran
// out) always go to the loops: one goroutine fires every timer, and
// writing 10,000 simultaneous timeouts one by one there doubled their p99
// lateness (11 → 22 ms in make bench-compare) where the loops write them
// in parallel.
func (g *gconn) tryDirect() bool {
	if !g.direct.CompareAndSwap(directArmed, directBusy) {
		return false
	}
	done := g.deliverDirect(unix.Write)
	switch g.direct.Swap(directOff) {
	case directWanted:
		return false // the loop has input for it meanwhile
	case directClosing:
		return true // the loop is closing it: nothing left to serve
	}
	return done
}

// deliverDirect writes the result with write (unix.Write; tests pass a
// short writer) and reports whether the request is fully answered.
func (g *gconn) deliverDirect(write func(fd int, p []byte) (int, error)) bool {
	srv := g.srv
	// g.result only after resolved: a completer late to get here may find
	// the loop has since served that result and parked another request,
	// whose completer writes g.result before it sets resolved.
	if !g.resolved.Load() || g.closed.Load() || g.result.Timer {
		return false
	}
	select {
	case <-srv.stopCh:
		return false // closing: traffic drops the grant and closes
	default:
	}
	var buf [128]byte
	b := appendResult(buf[:0], g.result)
	start := srv.table.Now()
	n, _ := write(g.c.Fd(), b)
	if n <= 0 {
		return false // nothing written: the loop does it, or closes
	}
	// The reply is (at least partly) on the wire: the request is answered.
	g.resolved.Store(false)
	g.parked = false
	g.lastProgress = start
	g.lines = 0
	if g.mt != nil {
		cmd := min(int(g.parkedCmd), NumCommands-1)
		g.mt.sink.wait[cmd].observe(&WaitBounds, time.Duration(start-g.parkedAt), 1)
		g.mt.sink.reqs[cmd][min(int(g.result.Code), NumCodes-1)].Add(1)
		g.mt.sink.latency[cmd].observe(&LatencyBounds, time.Duration(srv.table.Now()-start), 1)
	}
	if n < len(b) {
		// The socket buffer is full: the loop writes the rest first.
		g.out = append(g.out, b[n:]...)
		g.owed++
		return false
	}
	srv.parked.Add(-1)
	srv.directs.Add(1)
	return true
}

// wake delivers a parked request's result (transport): on the connection's
// own loop while it runs our callbacks, else through gnet (see
// loopTimers.wake).
func (g *gconn) wake() { g.loop.wake(g) }

// trigger asks gnet to run OnTraffic for g soon, from its task queue.
func (g *gconn) trigger() { _ = g.c.Wake(nil) }

func (h *gnetHandler) OnOpen(c gnet.Conn) ([]byte, gnet.Action) {
	srv := h.srv
	srv.accepted.Add(1) // before anything is read: see Serve
	g := &gconn{c: c, loop: srv.loopFor(c.EventLoop())}
	g.timer.Owner = g
	now := srv.table.Now()
	g.init(srv, g, now)
	g.mt = g.loop.metered()
	c.SetContext(g)
	g.arm(now)
	srv.logConn("connection opened", g.owner.ID(), c.RemoteAddr(), "")
	return nil, gnet.None
}

// OnReadEOF: the client shut down its sending side (a half-close, as
// `printf … | nc -N` does; the patched gnet calls this instead of closing).
// Every complete request it sent before is still served and answered, with
// the usual back-pressure, and the connection closes once they are
// answered and written. A request that would block counts the half-close
// as a disconnect: it is dropped with the connection's lock state, as when
// the client closes, and the replies before it are still written
// (dropAtHalfClose).
func (h *gnetHandler) OnReadEOF(c gnet.Conn) gnet.Action {
	g := c.Context().(*gconn)
	lt := g.loop
	lt.enter()
	g.peerEOF = true // the loop's alone, like stalled: no claim needed
	return h.leave(lt, g, h.traffic(g))
}

func (h *gnetHandler) OnClose(c gnet.Conn, _ error) gnet.Action {
	g, ok := c.Context().(*gconn)
	if !ok {
		return gnet.None
	}
	g.claimWait()
	lt := g.loop
	lt.enter()
	lt.wheel.Remove(&g.timer)
	g.close(lt.clock())
	h.srv.logConn("connection closed", g.owner.ID(), c.RemoteAddr(), g.closeReason())
	h.leave(lt, g, gnet.None)
	return gnet.None
}

func (h *gnetHandler) OnTraffic(c gnet.Conn) gnet.Action {
	g := c.Context().(*gconn)
	lt := g.loop
	lt.enter()
	return h.leave(lt, g, h.traffic(g))
}

// traffic serves g: its parked result, then its input.
func (h *gnetHandler) traffic(g *gconn) gnet.Action {
	if !g.claim() {
		return gnet.None // its completer wakes the loop when it is done
	}
	act := h.serve(g)
	if act == gnet.None {
		g.armDirect()
	}
	return act
}

func (h *gnetHandler) serve(g *gconn) gnet.Action {
	c := g.c
	select {
	case <-h.srv.stopCh:
		// Close has begun: closing other connections releases locks and
		// may grant a request parked here; a grant the client cannot keep
		// must not be sent.
		return gnet.Close
	default:
	}
	now := g.loop.clock()
	if g.mt != nil {
		defer g.mt.endTraffic(h.srv, now)
	}
	if g.closing {
		discardAll(c)
		return g.flush(now) // closes when due (flush)
	}
	if g.bigKiB > 0 && c.OutboundBuffered() == 0 {
		// Written: gnet empties its buffer without telling us, and the
		// stall check may be up to 50 ms away.
		g.releaseBig()
	}
	if !g.unpark(now) || c.OutboundBuffered() >= h.srv.cfg.OutboundHighWater || g.bigKiB > 0 {
		// Not decoding: parked (replies keep request order), the client
		// is not reading its replies, or a large reply charged to the
		// server's budget is not all written yet (one at a time per
		// connection: its share comes back only when gnet's buffer is
		// empty). Bound what it may pile up meanwhile.
		if c.InboundBuffered() > h.srv.cfg.InboundCap {
			g.closeFor(CloseInboundCap)
			return gnet.Close
		}
		if g.parked && g.peerEOF {
			g.dropAtHalfClose(now)
		}
		return g.flush(now)
	}
	hw := h.srv.cfg.OutboundHighWater
	if buf, _ := c.Peek(-1); len(buf) > 0 {
		if n := g.handle(buf, now, hw); n > 0 {
			_, _ = c.Discard(n)
		}
		if g.parked && c.InboundBuffered() > h.srv.cfg.InboundCap {
			// What came with a request that blocks is bounded now,
			// not from the next read on: none may come. The replies
			// before that request go first (a grant among them must
			// reach its client).
			g.closeFor(CloseInboundCap)
			discardAll(c)
			if act := g.flush(now); act == gnet.Close {
				return act
			}
			return gnet.Close
		}
	}
	// handle stops after hw bytes of replies. No new input may come to
	// call us again, so once they are written decode the rest: now if the
	// socket took them, else when the stall check sees them drained.
	more := len(g.out) >= hw && !g.parked && !g.closing
	act := g.flush(now)
	if more && act == gnet.None && c.OutboundBuffered() < hw {
		g.trigger() // through gnet, so other connections get their turn
	}
	if g.peerEOF && act == gnet.None && !more && !g.closing {
		// Half-closed: nothing more will arrive. Close once every complete
		// request is answered and written (the stall check calls again
		// when the replies have drained); if one blocks, see
		// dropAtHalfClose.
		if g.parked {
			g.dropAtHalfClose(now)
			return g.flush(now)
		}
		if c.OutboundBuffered() == 0 {
			return gnet.Close
		}
	}
	return act
}

// dropAtHalfClose: a request blocks after the client half-closed, which
// counts as a disconnect (OnReadEOF): the connection's lock state goes at
// once, as at a close (the waiter leaves the queue; with auto-release,
// its holds are released), and the connection closes once the replies
// before the request are written (flush, timerCheck; bounded by the write
// timeout). gnet's close would drop what the socket did not take yet.
//
// A parked request already decided (granted or timed out, its result on
// the way to Complete) is not dropped: it stays parked, its result is
// written when it arrives, and the close follows (serve). CloseOwner
// would otherwise take a grant the client is never told of for one it
// was, and with auto-release off keep it held by nobody until its lease
// ends.
func (g *gconn) dropAtHalfClose(now int64) {
	if g.parked && !g.srv.table.CancelParked(&g.owner, now) {
		return
	}
	g.srv.table.CloseOwner(&g.owner, now)
	if g.parked {
		g.parked = false
		g.srv.parked.Add(-1)
	}
	g.closing = true
	g.closeAt = now
}

// flushingBeforeClose: closing, but the replies before the close are
// still in gnet's buffer and must go first (dropAtHalfClose).
func (g *gconn) flushingBeforeClose() bool {
	return g.closing && g.peerEOF && g.c.OutboundBuffered() > 0
}

// flush writes pending replies (one write per event) and rearms timers.
func (g *gconn) flush(now int64) gnet.Action {
	if len(g.out) > 0 {
		_, _ = g.c.Write(g.out)
		g.written += uint32(len(g.out))
		g.out = emptyOut(g.out)
		if g.closed.Load() {
			// The write failed and gnet closed the connection inside
			// Write (OnClose has run). Arm nothing: a timer firing later
			// would write through the stale descriptor number, which may
			// belong to another connection by then.
			return gnet.Close
		}
		// Replies of parked requests are sent once they leave gnet's
		// buffer: a drain closes the connection when none is owed, and
		// gnet's close drops what the socket did not take.
		if g.c.OutboundBuffered() == 0 {
			g.sent()
			g.releaseBig()
		} else if g.owed > 0 {
			g.owedMark = g.written
		}
	}
	if g.closing && g.closeAt <= now && !g.flushingBeforeClose() {
		return gnet.Close
	}
	if !g.stalled && g.c.OutboundBuffered() > 0 {
		g.stalled = true
		g.stallSince = now
		g.drainMark = g.written - uint32(g.c.OutboundBuffered())
	}
	g.arm(now)
	return gnet.None
}

func discardAll(c gnet.Conn) {
	if n := c.InboundBuffered(); n > 0 {
		_, _ = c.Discard(n)
	}
}

// stallCheck is how often a connection with unsent replies is checked.
const stallCheck = 50 * time.Millisecond

// arm sets the connection's one timer to the earliest thing it must check:
// its close time, write progress, or read timeout. The timer is moved only
// earlier; firing late re-arms (lazy rescheduling keeps the request path
// free of wheel work).
func (g *gconn) arm(now int64) {
	next := int64(-1)
	switch {
	case g.closing:
		next = g.closeAt
		if g.stalled && g.peerEOF {
			// Replies still draining before the close (dropAtHalfClose).
			next = max(next, now+int64(stallCheck))
		}
	case g.stalled:
		// Replies unsent: the stall check, not the read deadline
		// (timerCheck), until they drain.
		next = now + int64(stallCheck)
	default:
		if d := g.readDeadline(); d > 0 {
			next = d
		} else if rt := int64(g.srv.cfg.ReadTimeout); g.parked && rt > 0 {
			// A completer may write the result itself (tryDirect), and
			// the read timeout runs again from then: look again later.
			next = now + rt
		}
	}
	w := g.loop.wheel
	if next < 0 {
		w.Remove(&g.timer)
		return
	}
	tick := g.loop.tickNs
	t := uint64((next + tick - 1) / tick)
	if !g.timer.Pending() || t < g.timer.Deadline() {
		w.Add(&g.timer, t)
	}
}

// onTimer runs on the event loop when the connection's timer fires.
func (g *gconn) onTimer(now int64) {
	if g.closed.Load() {
		return // never touch a closed gnet.Conn: its descriptor may be reused
	}
	if !g.claim() {
		return // served when its completer is done, which re-arms the timer
	}
	g.timerCheck(now)
	if !g.closed.Load() {
		g.armDirect()
	}
}

func (g *gconn) timerCheck(now int64) {
	srv := g.srv
	if g.closing && !g.flushingBeforeClose() {
		if now >= g.closeAt {
			_ = g.loop.el.Close(g.c)
			return
		}
		g.arm(now)
		return
	}
	if g.stalled {
		buffered := g.c.OutboundBuffered()
		drained := g.written - uint32(buffered)
		if g.owed > 0 && int32(drained-g.owedMark) >= 0 {
			g.sent()
		}
		switch {
		case buffered == 0:
			g.stalled = false
			g.releaseBig()
			g.lastProgress = now // replies delivered count as progress
			// Decoding may have stopped at the high-water mark; a
			// half-closed connection closes now that all is written.
			if g.c.InboundBuffered() > 0 || g.peerEOF {
				g.trigger()
			}
		case drained != g.drainMark:
			g.drainMark = drained
			g.stallSince = now
			// The client is reading. Decoding may be held back at the
			// high-water mark with its requests already here: the read
			// timeout is for lines that have not arrived.
			g.lastProgress = now
		case now-g.stallSince >= int64(srv.cfg.WriteTimeout):
			g.closeFor(CloseWriteTimeout)
			_ = g.loop.el.Close(g.c)
			return
		}
	}
	if g.closing || g.stalled {
		// Replies draining before the close; or a client not reading
		// its replies, which is the write timeout's to end, not the
		// read timeout's (the lines it sent have arrived, its replies
		// have not; TLS behaves so too).
		g.arm(now)
		return
	}
	if d := g.readDeadline(); d > 0 && now >= d {
		g.readTimedOut(now)
		if g.flush(now) == gnet.Close {
			_ = g.loop.el.Close(g.c)
		}
		return
	}
	g.arm(now)
}

// loopTimers is one event loop's connection-timer wheel and same-loop
// delivery queue. Except for mu, active and pending, it is touched only on
// its loop: by callbacks, and by Run, which the ticker schedules there with
// EventLoop.Execute.
type loopTimers struct {
	srv    *Server
	el     gnet.EventLoop
	wheel  *wheel.Wheel
	tickNs int64
	fire   func(*wheel.Timer)
	now    int64

	// Same-loop delivery: while the loop runs OnTraffic or OnClose
	// (active), results for its own connections are queued in pending and
	// served before the callback returns, instead of through gnet's task
	// queue, which costs an eventfd write, an eventfd read and another
	// epoll round per result. A release that grants a waiter on the same
	// loop is the common case. Other goroutines may queue too while the
	// loop is active: it serves pending before it clears active. active is
	// set by the loop alone and cleared only under mu with pending empty.
	mu      sync.Mutex
	active  atomic.Bool
	pending []*gconn
	spare   []*gconn
	depth   int // nesting of our callbacks (OnClose runs inside Close)

	// Busy time (metrics on; see beginBusy): lm is the loop's sink.
	lm        *loopMetrics
	busyStart int64
	busyDepth int32
	fresh     bool
}

// wake delivers g's parked result: queued for the running callback when
// the loop is active, else written by the caller itself when g is armed
// for it (tryDirect), else through gnet.
func (lt *loopTimers) wake(g *gconn) {
	if !lt.queue(g) && !g.tryDirect() && !lt.queue(g) {
		g.trigger()
	}
}

// queue adds g to the running callback's work if the loop is active.
func (lt *loopTimers) queue(g *gconn) bool {
	if !lt.active.Load() {
		return false
	}
	lt.mu.Lock()
	defer lt.mu.Unlock()
	if !lt.active.Load() {
		return false
	}
	lt.pending = append(lt.pending, g)
	return true
}

// enter begins one of our callbacks on the loop. (Setting active needs no
// lock: a goroutine that sees it queues under mu, and leave takes mu
// before it clears it.)
func (lt *loopTimers) enter() {
	if lt.depth == 0 {
		lt.beginBusy()
		lt.active.Store(true)
	}
	lt.depth++
}

// leave ends a callback for cur (whose action so far is act). The outermost
// callback first serves every queued result, including those that serving
// queues, and returns the action gnet should take for cur.
func (h *gnetHandler) leave(lt *loopTimers, cur *gconn, act gnet.Action) gnet.Action {
	if lt.depth > 1 {
		lt.depth--
		return act
	}
	for {
		lt.mu.Lock()
		batch := lt.pending
		if len(batch) == 0 {
			lt.active.Store(false)
			lt.mu.Unlock()
			break
		}
		lt.pending = lt.spare[:0]
		lt.mu.Unlock()
		stopping := false
		select {
		case <-h.srv.stopCh:
			stopping = true // every connection is being closed
		default:
		}
		for i, g := range batch {
			batch[i] = nil
			switch {
			case stopping || g.closed.Load():
			case g == cur:
				if act != gnet.Close {
					act = h.traffic(g)
				}
			case h.traffic(g) == gnet.Close:
				_ = lt.el.Close(g.c) // runs OnClose, nested
			}
		}
		lt.spare = batch[:0]
	}
	lt.depth--
	lt.endBusy()
	return act
}

func (s *Server) loopFor(el gnet.EventLoop) *loopTimers {
	s.loopsMu.Lock()
	defer s.loopsMu.Unlock()
	lt := s.loops[el]
	if lt == nil {
		tick := int64(s.cfg.Tick)
		lt = &loopTimers{srv: s, el: el, tickNs: tick, wheel: wheel.New(uint64(s.table.Now() / tick))}
		lt.fire = func(t *wheel.Timer) { t.Owner.(*gconn).onTimer(lt.now) }
		if s.cfg.Metrics {
			lt.lm = s.newLoopMetrics(el)
		}
		s.loops[el] = lt
	}
	return lt
}

// Run advances the loop's wheel; it runs on the loop.
func (lt *loopTimers) Run(context.Context) error {
	lt.beginBusy()
	lt.now = lt.clock()
	tick := uint64(lt.now / lt.tickNs)
	for !lt.wheel.Advance(tick, 1024, lt.fire) {
	}
	lt.endBusy()
	return nil
}

// tickLoops schedules every loop's timer work once a tick.
func (s *Server) tickLoops() {
	defer s.tickWG.Done()
	t := time.NewTicker(s.cfg.Tick)
	defer t.Stop()
	var loops []*loopTimers
	for {
		select {
		case <-s.stopCh:
			return
		case <-t.C:
		}
		loops = loops[:0]
		s.loopsMu.Lock()
		for _, lt := range s.loops {
			loops = append(loops, lt)
		}
		s.loopsMu.Unlock()
		for _, lt := range loops {
			_ = lt.el.Execute(context.Background(), lt)
		}
	}
}
