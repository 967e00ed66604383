// Package lockcore owns the lock server's state: exclusive locks and counting
// semaphores with strict FIFO queues, leases, two-phase enqueue/wait, the
// fencing counter, the global key budget and the timers that resolve
// acquire timeouts and lease expiry.
//
// It never blocks and knows nothing about sockets, gnet, logging or wire
// framing. A request that cannot be answered at once is parked: it becomes a
// waiter node linked into its key's FIFO queue, its owner's list and a
// timing-wheel slot, and the caller is told "parked". When the waiter is
// granted or times out, its result is handed to the Continuation the caller
// passed in — always after the shard lock has been released, exactly once.
//
// Layers:
//   - core is one shard: a plain single-owner struct with no mutex, no
//     goroutine, no clock and no global randomness. Time (now, in
//     nanoseconds on a monotonic scale the caller chooses) and the salt
//     source are inputs, so tests drive it by hand.
//   - Table is the thin concurrent wrapper: N shards picked by a hash of
//     (namespace, key), each a core behind its own mutex, plus the driver
//     goroutine that advances every shard's timing wheel and prunes idle
//     keys. All exported methods of Table are safe for concurrent use.
//
// Locks and semaphores live in separate namespaces; a lock is a semaphore of
// limit 1. Reply statuses are codec.Code values, the one vocabulary shared
// with the wire.
package lockcore
