package loadtest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/lockreactor/dflockd/codec"
)

// PipelineConfig is the pipeline scenario: each connection keeps Depth
// requests in flight. With Op "lock" every slot of a connection owns a key
// and cycles acquire → release → acquire…; with Op "ping" every slot sends
// ping. Replies are read in batches and the follow-up requests of a batch
// go out in one write. One op is one request here, counted (and its
// latency recorded) only when it succeeded: a grant for an acquire, ok for
// a release or a ping. Refused requests are errors, not throughput.
type PipelineConfig struct {
	Common
	// Connections (default 4) and Depth, requests in flight on each
	// (default 16). Op is "lock" (default) or "ping".
	Connections int
	Depth       int
	Op          string
}

func (c *PipelineConfig) Name() string                             { return "pipeline" }
func (c *PipelineConfig) Settings() *Common                        { return &c.Common }
func (c *PipelineConfig) Run(ctx context.Context) (*Result, error) { return Pipeline(ctx, *c) }

type pipeKind uint8

const (
	pipeAcquire pipeKind = iota
	pipeRelease
	pipePing
)

// pipeEntry is one request in flight.
type pipeEntry struct {
	slot int32
	kind pipeKind
	sent int64 // ns since start
}

// fifo is a ring of requests in flight, in wire order (replies come back
// in the same order).
type fifo[T any] struct {
	buf     []T
	head, n int
}

func newFifo[T any](size int) *fifo[T] { return &fifo[T]{buf: make([]T, size)} }

func (f *fifo[T]) push(v T) bool {
	if f.n == len(f.buf) {
		return false
	}
	f.buf[(f.head+f.n)%len(f.buf)] = v
	f.n++
	return true
}

func (f *fifo[T]) pop() (T, bool) {
	var zero T
	if f.n == 0 {
		return zero, false
	}
	v := f.buf[f.head]
	f.head = (f.head + 1) % len(f.buf)
	f.n--
	return v, true
}

// Pipeline runs the pipeline scenario.
func Pipeline(ctx context.Context, cfg PipelineConfig) (*Result, error) {
	if cfg.Connections <= 0 {
		cfg.Connections = 4
	}
	if cfg.Depth <= 0 {
		cfg.Depth = 16
	}
	if cfg.Duration <= 0 {
		cfg.Duration = 3 * time.Second
	}
	switch cfg.Op {
	case "":
		cfg.Op = "lock"
	case "lock", "ping":
	default:
		return nil, fmt.Errorf("pipeline: --op must be lock or ping, not %q", cfg.Op)
	}
	if len(cfg.Servers) == 0 {
		return nil, errors.New("pipeline: no servers")
	}
	// Connection c's slot j owns key prefix_pipe_c_j; a connection goes to
	// the server of its first key, and all its keys are named so they
	// shard there too (the suffix search is cheap and done once).
	keys := make([][][]byte, cfg.Connections)
	addrs := make([]string, cfg.Connections)
	for c := range keys {
		first := fmt.Appendf(nil, "%s_pipe_%d_0", cfg.Key, c)
		s := Shard(first, len(cfg.Servers))
		addrs[c] = cfg.Servers[s]
		for j, n := 0, 0; j < cfg.Depth; n++ {
			k := fmt.Appendf(nil, "%s_pipe_%d_%d", cfg.Key, c, n)
			if Shard(k, len(cfg.Servers)) == s {
				keys[c] = append(keys[c], k)
				j++
			}
		}
	}
	conns, err := dialAll(ctx, addrs, 64, false)
	if err != nil {
		return nil, fmt.Errorf("pipeline: %w", err)
	}
	defer closeAll(conns)
	r := newRun(&cfg.Common, "pipeline", cfg.Connections)
	hist := NewHist()
	startGate := make(chan struct{})
	replies := make([]int64, cfg.Connections)
	var wg sync.WaitGroup
	for ci := range cfg.Connections {
		wg.Go(func() {
			<-startGate
			replies[ci] = pipeConn(r, ci, conns[ci], keys[ci], cfg.Op == "ping", &cfg.Common, NewRecorder(hist))
		})
	}
	r.begin(ctx, cfg.Duration)
	release := closeOnCancel(ctx, conns, deadlineFor(r.start, &cfg.Common))
	close(startGate)
	wg.Wait()
	release()
	var requests int64
	for _, n := range replies {
		requests += n
	}
	cpu := r.end(requests)
	res := r.result("pipeline", r.total(), requests, cpu)
	res.Header = fmt.Sprintf("pipeline: %d connections x depth %d, op %s, for %v", cfg.Connections, cfg.Depth, cfg.Op, cfg.Duration)
	res.Params = map[string]any{"connections": cfg.Connections, "depth": cfg.Depth, "op": cfg.Op, "key": cfg.Key,
		"timeout_s": cfg.Timeout, "lease_s": cfg.Lease, "duration_s": cfg.Duration.Seconds()}
	res.addHist("request", hist)
	res.figure("throughput", "throughput", "requests/s", res.Throughput, res.Ops > 0, true, true)
	res.latencyFigures("request", "request latency", true)
	res.cpuFigures()
	return res, nil
}

// pipeConn drives one pipelined connection until the run stops and every
// request in flight is answered (locks taken are released). It returns the
// number of replies read; the run's counter gets the successful ones.
func pipeConn(r *run, ci int, conn *wconn, keys [][]byte, ping bool, c *Common, rec *Recorder) (replies int64) {
	defer rec.Flush()
	depth := len(keys)
	q := newFifo[pipeEntry](depth)
	ctr := &r.counters[ci]
	acq := codec.Request{Cmd: codec.CmdLock, Timeout: c.Timeout, Lease: c.Lease}
	rel := codec.Request{Cmd: codec.CmdRelease}
	pingReq := codec.Request{Cmd: codec.CmdPing}
	issue := func(slot int32, kind pipeKind, tok codec.Token, now int64) {
		switch kind {
		case pipeAcquire:
			acq.Key = keys[slot]
			conn.queue(&acq)
		case pipeRelease:
			rel.Key, rel.Token = keys[slot], tok
			conn.queue(&rel)
		case pipePing:
			conn.queue(&pingReq)
		}
		q.push(pipeEntry{slot: slot, kind: kind, sent: now})
	}
	first := pipeAcquire
	if ping {
		first = pipePing
	}
	now := int64(time.Since(r.start))
	for j := range depth {
		issue(int32(j), first, codec.Token{}, now)
	}
	if err := conn.flush(); err != nil {
		r.fail(err)
		return replies
	}
	for q.n > 0 {
		if err := conn.fill(); err != nil {
			r.fail(err)
			return replies
		}
		recv := int64(time.Since(r.start))
		stopping := r.stop.Load()
		// Follow-ups are queued with a provisional send time and stamped
		// just before the write below.
		mark := q.n
		for {
			line, ok := conn.bufferedLine()
			if !ok {
				break
			}
			e, ok := q.pop()
			if !ok {
				r.fail(fmt.Errorf("pipeline: reply %q with no request in flight", line))
				return replies
			}
			mark--
			replies++
			rep, err := conn.parse(line, "pipeline")
			if err != nil {
				r.fail(err)
				continue
			}
			done := func() {
				rec.Record(recv - e.sent)
				ctr.Add(1)
			}
			switch e.kind {
			case pipeAcquire:
				if isGrant(rep) {
					done()
					issue(e.slot, pipeRelease, rep.Token, 0)
				} else {
					r.fail(unexpected("acquire", rep))
					if !stopping {
						issue(e.slot, pipeAcquire, codec.Token{}, 0)
					}
				}
			case pipeRelease:
				if isOK(rep) {
					done()
				} else {
					r.fail(unexpected("release", rep))
				}
				if !stopping {
					issue(e.slot, pipeAcquire, codec.Token{}, 0)
				}
			case pipePing:
				if isOK(rep) {
					done()
				} else {
					r.fail(unexpected("ping", rep))
				}
				if !stopping {
					issue(e.slot, pipePing, codec.Token{}, 0)
				}
			}
		}
		sent := int64(time.Since(r.start))
		for i := max(mark, 0); i < q.n; i++ {
			q.buf[(q.head+i)%len(q.buf)].sent = sent
		}
		if err := conn.flush(); err != nil {
			r.fail(err)
			return replies
		}
	}
	return replies
}
