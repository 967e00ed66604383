package chaos_test

import (
	"context"
	"flag"
	"fmt"
	"runtime"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/lockreactor/dflockd/loadtest/chaos"
	"github.com/lockreactor/dflockd/reactor/reactortest"
)

var (
	chaosOps      = flag.Int("chaos.ops", 0, "requests of the chaos test (0: a short run for make test)")
	chaosRound    = flag.Int("chaos.round", 100_000, "requests per round: each round uses fresh keys, is checked, then forgotten")
	chaosClients  = flag.Int("chaos.clients", 64, "concurrent connections of the chaos test")
	chaosSeed     = flag.Int64("chaos.seed", 0, "seed of the chaos test (0: from the clock, printed)")
	chaosAddr     = flag.String("chaos.addr", "", "run the chaos test against this server instead of an in-process one")
	chaosDuration = flag.Duration("chaos.duration", 0, "time bound of the chaos test (0: 90s, or 60m with -chaos.ops)")
)

func seed() int64 {
	if *chaosSeed != 0 {
		return *chaosSeed
	}
	return time.Now().UnixNano()
}

func quietLogger(t testing.TB) *zap.Logger {
	return zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)).Named("server")
}

func heapInuse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// TestChaos runs the chaos workload against the in-process server in
// rounds, checks each round's history, and checks that the server returns
// to rest (no holder, no waiter, one connection) and that goroutines and
// heap return near their baseline.
func TestChaos(t *testing.T) {
	total, limit := *chaosOps, *chaosDuration
	if total == 0 {
		total = 50_000
		if testing.Short() {
			total = 10_000
		}
		if limit == 0 {
			limit = 90 * time.Second
		}
	}
	if limit == 0 {
		limit = 60 * time.Minute
	}
	s := seed()
	t.Logf("chaos seed %d (rerun with -chaos.seed=%d)", s, s)
	addr := *chaosAddr
	if addr == "" {
		addr = reactortest.Start(t, func(c *reactortest.Config) { c.Server.Logger = quietLogger(t) }).Addr
	}
	obs, err := chaos.Observe(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = obs.Close() }()
	baseG, baseHeap := runtime.NumGoroutine(), heapInuse()

	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	start := time.Now()
	done, violations := 0, 0
	var sum chaos.Stats
	for round := 0; done < total && ctx.Err() == nil; round++ {
		cfg := chaos.Config{
			Addr: addr, Seed: s + int64(round), Clients: *chaosClients,
			Ops: min(*chaosRound, total-done), Duration: limit - time.Since(start),
			KeyPrefix: fmt.Sprintf("r%d-", round),
		}
		h, st, err := chaos.Run(ctx, cfg)
		if err != nil {
			t.Fatalf("round %d (seed %d): %v", round, cfg.Seed, err)
		}
		vs := chaos.Check(h)
		_, leak := obs.WaitQuiet(30*time.Second, 1)
		vs = append(vs, leak...)
		done += int(st.Ops)
		violations += len(vs)
		sum.Add(st)
		t.Logf("round %d seed %d: %s; %d violations", round, cfg.Seed, st, len(vs))
		for i, v := range vs {
			if i == 20 {
				t.Errorf("... %d more", len(vs)-20)
				break
			}
			t.Errorf("seed %d: %s", cfg.Seed, h.Describe(v))
		}
		if len(vs) > 0 {
			break
		}
	}
	el := time.Since(start)
	t.Logf("chaos total: %s in %v (%.0f ops/s); %d violations; seed %d", sum, el.Round(time.Millisecond), float64(sum.Ops)/el.Seconds(), violations, s)
	if *chaosOps > 0 && done < total {
		t.Errorf("only %d of %d operations within %v", done, total, limit)
	}

	if *chaosAddr != "" {
		return // the server is not this process
	}
	// Goroutines and heap back near their baseline.
	deadline := time.Now().Add(20 * time.Second)
	for runtime.NumGoroutine() > baseG+2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if g := runtime.NumGoroutine(); g > baseG+2 {
		t.Errorf("leak: %d goroutines after the run, %d before (seed %d)", g, baseG, s)
	}
	if grew := int64(heapInuse()) - int64(baseHeap); grew > 32<<20 {
		t.Errorf("leak: heap in use grew by %d KiB over the run (seed %d)", grew>>10, s)
	} else {
		t.Logf("heap in use %+d KiB, goroutines %d -> %d", grew>>10, baseG, runtime.NumGoroutine())
	}
}
