package reactor

import (
	"context"
	"math/bits"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/lockreactor/dflockd/codec"
)

// Request metrics are kept where the requests run, so the request path
// takes no lock: one sink per event loop (written by that loop, so its
// cache lines stay with the loop, and by the goroutines that write a
// parked result directly: gconn.tryDirect) and a few sinks shared by the
// TLS connections (spread by connection id; TLS connections on one sink
// do share its cache lines). Writes are atomic adds; Metrics sums the
// sinks on demand.

// NumCommands and NumCodes size the request counters: every codec.Command
// (CmdInvalid counts requests that did not decode) and codec.Code.
const (
	NumCommands = int(codec.CmdPing) + 1
	NumCodes    = int(codec.CodeErrorDraining) + 1
)

// HistogramBuckets is the number of finite buckets of a Histogram.
const HistogramBuckets = 16

// LatencyBounds are the upper bounds (inclusive) of the request-latency
// buckets: decode to reply written, parked time excluded.
var LatencyBounds = [HistogramBuckets]time.Duration{
	5 * time.Microsecond, 10 * time.Microsecond, 25 * time.Microsecond, 50 * time.Microsecond,
	100 * time.Microsecond, 250 * time.Microsecond, 500 * time.Microsecond, time.Millisecond,
	2500 * time.Microsecond, 5 * time.Millisecond, 10 * time.Millisecond, 25 * time.Millisecond,
	50 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond, time.Second,
}

// WaitBounds are the upper bounds (inclusive) of the parked-wait buckets:
// from parking to the result (grant or timeout) reaching the connection.
var WaitBounds = [HistogramBuckets]time.Duration{
	time.Millisecond, 5 * time.Millisecond, 10 * time.Millisecond, 25 * time.Millisecond,
	50 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond,
	time.Second, 2500 * time.Millisecond, 5 * time.Second, 10 * time.Second,
	30 * time.Second, time.Minute, 2 * time.Minute, 5 * time.Minute,
}

// Histogram is a snapshot of a fixed-bucket histogram. Counts are per
// bucket (not cumulative); the last one counts values above every bound.
type Histogram struct {
	Counts [HistogramBuckets + 1]uint64
	Sum    time.Duration
}

// Count is the number of observations.
func (h *Histogram) Count() uint64 {
	var n uint64
	for _, c := range h.Counts {
		n += c
	}
	return n
}

// hist is the live form of a Histogram.
type hist struct {
	counts [HistogramBuckets + 1]atomic.Uint64
	sum    atomic.Int64
}

// observe records n observations of d.
func (h *hist) observe(bounds *[HistogramBuckets]time.Duration, d time.Duration, n uint64) {
	i := 0
	for i < HistogramBuckets && d > bounds[i] {
		i++
	}
	h.counts[i].Add(n)
	h.sum.Add(int64(d) * int64(n))
}

func (h *hist) addTo(dst *Histogram) {
	for i := range h.counts {
		dst.Counts[i] += h.counts[i].Load()
	}
	dst.Sum += time.Duration(h.sum.Load())
}

// sink is one writer's request metrics.
type sink struct {
	reqs    [NumCommands][NumCodes]atomic.Uint64
	latency [NumCommands]hist
	wait    [NumCommands]hist
	busy    atomic.Int64 // ns spent in callbacks and timer runs (event loops only)
	_       [64]byte
}

// reqBatch counts the requests answered in the current read batch by
// command, so their latency is recorded once per batch with one clock
// reading after the write.
type reqBatch struct {
	n    [NumCommands]uint32
	mask uint32
}

// metered is what a session records into: a sink and the batch of its
// current read event. An event loop's sessions share one (the loop runs
// one callback at a time); a TLS connection has its own batch and a shared
// sink.
type metered struct {
	sink  *sink
	batch reqBatch
}

// count records a request's reply.
func (m *metered) count(cmd codec.Command, code codec.Code) {
	c := min(int(cmd), NumCommands-1)
	m.sink.reqs[c][min(int(code), NumCodes-1)].Add(1)
	m.batch.n[c]++
	m.batch.mask |= 1 << c
}

// endBatch records the latency d (read to replies written) for every
// request answered in the batch, and starts a new batch.
func (m *metered) endBatch(d time.Duration) {
	b := &m.batch
	for mask := b.mask; mask != 0; mask &= mask - 1 {
		c := bits.TrailingZeros32(mask)
		m.sink.latency[c].observe(&LatencyBounds, d, uint64(b.n[c]))
		b.n[c] = 0
	}
	b.mask = 0
}

// endTraffic closes a traffic call that began at start: the batch's
// latencies. Deferred by traffic. (The loop's busy time is kept per
// callback: beginBusy, endBusy.)
func (m *metered) endTraffic(srv *Server, start int64) {
	if m.batch.mask != 0 {
		m.endBatch(time.Duration(srv.table.Now() - start))
	}
}

// loopMetrics is one event loop's sink, made with the loop's loopTimers
// (on its first connection).
type loopMetrics struct {
	metered
	el      gnet.EventLoop
	index   int
	created int64 // table clock
}

// tlsSinks is how many sinks the TLS connections share.
const tlsSinks = 8

// newLoopMetrics makes and registers el's sink (metrics on). loopFor calls
// it once per loop and keeps it on the loop's loopTimers, so an accepted
// connection finds its sink there without another lock.
func (s *Server) newLoopMetrics(el gnet.EventLoop) *loopMetrics {
	lm := &loopMetrics{el: el, created: s.table.Now()}
	lm.sink = new(sink)
	s.metricsMu.Lock()
	lm.index = len(s.loopMetrics)
	s.loopMetrics = append(s.loopMetrics, lm)
	s.metricsMu.Unlock()
	return lm
}

// metered is where the loop's sessions record (nil with metrics off).
func (lt *loopTimers) metered() *metered {
	if lt.lm == nil {
		return nil
	}
	return &lt.lm.metered
}

// Busy time: each outermost callback (OnTraffic, OnClose, with the
// results it serves on the loop) and each connection-timer run counts from
// its start to its end. busyDepth keeps a callback nested in a timer run
// (a close) from counting twice. One clock reading starts the span and is
// reused as the work's now (clock); one ends it.

// beginBusy starts a busy span on the loop (metrics on).
func (lt *loopTimers) beginBusy() {
	if lt.lm == nil {
		return
	}
	if lt.busyDepth == 0 {
		lt.busyStart = lt.srv.table.Now()
		lt.fresh = true
	}
	lt.busyDepth++
}

// endBusy ends a span begun by beginBusy and, at the outermost, adds it to
// the loop's busy time.
func (lt *loopTimers) endBusy() {
	if lt.lm == nil {
		return
	}
	if lt.busyDepth--; lt.busyDepth == 0 {
		lt.fresh = false
		lt.lm.sink.busy.Add(lt.srv.table.Now() - lt.busyStart)
	}
}

// clock returns the table clock for work on the loop: the reading that
// began the busy span, to its first caller, else a new one.
func (lt *loopTimers) clock() int64 {
	if lt.fresh {
		lt.fresh = false
		return lt.busyStart
	}
	return lt.srv.table.Now()
}

func (s *Server) meteredForTLS(id uint64) *metered {
	if !s.cfg.Metrics {
		return nil
	}
	return &metered{sink: s.tlsSinks[id%tlsSinks]}
}

// record counts the reply to a request of cmd (metrics on).
func (s *session) record(cmd codec.Command, code codec.Code) {
	if s.mt != nil {
		s.mt.count(cmd, code)
	}
}

// Metrics is a snapshot of the server's counters for monitoring. Request
// figures are zero unless Config.Metrics is set.
type Metrics struct {
	// Connections is the number of open connections, TLSConnections the
	// TLS ones among them (handshakes included).
	Connections, TLSConnections int64
	// Accepted counts connections accepted and served (past the
	// connection cap and drain checks); Refused those closed at once
	// because the server was at its connection cap or out of descriptors.
	Accepted, Refused uint64
	// ConnCap is the effective connection cap.
	ConnCap int64
	// Parked is the number of requests parked on a lock.
	Parked int64
	// DirectResults counts parked results (grants and timeouts) that the
	// goroutine completing them wrote to the socket itself, without
	// waking the connection's event loop (see gconn.tryDirect).
	DirectResults uint64
	// Draining is set once Shutdown has begun.
	Draining bool
	// Closes counts connections the server closed, by CloseReason.
	Closes [NumCloseReasons]uint64
	// Requests counts replies by command and status.
	Requests [NumCommands][NumCodes]uint64
	// Latency is, per command, the time from reading a request to writing
	// its reply, parked time excluded (LatencyBounds). A batch of
	// pipelined requests shares one figure: the batch's.
	Latency [NumCommands]Histogram
	// Wait is, per command, the time parked requests waited (WaitBounds).
	Wait [NumCommands]Histogram
	// Loops has one entry per event loop that has served a connection.
	Loops []LoopMetrics
}

// LoopMetrics describes one event loop.
type LoopMetrics struct {
	// Index numbers the loops in the order they served a first connection.
	Index int
	// Busy is the time the loop spent in the server's callbacks (reads,
	// closes, results delivered on the loop) and connection-timer runs
	// since Since.
	Busy time.Duration
	// Since is how long ago the loop served its first connection.
	Since time.Duration
	// Timers is the number of connection timers pending on the loop, or
	// -1 if the loop did not answer in time (the figure is unknown, not 0).
	Timers int
}

// timerCount reads a loop's connection-timer count on the loop.
type timerCount struct {
	lt *loopTimers
	n  chan int
}

func (tc *timerCount) Run(context.Context) error {
	tc.n <- tc.lt.wheel.Len()
	return nil
}

// Metrics returns a snapshot of the server's counters. It takes each sink
// without locking the request path, and asks each event loop for its
// timer count (waiting at most a few milliseconds for a busy loop).
func (s *Server) Metrics() Metrics {
	// A plain connection holds its place in conns from the accept (the
	// cap) but counts as accepted once its loop opens it: one snapshot
	// shows no more open than accepted.
	conns, accepted := s.conns.Load(), s.accepted.Load()
	m := Metrics{
		Connections:   min(conns, int64(accepted)),
		Accepted:      accepted,
		Refused:       uint64(s.refused.Load()),
		ConnCap:       s.connCap,
		Parked:        s.parked.Load(),
		DirectResults: uint64(s.directs.Load()),
		Draining:      s.draining.Load(),
	}
	for i := range s.closes {
		m.Closes[i] = uint64(s.closes[i].Load())
	}
	s.tlsMu.Lock()
	m.TLSConnections = int64(len(s.tlsConns))
	s.tlsMu.Unlock()
	if !s.cfg.Metrics {
		return m
	}
	addSink := func(k *sink) {
		for c := range k.reqs {
			for r := range k.reqs[c] {
				m.Requests[c][r] += k.reqs[c][r].Load()
			}
			k.latency[c].addTo(&m.Latency[c])
			k.wait[c].addTo(&m.Wait[c])
		}
	}
	for _, k := range s.tlsSinks {
		addSink(k)
	}
	s.metricsMu.Lock()
	loops := append([]*loopMetrics(nil), s.loopMetrics...)
	s.metricsMu.Unlock()
	timers := s.loopTimerCounts()
	now := s.table.Now()
	for _, lm := range loops {
		addSink(lm.sink)
		n, ok := timers[lm.el]
		if !ok {
			n = -1
		}
		m.Loops = append(m.Loops, LoopMetrics{
			Index:  lm.index,
			Busy:   time.Duration(lm.sink.busy.Load()),
			Since:  time.Duration(now - lm.created),
			Timers: n,
		})
	}
	return m
}

// loopTimerCounts asks every loop for its wheel's timer count.
func (s *Server) loopTimerCounts() map[gnet.EventLoop]int {
	s.loopsMu.Lock()
	asks := make(map[gnet.EventLoop]*timerCount, len(s.loops))
	for el, lt := range s.loops {
		asks[el] = &timerCount{lt: lt, n: make(chan int, 1)}
	}
	s.loopsMu.Unlock()
	counts := make(map[gnet.EventLoop]int, len(asks))
	select {
	case <-s.stopCh:
		return counts
	default:
	}
	for el, tc := range asks {
		if el.Execute(context.Background(), tc) != nil {
			delete(asks, el)
		}
	}
	deadline := time.NewTimer(50 * time.Millisecond)
	defer deadline.Stop()
	for el, tc := range asks {
		select {
		case n := <-tc.n:
			counts[el] = n
		case <-deadline.C:
			return counts
		}
	}
	return counts
}

// Draining reports whether Shutdown has begun: the server no longer takes
// new work and should be taken out of rotation.
func (s *Server) Draining() bool { return s.draining.Load() }

// StatsJSON is the body of the stats command's reply: the lock table and
// connection count as JSON.
func (s *Server) StatsJSON() []byte { return s.statsJSON(s.table.Now()) }
