package client

import (
	"errors"
	"fmt"
	"net"

	"github.com/lockreactor/dflockd/codec"
)

// Sentinel errors, one per error status the server can answer, plus the
// client's own. Compare with errors.Is: the client returns the sentinel
// itself for every specific status (as dflockd's client does) and wraps
// ErrServer with the failing operation for a bare `error` reply.
var (
	// ErrTimeout: the server's acquire or wait timeout ran out before a
	// grant. The high-level Acquire and Wait report it as (false, nil).
	ErrTimeout = errors.New("dflockd: timeout")
	// ErrMaxLocks: the server tracks its maximum number of keys.
	ErrMaxLocks = errors.New("dflockd: max locks reached")
	// ErrMaxWaiters: the key's queue is full.
	ErrMaxWaiters = errors.New("dflockd: max waiters reached")
	// ErrServer: the server answered `error` (unknown or expired token,
	// malformed request), or a reply this client cannot make sense of.
	ErrServer = errors.New("dflockd: server error")
	// ErrNotQueued: Wait without a pending Enqueue for the key on this
	// connection (or after the queued entry timed out).
	ErrNotQueued = errors.New("dflockd: not enqueued")
	// ErrAlreadyQueued: Enqueue while this connection is already queued
	// for the key.
	ErrAlreadyQueued = errors.New("dflockd: already enqueued")
	// ErrLimitMismatch: a semaphore request's limit differs from the limit
	// the key was created with.
	ErrLimitMismatch = errors.New("dflockd: limit mismatch")
	// ErrLeaseExpired: Wait found that the grant it would return had
	// already expired (it was granted earlier and nobody renewed it).
	ErrLeaseExpired = errors.New("dflockd: lease expired")
	// ErrAuth: the server rejected the auth secret, or requires one that
	// was not sent. An auth the server answered a bare `error` (it has no
	// secret set, or the connection is authenticated already) matches both
	// ErrAuth and ErrServer.
	ErrAuth = errors.New("dflockd: authentication failed")
	// ErrDraining: the server is shutting down and refuses new requests.
	// It also matches ErrServer, which is what dflockd's client reported
	// for this reply, so existing error handling keeps working.
	ErrDraining error = &childError{msg: "dflockd: server draining", parents: []error{ErrServer}}

	// ErrClosed: the connection was closed, by Close or because it broke;
	// a broken connection's error also wraps the I/O cause, and one this
	// process closed (Close, or a Lock's Release or new Acquire ending a
	// call in flight) also matches net.ErrClosed (as dflockd's client's
	// did).
	// Every lock the connection held is released by the server (with
	// auto-release on).
	ErrClosed = errors.New("dflockd: connection closed")
	// ErrLost: a held Lock or Semaphore was lost: renewal failed, its
	// connection broke, or its lease ran out before a renewal was
	// answered. The error from Err and Release wraps the cause too.
	ErrLost = errors.New("dflockd: lock lost")
	// ErrInvalid: an argument the server would reject or that cannot be
	// framed (empty key, key with whitespace or longer than a line, limit
	// < 1, shard index out of range). Nothing was sent. The ones the
	// server would answer `error` to (key, limit, token) also match
	// ErrServer, which is what dflockd's client returned for them.
	ErrInvalid = errors.New("dflockd: invalid argument")
)

// errBadToken: a token string that is not 32 lowercase hex digits. The
// server would answer `error`, so it matches ErrServer as well.
var errBadToken error = &childError{msg: "dflockd: malformed token", parents: []error{ErrInvalid, ErrServer}}

// errRejected: an argument the server would answer `error` to (a key it
// cannot take, a limit < 1). dflockd's client sent it and returned
// ErrServer, so it matches ErrServer as well as ErrInvalid.
var errRejected error = &childError{msg: ErrInvalid.Error(), parents: []error{ErrInvalid, ErrServer}}

// errClosedHere: the connection was closed by this process (Close, a
// Lock's Close, or its Release or a new Acquire ending a call in flight).
// dflockd's client returned the net package's error for a call on a
// connection it had closed, so it matches net.ErrClosed as well as
// ErrClosed. A connection that broke does not.
var errClosedHere error = &childError{msg: ErrClosed.Error(), parents: []error{ErrClosed, net.ErrClosed}}

// childError is an error that also matches more general sentinels.
type childError struct {
	msg     string
	parents []error
}

func (e *childError) Error() string   { return e.msg }
func (e *childError) Unwrap() []error { return e.parents }

// statusErr maps an error status to its sentinel: the one place where a
// reply Code becomes an error. op names the request for bare `error`.
func statusErr(op codec.Command, c codec.Code) error {
	switch c {
	case codec.CodeTimeout:
		return ErrTimeout
	case codec.CodeErrorMaxLocks:
		return ErrMaxLocks
	case codec.CodeErrorMaxWaiters:
		return ErrMaxWaiters
	case codec.CodeErrorLimitMismatch:
		return ErrLimitMismatch
	case codec.CodeErrorNotEnqueued:
		return ErrNotQueued
	case codec.CodeErrorAlreadyEnqueued:
		return ErrAlreadyQueued
	case codec.CodeErrorLeaseExpired:
		return ErrLeaseExpired
	case codec.CodeErrorAuth:
		return ErrAuth
	case codec.CodeErrorDraining:
		return ErrDraining
	}
	if op == codec.CmdAuth {
		// A bare error to auth (a server with no secret set answers
		// so): dflockd's client reported ErrAuth for any reply but ok.
		return &childError{msg: fmt.Sprintf("%s: %s: %s", ErrAuth, op, c), parents: []error{ErrAuth, ErrServer}}
	}
	return fmt.Errorf("%w: %s: %s", ErrServer, op, c)
}

// unexpected reports a reply whose shape does not fit the request (a
// status this request never gets, a grant without a token).
func unexpected(op codec.Command, r *codec.Reply) error {
	return fmt.Errorf("%w: %s: unexpected reply %s", ErrServer, op, r.Code)
}
