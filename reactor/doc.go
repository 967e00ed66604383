// Package reactor serves the dflockd protocol: it owns connections, their
// sessions, read and write timeouts, backpressure, TLS and drain, and drives
// lockcore with the requests codec decodes.
//
// Plain TCP connections are served by gnet event loops: a blocked acquirer
// is a parked waiter in lockcore, never a blocked goroutine. The session
// (per-connection protocol state) is transport-agnostic; the gnet adapter
// feeds it from Peek/Discard, and the TLS adapter (stdlib crypto/tls, two
// goroutines per connection) feeds it from a byte slice.
//
// Accepting is ours, not gnet's: gnet's acceptor stops the whole engine on
// EMFILE, so a connection flood past the open-file limit would kill the
// server. Our accept loop caps connections below the limit, survives EMFILE,
// and hands each accepted connection to an event loop with
// gnet.Client.EnrollAsync (a dflockd patch of gnet: EnrollContext without
// waiting for the loop to register the connection).
//
// With Config.Metrics the sessions count replies and time read events into
// per-loop sinks (instrument.go) that Server.Metrics sums on demand; the
// Prometheus names live in reactor/metrics, not here.
//
// The package holds no lock semantics and no wire literals: those live in
// lockcore and codec.
package reactor
