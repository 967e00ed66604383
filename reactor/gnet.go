package reactor

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"

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
	stalled    bool
}

// wake delivers a parked request's result (transport): on the connection's
// own loop while it runs our callbacks, else through gnet (see
// loopTimers.wake).
func (g *gconn) wake() { g.loop.wake(g) }

// trigger asks gnet to run OnTraffic for g soon, from its task queue.
func (g *gconn) trigger() { _ = g.c.Wake(nil) }

func (h *gnetHandler) OnOpen(c gnet.Conn) ([]byte, gnet.Action) {
	srv := h.srv
	g := &gconn{c: c, loop: srv.loopFor(c.EventLoop())}
	g.timer.Owner = g
	now := srv.table.Now()
	g.init(srv, g, now)
	g.mt = g.loop.metered()
	c.SetContext(g)
	g.arm(now)
	srv.logConn("connection opened", g.owner.ID(), c.RemoteAddr())
	return nil, gnet.None
}

func (h *gnetHandler) OnClose(c gnet.Conn, _ error) gnet.Action {
	g, ok := c.Context().(*gconn)
	if !ok {
		return gnet.None
	}
	lt := g.loop
	lt.enter()
	lt.wheel.Remove(&g.timer)
	g.close(lt.clock())
	h.srv.logConn("connection closed", g.owner.ID(), c.RemoteAddr())
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
		return gnet.None
	}
	if !g.unpark(now) || c.OutboundBuffered() >= h.srv.cfg.OutboundHighWater {
		// Not decoding: parked (replies keep request order) or the client
		// is not reading its replies. Bound what it may pile up meanwhile.
		if c.InboundBuffered() > h.srv.cfg.InboundCap {
			return gnet.Close
		}
		return g.flush(now)
	}
	hw := h.srv.cfg.OutboundHighWater
	if buf, _ := c.Peek(-1); len(buf) > 0 {
		if n := g.handle(buf, now, hw); n > 0 {
			_, _ = c.Discard(n)
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
	return act
}

// flush writes pending replies (one write per event) and rearms timers.
func (g *gconn) flush(now int64) gnet.Action {
	if len(g.out) > 0 {
		_, _ = g.c.Write(g.out)
		g.written += uint32(len(g.out))
		g.out = g.out[:0]
		if cap(g.out) > 4<<10 {
			g.out = nil // do not pin a large buffer on an idle connection
		}
		if g.closed.Load() {
			// The write failed and gnet closed the connection inside
			// Write (OnClose has run). Arm nothing: a timer firing later
			// would write through the stale descriptor number, which may
			// belong to another connection by then.
			return gnet.Close
		}
		g.sent()
	}
	if g.closing && g.closeAt <= now {
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
	default:
		if d := g.readDeadline(); d > 0 {
			next = d
		}
		if g.stalled {
			if c := now + int64(stallCheck); next < 0 || c < next {
				next = c
			}
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
	srv := g.srv
	if g.closing {
		if now >= g.closeAt {
			_ = g.loop.el.Close(g.c)
			return
		}
		g.arm(now)
		return
	}
	if g.stalled {
		buffered := g.c.OutboundBuffered()
		switch drained := g.written - uint32(buffered); {
		case buffered == 0:
			g.stalled = false
			// Decoding may have stopped at the high-water mark.
			if g.c.InboundBuffered() > 0 {
				g.trigger()
			}
		case drained != g.drainMark:
			g.drainMark = drained
			g.stallSince = now
		case now-g.stallSince >= int64(srv.cfg.WriteTimeout):
			_ = g.loop.el.Close(g.c)
			return
		}
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
// the loop is active, else through gnet.
func (lt *loopTimers) wake(g *gconn) {
	if lt.active.Load() {
		lt.mu.Lock()
		if lt.active.Load() {
			lt.pending = append(lt.pending, g)
			lt.mu.Unlock()
			return
		}
		lt.mu.Unlock()
	}
	g.trigger()
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
