// Package client is the Go client of the dflockd lock server: distributed
// locks and counting semaphores with FIFO queues, leases, two-phase
// acquisition and fencing tokens.
//
// It is a drop-in replacement for dflockd's own Go client — code written
// against github.com/mtingers/dflockd/client ports by changing the import
// path — and adds a context-first API on top.
//
// # Locks and semaphores
//
// A Lock is configured by its fields and held with Acquire and Release:
//
//	l := &client.Lock{Key: "my-key", Servers: []string{"127.0.0.1:6388"}}
//	ok, err := l.Acquire(ctx) // waits up to AcquireTimeout (default 10 s)
//	if err != nil { ... }     // ctx ended, server unreachable, ErrMaxLocks, ...
//	if !ok { ... }            // the server's timeout ran out: someone else holds it
//	defer l.Release(ctx)
//
// While held, the lease (LeaseTTL, or the server's default of 33 s) is
// renewed in the background every RenewRatio of it (default half), each
// renewal up to RenewJitter of that early at random (default a tenth). TryAcquire
// does not wait. Close drops the connection without releasing; the server
// then releases (with auto-release on, its default). A Semaphore is the same
// with a Limit: up to Limit holders at once. Lock and Semaphore share one
// implementation; a lock is the one-holder case in its own namespace
// (locks and semaphores of the same key are different resources).
//
// # Losing a lock
//
// A lease-based lock can be lost while its holder still runs: renewal
// fails, the connection breaks, the server restarts, or the lease runs out
// before a renewal is answered (a partition). The client notices each of
// these as soon as it can — a broken connection at once, an unanswered
// renewal when the locally measured lease ends — and then:
//   - closes the channel from Done (closed whenever the hold ends; Err
//     then matches ErrLost and the cause);
//   - calls OnRenewError with that error, once;
//   - makes the next Release return it (even if the Lock was acquired
//     again meanwhile), so a critical section that ran unprotected does
//     not go unnoticed.
//
// No client can make losing impossible, only detectable, so writes to
// other systems should be fenced: Fence returns the grant's fence number,
// a server-wide counter that grows with every grant. Send it with each
// write and have the storage refuse fences lower than one it has seen; the
// Lock.Fence example shows the pattern.
//
// # Two-phase acquisition
//
// Enqueue joins the key's queue and returns at once with StatusAcquired
// (the key was free; the lock is held) or StatusQueued; Wait then waits
// for the grant. Between the two the caller keeps its place in line while
// it does something else — typically telling another system that it is
// next. The Lock's connection sends a ping when idle (Heartbeat, default
// 20 s) so that the server's read timeout does not drop the queued place.
//
// # Connections
//
// Conn is one connection, safe for concurrent use. Requests from many
// goroutines are pipelined; one reader goroutine matches the server's
// in-order replies to a FIFO of pending calls. Every Conn method that can
// wait takes a context; its server-side timeout is capped at the context's
// deadline. A server-side timeout is ErrTimeout, distinct from ctx.Err().
// A call abandoned because its context ended does not close the
// connection (which would drop every lock the connection holds): its late
// grant is released as soon as it arrives, and a late "queued" leaves the
// queue. Until then a new acquire, enqueue or wait for the same key on the
// same Conn is held back (within its own context), so that it is not
// queued on the server behind the abandoned grant. Because the server
// answers in order, a blocked acquire holds back the replies to later
// requests on the same connection; keep long waits and the renewals of
// held locks on different connections (Lock and Semaphore use one
// connection per hold). Requests are written by a goroutine of the Conn,
// so a caller whose context ends returns at once even while the socket
// does not drain.
//
// The dflockd-compatible functions (Acquire, Release, Renew, Enqueue, Wait
// and the Sem* family, with WithLeaseTTL) are single requests on a Conn
// without a context, with tokens as strings. The Conn methods return a
// Grant: key, token, lease, namespace, and its Fence. WithLimit selects the
// semaphore namespace. DialContext takes WithTLS, WithAuth, WithHeartbeat
// and WithDialer; Dial and DialTLS are its dflockd-compatible shorthands.
//
// Timeouts and leases are whole seconds on the wire: sub-second timeouts
// round up (500 ms waits one second; zero tries once).
//
// # Errors
//
// Each error status has a sentinel, returned as is: ErrTimeout,
// ErrMaxLocks, ErrMaxWaiters, ErrLimitMismatch, ErrNotQueued,
// ErrAlreadyQueued, ErrLeaseExpired, ErrAuth, ErrDraining (which also
// matches ErrServer, as dflockd's client reported it), and ErrServer,
// wrapped with the request, for a bare `error` reply (unknown or expired
// token, say; to `auth` it also matches ErrAuth, as in dflockd's client). The client adds ErrClosed (the connection was closed or
// broke; closed by this process — Close, or a Release or new Acquire
// ending a call in flight — it also matches net.ErrClosed, as dflockd's
// client's error did), ErrLost and ErrInvalid (an argument the server
// would reject, which also matches ErrServer, or a shard function out of
// range; nothing was sent). Compare with errors.Is.
//
// # Several servers
//
// With several Servers, each key lives on the one that ShardFunc picks.
// The default, CRC32Shard, is byte-compatible with the Python and
// TypeScript clients. JumpShard and RendezvousShard move few keys when the
// fleet grows. Changing the function or the list moves keys, and a lock
// held across the change does not exclude clients that already use the new
// mapping: see ShardFunc before changing either.
//
// # Protocol
//
// The package speaks the wire only through package codec; it holds no
// protocol text of its own.
package client
