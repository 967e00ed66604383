package loadtest

import (
	"bytes"
	"context"
	"net"
	"runtime"
	"testing"
	"time"
)

// plainResponder is an allocation-free responder (a goroutine per
// connection, fixed buffers) answering every request with the ceiling's
// reply, so that the mallocs of a run are the load generator's own.
func plainResponder(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer func() { _ = c.Close() }()
				buf := make([]byte, 64<<10)
				out := bytes.Repeat(ceilingReply, 2048)
				nl := 0
				for {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					reqs := 0
					for _, b := range buf[:n] {
						if b == '\n' {
							if nl++; nl == 3 {
								nl, reqs = 0, reqs+1
							}
						}
					}
					for reqs > 0 {
						k := min(reqs, 2048)
						if _, err := c.Write(out[:k*len(ceilingReply)]); err != nil {
							return
						}
						reqs -= k
					}
				}
			}()
		}
	}()
	t.Cleanup(func() { _ = ln.Close() })
	return ln.Addr().String()
}

// mallocsPerOp runs fn and returns the heap allocations per op it
// reports, setup included (so runs must be long enough to amortise it).
func mallocsPerOp(t *testing.T, fn func() int64) float64 {
	t.Helper()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	ops := fn()
	runtime.ReadMemStats(&after)
	if ops == 0 {
		t.Fatal("no ops")
	}
	return float64(after.Mallocs-before.Mallocs) / float64(ops)
}

// The load generator's hot loops allocate nothing per request: what a run
// allocates is setup (connections, buffers, histograms) and the throughput
// samples, amortised to nearly nothing over many ops.
func TestGeneratorAllocsPerOp(t *testing.T) {
	if testing.Short() {
		t.Skip("timing-dependent")
	}
	addr := plainResponder(t)
	ctx := context.Background()
	c := Common{Servers: []string{addr}, Key: "alloc", Timeout: 1, Lease: 1, Interval: time.Second}
	for _, tc := range []struct {
		name string
		run  func() int64
	}{
		{"bench", func() int64 {
			r, err := Bench(ctx, BenchConfig{Common: c, Workers: 2, Rounds: 5000})
			if err != nil || r.Errors > 0 {
				t.Fatalf("bench: %v %v", err, r.ErrorSamples)
			}
			return r.Requests
		}},
		{"pipeline", func() int64 {
			c := c
			c.Duration = 300 * time.Millisecond
			r, err := Pipeline(ctx, PipelineConfig{Common: c, Connections: 2, Depth: 32})
			if err != nil || r.Errors > 0 {
				t.Fatalf("pipeline: %v %v", err, r.ErrorSamples)
			}
			return r.Requests
		}},
		{"rate", func() int64 {
			c := c
			c.Duration = 500 * time.Millisecond
			r, err := Rate(ctx, RateConfig{Common: c, Rate: 20000, Connections: 2})
			if err != nil || r.Errors > 0 {
				t.Fatalf("rate: %v %v", err, r.ErrorSamples)
			}
			return r.Requests
		}},
	} {
		per := mallocsPerOp(t, tc.run)
		t.Logf("%s: %.4f mallocs per request, setup included", tc.name, per)
		if per > 0.1 {
			t.Errorf("%s: %.3f mallocs per request: the hot loop allocates", tc.name, per)
		}
	}
}

// BenchmarkInProcessServer runs the generator against an in-process
// dflockd server and reports the heap allocations per wire request of the
// whole process: the generator allocates next to nothing
// (TestGeneratorAllocsPerOp), so this is the server's per-request
// allocation rate.
func BenchmarkInProcessServer(b *testing.B) {
	srv := startServer(b)
	ctx := context.Background()
	for _, sc := range []struct {
		name string
		run  func(n int) (*Result, error)
	}{
		{"bench", func(n int) (*Result, error) {
			return Bench(ctx, BenchConfig{Common: Common{Servers: []string{srv.Addr}, Key: "b", Timeout: 1, Lease: 10}, Workers: 4, Rounds: max(n/4, 1)})
		}},
		{"pipeline-ping", func(n int) (*Result, error) {
			return Pipeline(ctx, PipelineConfig{Common: Common{Servers: []string{srv.Addr}, Key: "p", Duration: 300 * time.Millisecond}, Connections: 2, Depth: 32, Op: "ping"})
		}},
		{"pipeline-lock", func(n int) (*Result, error) {
			return Pipeline(ctx, PipelineConfig{Common: Common{Servers: []string{srv.Addr}, Key: "p", Timeout: 1, Lease: 10, Duration: 300 * time.Millisecond}, Connections: 2, Depth: 32})
		}},
	} {
		b.Run(sc.name, func(b *testing.B) {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			res, err := sc.run(b.N)
			runtime.ReadMemStats(&after)
			if err != nil || res.Errors > 0 {
				b.Fatalf("%v %v", err, res.ErrorSamples)
			}
			b.ReportMetric(float64(after.Mallocs-before.Mallocs)/float64(res.Requests), "mallocs/req")
			b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/float64(res.Requests), "B/req")
			b.ReportMetric(res.Throughput, "ops/s")
		})
	}
}
