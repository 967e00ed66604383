// Package loadtest is the benchmark harness for dflockd-protocol servers:
// this server, dflockd itself, or anything else that speaks the protocol.
//
// It speaks the wire only through package codec, on raw persistent
// connections: requests are encoded into reused buffers and replies split
// out of fixed read buffers, so the generator's hot loops allocate nothing
// per request (TestGeneratorAllocsPerOp) and do not become the bottleneck
// they measure.
//
// Scenarios (each a Config type with a Run method, and a function):
//
//   - Bench: dflockd's cmd/bench — workers × rounds of acquire+release, each
//     worker on a random key of its own, keys sharded over servers by CRC32.
//   - Contended: every worker on one key; FIFO hand-off rate, hand-off
//     latency and fairness (grants per worker, Jain's index).
//   - Pipeline: D requests in flight per connection.
//   - Rate: an open loop at a fixed rate, latency measured from each op's
//     intended send time (no coordinated omission).
//   - Conns: many idle connections from several 127.0.0.x source addresses;
//     does every one still answer ping; server RSS per connection.
//   - Waiters: N waiters time out on a held key (how late are the timeout
//     replies), and lease-expiry hand-offs (how late after the lease end is
//     the next waiter granted), timed with kernel receive timestamps.
//
// AB runs a scenario against two servers alternately (A B A B …) and
// compares medians, so comparisons hold on a noisy shared machine. The
// ceiling server (StartCeiling) answers every request with a fixed reply of
// the right shape and does nothing else: AB against it measures a server
// as a fraction of what the machine can do for this request/response shape.
//
// Latencies go into HDR histograms (exact mean, stdev, min and max beside
// them); throughput is sampled over time; server CPU per request and RSS
// come from /proc/PID when the server's PID is known. Results print as text
// (the first block in the shape of dflockd's cmd/bench report), as JSON,
// and as an HTML report with charts (go-echarts).
//
// Main is the dflockd-loadtest command line.
package loadtest
