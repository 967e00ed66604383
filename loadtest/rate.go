package loadtest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lockreactor/dflockd/codec"
)

// RateConfig is the rate scenario: an open loop at a fixed rate of ops
// (acquire + release of a free key) spread over the connections. Op i is
// due at start + i/Rate; its latency is measured from that intended time to
// the release's reply, so a stall (in the server or in the generator)
// shows in the latencies of every op it delays instead of silently
// lowering the rate (no coordinated omission).
type RateConfig struct {
	Common
	// Rate is the target in ops/s over all connections (default 1000).
	Rate float64
	// Connections (default 4) and Slots: ops in progress a connection may
	// have (default 64; each slot owns a key). An op due while every slot
	// is busy waits for one, its latency still counted from its due time.
	Connections int
	Slots       int
}

func (c *RateConfig) Name() string                             { return "rate" }
func (c *RateConfig) Settings() *Common                        { return &c.Common }
func (c *RateConfig) Run(ctx context.Context) (*Result, error) { return Rate(ctx, *c) }

// rateEntry is one request in flight on a rate connection.
type rateEntry struct {
	slot     int32
	release  bool
	intended int64 // ns since start the op was due
}

// rateConn is one connection of the open loop: a sender goroutine issues
// acquires on schedule, a reader goroutine issues the releases and
// records. mu guards the write buffer, the in-flight queue and the slots.
type rateConn struct {
	c    *wconn
	keys [][]byte

	mu          sync.Mutex
	q           *fifo[rateEntry]
	free        []int32
	busy        int // ops in progress
	senderDone  bool
	freed       chan struct{}
	acq, rel    codec.Request
	latencies   []int64 // reader's batch, recorded outside mu
	requests    int64
	late        int64 // ops that waited for a free slot
	readerAlive atomic.Bool
}

// Rate runs the rate scenario.
func Rate(ctx context.Context, cfg RateConfig) (*Result, error) {
	if cfg.Rate <= 0 {
		cfg.Rate = 1000
	}
	if cfg.Connections <= 0 {
		cfg.Connections = 4
	}
	if cfg.Slots <= 0 {
		cfg.Slots = 64
	}
	if cfg.Duration <= 0 {
		cfg.Duration = 3 * time.Second
	}
	if len(cfg.Servers) == 0 {
		return nil, errors.New("rate: no servers")
	}
	if cfg.Rate*cfg.Duration.Seconds() > 1e8 {
		return nil, errors.New("rate: rate x duration above 100M ops")
	}
	rcs := make([]*rateConn, cfg.Connections)
	addrs := make([]string, cfg.Connections)
	for ci := range rcs {
		rc := &rateConn{q: newFifo[rateEntry](2 * cfg.Slots), freed: make(chan struct{}, 1)}
		first := fmt.Appendf(nil, "%s_rate_%d_0", cfg.Key, ci)
		s := Shard(first, len(cfg.Servers))
		addrs[ci] = cfg.Servers[s]
		for n := 0; len(rc.keys) < cfg.Slots; n++ {
			k := fmt.Appendf(nil, "%s_rate_%d_%d", cfg.Key, ci, n)
			if Shard(k, len(cfg.Servers)) == s {
				rc.free = append(rc.free, int32(len(rc.keys)))
				rc.keys = append(rc.keys, k)
			}
		}
		rc.acq = codec.Request{Cmd: codec.CmdLock, Timeout: cfg.Timeout, Lease: cfg.Lease}
		rc.rel = codec.Request{Cmd: codec.CmdRelease}
		rc.latencies = make([]int64, 0, 2*cfg.Slots)
		rcs[ci] = rc
	}
	conns, err := dialAll(ctx, addrs, 64, false)
	if err != nil {
		return nil, fmt.Errorf("rate: %w", err)
	}
	defer closeAll(conns)
	for ci, rc := range rcs {
		rc.c = conns[ci]
	}
	r := newRun(&cfg.Common, "rate", cfg.Connections)
	hist := NewHist()
	// Connection ci sends ops ci, ci+C, ci+2C, …: op k of connection ci is
	// due at (k*C + ci) / Rate.
	perOp := float64(time.Second) / cfg.Rate
	total := int64(math.Floor(cfg.Rate * cfg.Duration.Seconds()))
	startGate := make(chan struct{})
	var wg sync.WaitGroup
	for ci, rc := range rcs {
		rc.readerAlive.Store(true)
		wg.Go(func() {
			<-startGate
			rc.read(r, ci, NewRecorder(hist))
		})
		wg.Go(func() {
			<-startGate
			rc.send(r, ci, len(rcs), perOp, total)
		})
	}
	// No stop timer: the sender stops after the last due op (total), so
	// every op due within Duration is sent and counted; only ctx stops it
	// early.
	r.progressMax = cfg.Duration.Milliseconds()
	r.progressNow = func() int64 { return time.Since(r.start).Milliseconds() }
	r.begin(ctx, 0)
	release := closeOnCancel(ctx, conns, deadlineFor(r.start, &cfg.Common))
	close(startGate)
	wg.Wait()
	release()
	var requests, late int64
	for _, rc := range rcs {
		requests += rc.requests
		late += rc.late
	}
	cpu := r.end(requests)
	res := r.result("rate", r.total(), requests, cpu)
	res.Header = fmt.Sprintf("rate: %.0f ops/s over %d connections (%d slots each) for %v", cfg.Rate, cfg.Connections, cfg.Slots, cfg.Duration)
	res.Params = map[string]any{"rate": cfg.Rate, "connections": cfg.Connections, "slots": cfg.Slots, "key": cfg.Key,
		"timeout_s": cfg.Timeout, "lease_s": cfg.Lease, "duration_s": cfg.Duration.Seconds(), "ops_due": total,
		"ops_waited_for_slot": late}
	res.addHist("op", hist)
	res.figure("throughput", "achieved rate", "ops/s", res.Throughput, res.Ops > 0, true, true)
	res.latencyFigures("op", "op latency", true)
	res.cpuFigures()
	return res, nil
}

// send issues this connection's ops at their due times until the run
// stops or every op was sent.
func (rc *rateConn) send(r *run, ci, nconn int, perOp float64, total int64) {
	defer func() {
		rc.mu.Lock()
		rc.senderDone = true
		idle := rc.busy == 0
		rc.mu.Unlock()
		if idle {
			// Nothing in flight: wake the reader so it can finish.
			_ = rc.c.nc.SetReadDeadline(time.Now())
		}
	}()
	due := func(k int64) int64 { return int64(float64(k*int64(nconn)+int64(ci)) * perOp) }
	k := int64(0)
	for !r.stop.Load() && k*int64(nconn)+int64(ci) < total {
		now := int64(time.Since(r.start))
		if d := due(k); d > now {
			time.Sleep(time.Duration(d - now))
			continue
		}
		rc.mu.Lock()
		if !rc.readerAlive.Load() {
			rc.mu.Unlock()
			return
		}
		waiting := false
		for k*int64(nconn)+int64(ci) < total {
			d := due(k)
			if d > now {
				break
			}
			if len(rc.free) == 0 {
				waiting = true
				break
			}
			slot := rc.free[len(rc.free)-1]
			rc.free = rc.free[:len(rc.free)-1]
			rc.acq.Key = rc.keys[slot]
			rc.c.queue(&rc.acq)
			rc.q.push(rateEntry{slot: slot, intended: d})
			rc.busy++
			if now-d > int64(time.Millisecond) {
				rc.late++
			}
			k++
		}
		err := rc.c.flush()
		rc.mu.Unlock()
		if err != nil {
			r.fail(err)
			return
		}
		if waiting {
			select {
			case <-rc.freed:
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
}

// read handles replies: an acquire's grant sends its release at once; a
// release's reply completes the op.
func (rc *rateConn) read(r *run, ci int, rec *Recorder) {
	defer rec.Flush()
	defer rc.readerAlive.Store(false)
	ctr := &r.counters[ci]
	for {
		rc.mu.Lock()
		done := rc.senderDone && rc.busy == 0
		rc.mu.Unlock()
		if done {
			return
		}
		if err := rc.c.fill(); err != nil {
			rc.mu.Lock()
			done := rc.senderDone && rc.busy == 0
			rc.mu.Unlock()
			if !done {
				r.fail(err)
			}
			return
		}
		now := int64(time.Since(r.start))
		rc.mu.Lock()
		freed := false
		for {
			line, ok := rc.c.bufferedLine()
			if !ok {
				break
			}
			e, ok := rc.q.pop()
			if !ok {
				rc.mu.Unlock()
				r.fail(fmt.Errorf("rate: reply %q with no request in flight", line))
				return
			}
			rc.requests++
			rep, err := rc.c.parse(line, "rate")
			switch {
			case err != nil:
				r.fail(err)
			case !e.release && isGrant(rep):
				rc.rel.Key, rc.rel.Token = rc.keys[e.slot], rep.Token
				rc.c.queue(&rc.rel)
				rc.q.push(rateEntry{slot: e.slot, release: true, intended: e.intended})
				continue
			case !e.release:
				r.fail(unexpected("acquire", rep))
			case !isOK(rep):
				r.fail(unexpected("release", rep))
			default:
				rc.latencies = append(rc.latencies, now-e.intended)
			}
			// The op is over (done or failed): its slot is free.
			rc.free = append(rc.free, e.slot)
			rc.busy--
			freed = true
		}
		err := rc.c.flush()
		rc.mu.Unlock()
		if err != nil {
			r.fail(err)
			return
		}
		for _, l := range rc.latencies {
			rec.Record(l)
		}
		ctr.Add(int64(len(rc.latencies)))
		rc.latencies = rc.latencies[:0]
		if freed {
			select {
			case rc.freed <- struct{}{}:
			default:
			}
		}
	}
}
