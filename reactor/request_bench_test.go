package reactor_test

import (
	"bufio"
	"net"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// lockRoundTrip starts an in-process server (request metrics on or off)
// and returns a function doing one acquire + release round trip over
// loopback. The client reuses its buffers and allocates nothing, so
// allocations counted process-wide around it are the server's.
func lockRoundTrip(tb testing.TB, metrics bool) func() {
	srv := reactortest.Start(tb, func(c *reactortest.Config) {
		c.Server.Metrics = metrics
		c.Server.Logger = zap.NewNop()
	})
	nc, err := net.DialTimeout("tcp", srv.Addr, 5*time.Second)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = nc.Close() })
	r := bufio.NewReader(nc)
	acquire := []byte("l\nbench-key\n10\n")
	release := []byte("r\nbench-key\n00000000000000000000000000000000\n")
	const tokenAt = len("r\nbench-key\n")
	roundTrip := func(req []byte) []byte {
		if _, err := nc.Write(req); err != nil {
			tb.Fatal(err)
		}
		line, err := r.ReadSlice('\n')
		if err != nil {
			tb.Fatal(err)
		}
		return line
	}
	return func() {
		grant := roundTrip(acquire) // "ok <32 hex> 33\n"
		if len(grant) < 35 || grant[0] != 'o' {
			tb.Fatalf("acquire: %q", grant)
		}
		copy(release[tokenAt:], grant[3:35])
		if reply := roundTrip(release); string(reply) != "ok\n" {
			tb.Fatalf("release: %q", reply)
		}
	}
}

// BenchmarkRequestPath measures an acquire + release round trip with
// request metrics off and on; allocs/op should stay ~0 either way.
func BenchmarkRequestPath(b *testing.B) {
	for _, on := range []bool{false, true} {
		name := map[bool]string{false: "metrics=off", true: "metrics=on"}[on]
		b.Run(name, func(b *testing.B) {
			op := lockRoundTrip(b, on)
			b.ReportAllocs()
			for b.Loop() {
				op()
			}
		})
	}
}
