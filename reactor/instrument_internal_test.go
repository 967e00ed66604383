package reactor

import (
	"testing"

	"github.com/lockreactor/dflockd/codec"
	"github.com/lockreactor/dflockd/lockcore"
)

type nopTransport struct{}

func (nopTransport) wake() {}

// BenchmarkSessionRequest is the request path without sockets: decode, run
// against the lock table, count, reply, and the per-read-event metrics
// work (latency batch and busy time), with request metrics off and on.
// The request is an `l` with timeout 0 on a key another owner holds: it
// answers timeout at once and leaves the table as it was.
func BenchmarkSessionRequest(b *testing.B) {
	for _, on := range []bool{false, true} {
		name := map[bool]string{false: "metrics=off", true: "metrics=on"}[on]
		b.Run(name, func(b *testing.B) {
			tbl := lockcore.New(lockcore.Config{})
			cfg := Config{Metrics: on}
			cfg.setDefaults()
			srv := &Server{cfg: cfg, table: tbl, log: cfg.Logger}
			if on {
				for i := range srv.tlsSinks {
					srv.tlsSinks[i] = new(sink)
				}
			}
			holder := lockcore.NewOwner(1)
			if r := tbl.Acquire(holder, lockcore.Locks, []byte("k"), 0, 1, 0, nil, tbl.Now()); r.Code != codec.CodeOK {
				b.Fatal(r.Code)
			}
			var s session
			s.init(srv, nopTransport{}, tbl.Now())
			s.mt = srv.meteredForTLS(1)
			lm := &loopMetrics{}
			lm.sink = new(sink)
			if !on {
				lm = nil
			}
			in := []byte("l\nk\n0\n")
			b.ReportAllocs()
			for b.Loop() {
				now := tbl.Now()
				if n := s.handle(in, now, 64<<10); n != len(in) {
					b.Fatal(n)
				}
				if lm != nil { // what OnTraffic's deferred endTraffic adds
					s.mt.endBatch(0)
					lm.endTraffic(srv, now)
				}
				if string(s.out) != "timeout\n" {
					b.Fatalf("%q", s.out)
				}
				s.out = s.out[:0]
			}
		})
	}
}
