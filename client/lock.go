package client

import (
	"context"
	"crypto/tls"
	"time"
)

// Lock is a distributed mutual-exclusion lock on one dflockd server, with
// its lease renewed in the background while held. Configure it with the
// exported fields (read at every Acquire and Enqueue) and do not copy it
// after first use.
//
// Each hold uses a connection of its own, dialled by Acquire or Enqueue and
// closed by Release, Close, a timeout or a failure. Acquire, Enqueue and
// Wait are meant to be called from one goroutine at a time; Release, Close
// and the accessors may be called from any goroutine, also while an
// Acquire or Wait is in flight (which they end), including one still
// connecting. A nil ctx is taken as context.Background().
type Lock struct {
	// Key names the lock: non-empty, no whitespace, at most 256 bytes.
	Key string
	// AcquireTimeout is how long Acquire waits in the queue (default 10 s;
	// rounded up to whole seconds and capped at the context's deadline).
	AcquireTimeout time.Duration
	// LeaseTTL is the lease asked for at acquire and at each renewal, in
	// seconds (0 = the server's default, 33 s unless configured).
	LeaseTTL int
	// Servers are the host:port addresses of the fleet (default
	// 127.0.0.1:6388); ShardFunc picks the one that owns Key.
	Servers []string
	// ShardFunc maps Key to an index into Servers (default CRC32Shard).
	ShardFunc ShardFunc
	// RenewRatio is the fraction of the lease after which it is renewed
	// (default 0.5; values outside (0, 1) take the default).
	RenewRatio float64
	// RenewJitter is the most, as a fraction of that interval, by which
	// each renewal comes early, chosen at random for each renewal, so
	// that holders granted together spread their renewals (default
	// DefaultRenewJitter, 0.1; values outside (0, 1) take the default; it
	// never makes a renewal later).
	RenewJitter float64
	// TLSConfig, when set, connects with TLS.
	TLSConfig *tls.Config
	// AuthToken, when set, authenticates each connection with this secret.
	AuthToken string
	// OnRenewError, when set, is called once when a held lock is lost: a
	// renewal failed, the connection broke, the lease ran out before a
	// renewal was answered, or the server refused the Wait collecting a
	// grant Enqueue got. It is called from the renewal goroutine, or from
	// the Release, Acquire or Wait that found the loss first (before that
	// call returns).
	// The error matches ErrLost and the cause. The lock is no longer held
	// when it runs.
	OnRenewError func(err error)
	// Heartbeat is the idle interval after which the connection sends a
	// ping, so that an idle connection (a long lease, a two-phase wait
	// between Enqueue and Wait) is not closed by the server's read
	// timeout (default DefaultHeartbeat; negative disables).
	Heartbeat time.Duration

	h holder
}

func (l *Lock) spec() (spec, error) {
	return newSpec("lock", l.Key, 0, l.Servers, l.ShardFunc, l.AcquireTimeout, l.LeaseTTL,
		l.RenewRatio, l.RenewJitter, l.TLSConfig, l.AuthToken, l.Heartbeat, l.OnRenewError)
}

// Acquire connects, waits up to AcquireTimeout for the lock, and starts
// renewing it. It returns (false, nil) when the server's timeout ran out,
// (false, ctx.Err()) when ctx ended first, and (false, err) on failure.
// Acquiring a Lock that is already held releases the previous hold first
// (waiting up to a second for the server's answer; a release that fails
// is reported by the next Release, as is a hold lost before it).
func (l *Lock) Acquire(ctx context.Context) (bool, error) {
	sp, err := l.spec()
	if err != nil {
		return false, err
	}
	return l.h.acquire(ctx, sp, sp.acquireTimeout)
}

// TryAcquire is Acquire without waiting: (false, nil) if the lock is held
// by someone else.
func (l *Lock) TryAcquire(ctx context.Context) (bool, error) {
	sp, err := l.spec()
	if err != nil {
		return false, err
	}
	return l.h.acquire(ctx, sp, 0)
}

// Enqueue is the first phase of a two-phase acquire: it connects and joins
// the queue. It returns StatusAcquired (the lock is held and renewed, as
// after Acquire) or StatusQueued (call Wait).
func (l *Lock) Enqueue(ctx context.Context) (string, error) {
	sp, err := l.spec()
	if err != nil {
		return "", err
	}
	return l.h.enqueue(ctx, sp)
}

// Wait is the second phase: it waits up to timeout (rounded up to whole
// seconds) for the place Enqueue took. It returns (false, nil) on timeout,
// after which the place is gone and the connection closed; ErrNotQueued
// when no Enqueue left a place to collect (a lock held from Acquire or an
// earlier Wait stays held); ErrLeaseExpired if the grant expired before
// Wait was called. If ctx ends while Wait collects a grant Enqueue already
// got (StatusAcquired), the lock stays held and Wait may be called again:
// an error of the context (context.Canceled or DeadlineExceeded, also when
// the deadline passed before ctx noticed) never ends that hold; only the
// server refusing it, or the connection breaking, does.
func (l *Lock) Wait(ctx context.Context, timeout time.Duration) (bool, error) {
	return l.h.wait(ctx, timeout)
}

// Release stops renewal, releases the lock and closes the connection once
// the release is answered. It returns nil when nothing is held and nothing
// is left to report. It returns, once, the ErrLost error of every hold
// lost that no Release has reported yet, also when a new Acquire came
// between (so that a critical section that ran unprotected does not go
// unnoticed), and the failure of a release that could not be confirmed.
//
// The release is sent even when ctx has already ended (a deferred Release
// with a cancelled request context, say): the Lock no longer holds the
// lock as soon as Release is called, and nothing could release it later,
// which matters where the server's auto-release is off. If ctx ends before
// the server answers, Release returns ctx.Err() at once and the release
// completes in the background (for up to 5 s); a later Release waits for
// it, within its own ctx, and reports its outcome (unless Close cut it off
// meanwhile).
//
// Release during an Acquire, Enqueue or Wait in flight ends it without
// losing a grant already on its way: the connection shuts its sending
// side (the server then drops the blocked request and answers what it had
// decided), and a grant that still arrives is released from a fresh
// connection. Release waits for that like for a release; for the
// server's answer to the half-close it waits at most 0.5 s (a server that
// keeps serving a blocked request after a half-close, as dflockd 1.10
// does, ends it only when it answers: the rest goes on in the background
// and the next Release reports it). The same
// happens when a new Acquire or Enqueue ends one in flight, or when the
// call's own ctx ends (the grant is then released in the background).
func (l *Lock) Release(ctx context.Context) error { return l.h.release(ctx) }

// Close stops renewal and closes the connection without releasing: the
// server releases the lock when it sees the connection close (or when the
// lease runs out, if auto-release is off). A release still going on in
// the background (a Release whose ctx ended first) is cut off the same
// way, and leaves nothing for a later Release to report; Close returns
// once it has stopped.
func (l *Lock) Close() error { return l.h.close() }

// Token returns the token of the held lock, or "" when not held.
func (l *Lock) Token() string { return l.h.token() }

// Fence returns the fence number of the held lock (see Grant.Fence), or 0
// when not held.
func (l *Lock) Fence() uint64 {
	g, _ := l.h.grant()
	return g.Fence()
}

// Grant returns the held grant and true, or false when not held.
func (l *Lock) Grant() (Grant, bool) { return l.h.grant() }

// Done returns a channel that is closed when the current hold ends:
// released, closed, failed, or lost. Watch it to stop work that must not
// outlive the lock, and then ask Err why. When nothing is being acquired
// or held, the channel is already closed.
func (l *Lock) Done() <-chan struct{} { return l.h.done() }

// Err returns nil while a hold is in progress or after it ended by
// Release, Close or a failed acquire; after the lock was lost it returns
// the error OnRenewError received (matching ErrLost and the cause).
func (l *Lock) Err() error { return l.h.err() }

// Semaphore is a distributed counting semaphore: up to Limit holders of
// Key at once, each slot with its own token and renewed lease. It behaves
// exactly as Lock (the two share one implementation); only Limit is added.
// Semaphores and locks are separate namespaces on the server.
type Semaphore struct {
	// Key names the semaphore.
	Key string
	// Limit is the number of concurrent holders, at least 1; the first
	// request for a key fixes it, and a request with another limit fails
	// with ErrLimitMismatch while the key exists.
	Limit int
	// AcquireTimeout, LeaseTTL, Servers, ShardFunc, RenewRatio,
	// RenewJitter, TLSConfig, AuthToken, OnRenewError and Heartbeat are as
	// for Lock.
	AcquireTimeout time.Duration
	LeaseTTL       int
	Servers        []string
	ShardFunc      ShardFunc
	RenewRatio     float64
	RenewJitter    float64
	TLSConfig      *tls.Config
	AuthToken      string
	OnRenewError   func(err error)
	Heartbeat      time.Duration

	h holder
}

func (s *Semaphore) spec() (spec, error) {
	return newSpec("semaphore", s.Key, semLimit(s.Limit), s.Servers, s.ShardFunc, s.AcquireTimeout, s.LeaseTTL,
		s.RenewRatio, s.RenewJitter, s.TLSConfig, s.AuthToken, s.Heartbeat, s.OnRenewError)
}

// Acquire takes a slot as Lock.Acquire takes the lock.
func (s *Semaphore) Acquire(ctx context.Context) (bool, error) {
	sp, err := s.spec()
	if err != nil {
		return false, err
	}
	return s.h.acquire(ctx, sp, sp.acquireTimeout)
}

// TryAcquire takes a slot if one is free now: (false, nil) otherwise.
func (s *Semaphore) TryAcquire(ctx context.Context) (bool, error) {
	sp, err := s.spec()
	if err != nil {
		return false, err
	}
	return s.h.acquire(ctx, sp, 0)
}

// Enqueue is the first phase of a two-phase slot acquire (see
// Lock.Enqueue).
func (s *Semaphore) Enqueue(ctx context.Context) (string, error) {
	sp, err := s.spec()
	if err != nil {
		return "", err
	}
	return s.h.enqueue(ctx, sp)
}

// Wait is the second phase (see Lock.Wait).
func (s *Semaphore) Wait(ctx context.Context, timeout time.Duration) (bool, error) {
	return s.h.wait(ctx, timeout)
}

// Release releases the slot (see Lock.Release).
func (s *Semaphore) Release(ctx context.Context) error { return s.h.release(ctx) }

// Close drops the slot's connection without releasing (see Lock.Close).
func (s *Semaphore) Close() error { return s.h.close() }

// Token returns the held slot's token, or "" when not held.
func (s *Semaphore) Token() string { return s.h.token() }

// Fence returns the held slot's fence number, or 0 when not held.
func (s *Semaphore) Fence() uint64 {
	g, _ := s.h.grant()
	return g.Fence()
}

// Grant returns the held grant and true, or false when not held.
func (s *Semaphore) Grant() (Grant, bool) { return s.h.grant() }

// Done returns a channel closed when the current hold ends (see Lock.Done).
func (s *Semaphore) Done() <-chan struct{} { return s.h.done() }

// Err returns why the last hold ended if it was lost (see Lock.Err).
func (s *Semaphore) Err() error { return s.h.err() }
