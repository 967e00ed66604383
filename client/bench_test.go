package client_test

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/lockreactor/dflockd/client"
	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// Acquire+release round trips on one connection: one call at a time (the
// baseline, and all dflockd's client can do on a Conn) against many
// goroutines whose calls are pipelined on the same connection.
func BenchmarkAcquireRelease(b *testing.B) {
	srv := reactortest.Start(b)
	ctx := context.Background()

	b.Run("one-at-a-time", func(b *testing.B) {
		c, err := client.Dial(srv.Addr)
		if err != nil {
			b.Fatal(err)
		}
		defer func() { _ = c.Close() }()
		b.ReportAllocs()
		for b.Loop() {
			g, err := c.Acquire(ctx, "seq", 0)
			if err != nil {
				b.Fatal(err)
			}
			if err := c.Release(ctx, g); err != nil {
				b.Fatal(err)
			}
		}
	})

	b.Run("compat-one-at-a-time", func(b *testing.B) {
		c, err := client.Dial(srv.Addr)
		if err != nil {
			b.Fatal(err)
		}
		defer func() { _ = c.Close() }()
		b.ReportAllocs()
		for b.Loop() {
			tok, _, err := client.Acquire(c, "compat", 0)
			if err != nil {
				b.Fatal(err)
			}
			if err := client.Release(c, "compat", tok); err != nil {
				b.Fatal(err)
			}
		}
	})

	for _, goroutines := range []int{4, 16, 64} {
		b.Run(fmt.Sprintf("pipelined/goroutines=%d", goroutines), func(b *testing.B) {
			c, err := client.Dial(srv.Addr)
			if err != nil {
				b.Fatal(err)
			}
			defer func() { _ = c.Close() }()
			var next atomic.Int64
			b.ReportAllocs()
			b.SetParallelism(max(goroutines/runtime.GOMAXPROCS(0), 1))
			b.RunParallel(func(pb *testing.PB) {
				key := fmt.Sprintf("pipe-%d", next.Add(1))
				for pb.Next() {
					g, err := c.Acquire(ctx, key, 0)
					if err != nil {
						b.Error(err)
						return
					}
					if err := c.Release(ctx, g); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
