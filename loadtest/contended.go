package loadtest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lockreactor/dflockd/codec"
)

// ContendedConfig is the contended scenario: every worker loops acquire +
// release on the same key, so the server hands the lock from one queued
// waiter to the next (strict FIFO). It measures the hand-off rate, the
// hand-off latency (release sent → next grant received) and fairness
// (grants per worker).
type ContendedConfig struct {
	Common
	// Workers is the number of contending workers (default 10), one
	// connection each.
	Workers int
}

func (c *ContendedConfig) Name() string                             { return "contended" }
func (c *ContendedConfig) Settings() *Common                        { return &c.Common }
func (c *ContendedConfig) Run(ctx context.Context) (*Result, error) { return Contended(ctx, *c) }

// Contended runs the contended scenario.
func Contended(ctx context.Context, cfg ContendedConfig) (*Result, error) {
	if cfg.Workers <= 0 {
		cfg.Workers = 10
	}
	if cfg.Duration <= 0 {
		cfg.Duration = 3 * time.Second
	}
	if len(cfg.Servers) == 0 {
		return nil, errors.New("contended: no servers")
	}
	key := []byte(cfg.Key + "_contended")
	addr := cfg.Servers[Shard(key, len(cfg.Servers))]
	addrs := make([]string, cfg.Workers)
	for i := range addrs {
		addrs[i] = addr
	}
	conns, err := dialAll(ctx, addrs, 64, true)
	if err != nil {
		return nil, fmt.Errorf("contended: %w", err)
	}
	defer closeAll(conns)

	r := newRun(&cfg.Common, "contended", cfg.Workers)
	opHist, handHist := NewHist(), NewHist()
	grants := make([]int64, cfg.Workers)
	reqs := make([]int64, cfg.Workers)
	// lastRelease is when (ns since start) the latest release was sent:
	// with one key granted in FIFO order, the next grant is the hand-off
	// that release triggered.
	var lastRelease atomic.Int64
	lastRelease.Store(-1)
	startGate := make(chan struct{})
	var wg sync.WaitGroup
	for w := range cfg.Workers {
		wg.Go(func() {
			<-startGate
			op, hand := NewRecorder(opHist), NewRecorder(handHist)
			defer op.Flush()
			defer hand.Flush()
			conn := conns[w]
			acq := codec.Request{Cmd: codec.CmdLock, Key: key, Timeout: cfg.Timeout, Lease: cfg.Lease}
			rel := codec.Request{Cmd: codec.CmdRelease, Key: key}
			for !r.stop.Load() {
				t0 := time.Now()
				rep, err := conn.roundTrip(&acq, "acquire")
				if err != nil {
					r.fail(err)
					if isIOError(err) {
						return
					}
					continue
				}
				reqs[w]++
				if !isGrant(rep) {
					r.fail(unexpected("acquire", rep))
					continue
				}
				got := int64(time.Since(r.start))
				if lr := lastRelease.Load(); lr >= 0 {
					hand.Record(got - lr)
				}
				grants[w]++
				rel.Token = rep.Token
				lastRelease.Store(int64(time.Since(r.start)))
				rep, err = conn.roundTrip(&rel, "release")
				if err != nil {
					r.fail(err)
					if isIOError(err) {
						return
					}
					continue
				}
				reqs[w]++
				if !isOK(rep) {
					r.fail(unexpected("release", rep))
					continue
				}
				op.Record(int64(time.Since(t0)))
				r.counters[w].Add(1)
			}
		})
	}
	r.begin(ctx, cfg.Duration)
	release := closeOnCancel(ctx, conns, deadlineFor(r.start, &cfg.Common))
	close(startGate)
	wg.Wait()
	release()
	var requests int64
	for _, n := range reqs {
		requests += n
	}
	cpu := r.end(requests)
	res := r.result("contended", r.total(), requests, cpu)
	res.Header = fmt.Sprintf("contended: %d workers on key %q for %v", cfg.Workers, key, cfg.Duration)
	res.Params = map[string]any{"workers": cfg.Workers, "key": string(key), "timeout_s": cfg.Timeout,
		"lease_s": cfg.Lease, "duration_s": cfg.Duration.Seconds()}
	res.addHist("op", opHist)
	res.addHist("handoff", handHist)
	res.Fairness = newFairness(grants)
	res.figure("throughput", "hand-offs", "grants/s", res.Throughput, res.Ops > 0, true, true)
	res.latencyFigures("handoff", "hand-off latency", true)
	res.latencyFigures("op", "op latency", false)
	res.figure("jain", "fairness (Jain index)", "", res.Fairness.Jain, res.Ops > 0, true, true)
	res.cpuFigures()
	return res, nil
}
