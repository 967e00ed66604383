package loadtest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/lockreactor/dflockd/codec"
)

// BenchConfig is the bench scenario: dflockd's cmd/bench. Each worker
// takes a random key of its own (prefix_NNNNNNN, sharded over the servers
// by CRC32) and repeats acquire + release on persistent connections; one
// op is one acquire+release pair.
type BenchConfig struct {
	Common
	// Workers is the number of concurrent workers (default 10).
	Workers int
	// Rounds is ops per worker (default 50); ignored when Duration > 0.
	Rounds int
	// Connections per worker (0 = 1), used round-robin.
	Connections int
}

func (c *BenchConfig) Name() string                             { return "bench" }
func (c *BenchConfig) Settings() *Common                        { return &c.Common }
func (c *BenchConfig) Run(ctx context.Context) (*Result, error) { return Bench(ctx, *c) }

// workerKey is dflockd cmd/bench's per-worker key: prefix_ and a random
// seven-digit number.
func workerKey(prefix string) []byte {
	return fmt.Appendf(nil, "%s_%d", prefix, rand.IntN(9900000)+100000)
}

// Bench runs the bench scenario.
func Bench(ctx context.Context, cfg BenchConfig) (*Result, error) {
	if cfg.Workers <= 0 {
		cfg.Workers = 10
	}
	if cfg.Duration > 0 {
		cfg.Rounds = 0 // timed: rounds are unlimited
	} else if cfg.Rounds <= 0 {
		cfg.Rounds = 50
	}
	if len(cfg.Servers) == 0 {
		return nil, errors.New("bench: no servers")
	}
	nconns := max(cfg.Connections, 1)
	keys := make([][]byte, cfg.Workers)
	addrs := make([]string, 0, cfg.Workers*nconns)
	for w := range keys {
		keys[w] = workerKey(cfg.Key)
		addr := cfg.Servers[Shard(keys[w], len(cfg.Servers))]
		for range nconns {
			addrs = append(addrs, addr)
		}
	}
	conns, err := dialAll(ctx, addrs, 64, true)
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	defer closeAll(conns)

	r := newRun(&cfg.Common, "bench", cfg.Workers)
	if cfg.Duration <= 0 {
		r.progressMax = int64(cfg.Workers) * int64(cfg.Rounds)
	}
	hist := NewHist()
	reqs := make([]int64, cfg.Workers)
	startGate := make(chan struct{})
	var wg sync.WaitGroup
	for w := range cfg.Workers {
		wg.Go(func() {
			<-startGate
			reqs[w] = benchWorker(r, w, conns[w*nconns:(w+1)*nconns], keys[w], cfg.Rounds, &cfg.Common, NewRecorder(hist))
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
	res := r.result("bench", r.total(), requests, cpu)
	if cfg.Duration > 0 {
		res.Header = fmt.Sprintf("bench: %d workers for %v (key_prefix=%q, conns/worker=%d)", cfg.Workers, cfg.Duration, cfg.Key, nconns)
	} else {
		res.Header = fmt.Sprintf("bench: %d workers x %d rounds (key_prefix=%q, conns/worker=%d)", cfg.Workers, cfg.Rounds, cfg.Key, nconns)
	}
	res.Params = map[string]any{"workers": cfg.Workers, "rounds": cfg.Rounds, "connections": nconns, "key": cfg.Key,
		"timeout_s": cfg.Timeout, "lease_s": cfg.Lease, "duration_s": cfg.Duration.Seconds()}
	res.addHist("op", hist)
	res.figure("throughput", "throughput", "ops/s", res.Throughput, res.Ops > 0, true, true)
	res.latencyFigures("op", "op latency", true)
	res.cpuFigures()
	return res, nil
}

// benchWorker runs one worker's acquire/release loop and returns the
// number of requests answered. It allocates nothing per op.
func benchWorker(r *run, w int, conns []*wconn, key []byte, rounds int, c *Common, rec *Recorder) (requests int64) {
	defer rec.Flush()
	acq := codec.Request{Cmd: codec.CmdLock, Key: key, Timeout: c.Timeout, Lease: c.Lease}
	rel := codec.Request{Cmd: codec.CmdRelease, Key: key}
	ctr := &r.counters[w]
	for i := 0; rounds <= 0 || i < rounds; i++ {
		if r.stop.Load() {
			return requests
		}
		conn := conns[i%len(conns)]
		t0 := time.Now()
		rep, err := conn.roundTrip(&acq, "acquire")
		if err != nil {
			r.fail(err)
			if isIOError(err) {
				return requests
			}
			continue
		}
		requests++
		if !isGrant(rep) {
			r.fail(unexpected("acquire", rep))
			continue
		}
		rel.Token = rep.Token
		rep, err = conn.roundTrip(&rel, "release")
		if err != nil {
			r.fail(err)
			if isIOError(err) {
				return requests
			}
			continue
		}
		requests++
		if !isOK(rep) {
			r.fail(unexpected("release", rep))
			continue
		}
		rec.Record(int64(time.Since(t0)))
		ctr.Add(1)
	}
	return requests
}

// isIOError tells a broken connection from a wrong reply.
func isIOError(err error) bool {
	var bad *badReplyError
	return !errors.As(err, &bad)
}
