// Package chaos is the reliability suite's workload, history and checkers.
//
// Run drives a dflockd-protocol server with many raw connections doing
// random operations on a small set of locks and semaphores — acquires with
// random timeouts (0 included) and short leases, two-phase e/w, renewals,
// releases, holds past the lease, abrupt disconnects (plain close and TCP
// reset) while holding or parked, pipelined bursts, garbage requests, ping
// and stats — and records a History: for every request the client,
// connection, key, send time, reply and reply time.
//
// The checkers (Check and the Check* functions) judge a History using only
// facts that hold whatever the network delay: a grant happened after its
// request was sent and before its reply arrived; a hold ends no earlier
// than its release was sent, its connection was closed, or its lease —
// counted from the send time of the request that set it — ran out. See
// CheckExclusion, CheckFIFO and CheckReplies for what each checks and what
// it cannot see.
//
// The linearizability half (linear.go) records short histories of
// non-blocking operations and checks them against a sequential model of the
// lock table with github.com/anishathalye/porcupine.
//
// The package knows the wire only through codec, and the server only as an
// address: it runs against the in-process test server and against a
// subprocess alike.
package chaos
