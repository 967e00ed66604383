package reactor

import (
	"crypto/subtle"
	"encoding/json"
	"sync/atomic"
	"time"

	"github.com/lockreactor/dflockd/codec"
	"github.com/lockreactor/dflockd/lockcore"
)

// transport is what a session needs from its connection.
type transport interface {
	// wake asks the connection's owner goroutine to run the session again
	// (a parked result arrived). Called from any goroutine.
	wake()
}

// session is one connection's protocol state, independent of transport.
// Everything except resolved/result is owned by the connection's goroutine
// (its event loop, or its TLS processor), except that on an event loop a
// parked session armed for direct delivery is lent to the goroutine that
// completes its request until the loop claims it back (gconn.tryDirect).
//
// Every connection holds one, so field order keeps it small (152 bytes, and
// gconn in the 256-byte size class: TestConnStateSize): word-sized fields
// first, then the small ones together.
type session struct {
	owner lockcore.Owner
	srv   *Server
	tr    transport
	// mt is where metrics are counted (nil when off).
	mt  *metered
	out []byte // replies not yet written

	// result is published by resolved from the goroutine that completed
	// the parked request to the connection's goroutine.
	result lockcore.Result

	// closing: stop reading; close at closeAt (after flushing out).
	closeAt int64
	// lastProgress is when the last complete line or reply happened: the
	// read timeout counts from it.
	lastProgress int64
	// parkedAt and parkedCmd describe the parked request (for metrics).
	parkedAt int64

	// owed counts replies of parked requests that are in out but not yet
	// written. They still count in srv.parked, so that a drain waits until
	// they are sent, not just decided (see sent).
	owed     int32
	resolved atomic.Bool
	closed   atomic.Bool

	authed  bool
	parked  bool
	closing bool
	// lines is how many lines of the current incomplete request have
	// arrived (at most 2).
	lines     uint8
	parkedCmd codec.Command
	// stalled and peerEOF are gconn's (event loops only), kept here in
	// padding. stalled: replies are pending in gnet's outbound buffer.
	// peerEOF: the client shut down its sending side (OnReadEOF).
	stalled bool
	peerEOF bool
	// closeWhy is why the server is closing the connection (CloseReason
	// + 1), 0 while it has no reason to (see closeFor).
	closeWhy uint8
	// bigKiB is what this connection's unsent large replies hold of the
	// server's budget for them (appendStats), in KiB.
	bigKiB uint32
}

func (s *session) init(srv *Server, tr transport, now int64) {
	s.srv = srv
	s.tr = tr
	s.owner.Init(srv.nextID.Add(1))
	s.authed = srv.cfg.AuthToken == ""
	s.lastProgress = now
}

// Complete implements lockcore.Continuation for the session's parked
// request. It may run on any goroutine.
func (s *session) Complete(r lockcore.Result) {
	s.result = r
	s.resolved.Store(true)
	if !s.closed.Load() {
		s.tr.wake()
	}
}

// unpark writes a parked request's result once it has arrived. It reports
// whether the session is (now) free to decode.
func (s *session) unpark(now int64) bool {
	if !s.parked {
		return true
	}
	if !s.resolved.Load() {
		return false
	}
	s.resolved.Store(false)
	s.parked = false
	s.owed++
	if s.mt != nil {
		s.mt.sink.wait[s.parkedCmd].observe(&WaitBounds, time.Duration(now-s.parkedAt), 1)
		s.mt.count(s.parkedCmd, s.result.Code)
	}
	s.out = appendResult(s.out, s.result)
	s.lastProgress = now
	s.lines = 0
	return true
}

// sent tells the session that out has been written: the replies of
// requests that were parked no longer hold a drain back.
func (s *session) sent() {
	if s.owed > 0 {
		s.srv.parked.Add(-int64(s.owed))
		s.owed = 0
	}
}

// handle decodes and runs requests from in until it is used up, a request
// parks, the session starts closing, or maxOut bytes of replies are
// pending. It returns the bytes consumed.
func (s *session) handle(in []byte, now int64, maxOut int) int {
	off := 0
	for !s.parked && !s.closing && len(s.out) < maxOut {
		var req codec.Request
		n, err := codec.Decode(in[off:], &req)
		if n == 0 {
			if err != nil { // an over-long line: the stream is lost
				s.record(codec.CmdInvalid, s.failCode())
				s.fail(now, CloseLineTooLong)
				return len(in)
			}
			if l := codec.CompleteLines(in[off:]); l > int(s.lines) {
				s.lines = uint8(l)
				// Before authentication the timeout runs from the
				// connect, not per line: a stranger dribbling the
				// lines of a request keeps its slot no longer.
				if s.authed {
					s.lastProgress = now
				}
			}
			break
		}
		off += n
		s.lines = 0
		s.lastProgress = now
		if err != nil {
			if !s.authed {
				s.record(req.Cmd, codec.CodeErrorAuth)
				s.fail(now, CloseAuthFailed)
				return len(in)
			}
			s.record(req.Cmd, codec.CodeError)
			s.out = codec.AppendStatus(s.out, codec.CodeError)
			continue
		}
		s.dispatch(&req, now)
	}
	return off
}

// fail answers a request that ends the connection: error_auth (with the
// anti-brute-force pause) before authentication, error after.
func (s *session) fail(now int64, why CloseReason) {
	s.closeFor(why)
	if !s.authed {
		s.out = codec.AppendStatus(s.out, codec.CodeErrorAuth)
		s.closing = true
		s.closeAt = now + int64(s.srv.cfg.AuthFailDelay)
		return
	}
	s.out = codec.AppendStatus(s.out, codec.CodeError)
	s.closing = true
	s.closeAt = now
}

func (s *session) dispatch(req *codec.Request, now int64) {
	srv := s.srv
	if !s.authed {
		if req.Cmd == codec.CmdAuth && subtle.ConstantTimeCompare(req.Arg, srv.authToken) == 1 {
			s.authed = true
			s.record(req.Cmd, codec.CodeOK)
			s.out = codec.AppendStatus(s.out, codec.CodeOK)
			return
		}
		s.record(req.Cmd, codec.CodeErrorAuth)
		s.fail(now, CloseAuthFailed)
		return
	}
	if srv.draining.Load() && !allowedWhileDraining(req.Cmd) {
		s.record(req.Cmd, codec.CodeErrorDraining)
		s.out = codec.AppendStatus(s.out, codec.CodeErrorDraining)
		return
	}
	tbl := srv.table
	ns := lockcore.Locks
	if req.Cmd.IsSemaphore() {
		ns = lockcore.Semaphores
	}
	var r lockcore.Result
	switch req.Cmd {
	case codec.CmdAuth: // a second auth, or auth on a server without a token
		r.Code = codec.CodeError
	case codec.CmdPing:
		r.Code = codec.CodeOK
	case codec.CmdStats:
		s.appendStats(now)
		return
	case codec.CmdLock, codec.CmdSemLock:
		r = tbl.Acquire(&s.owner, ns, req.Key, req.Timeout, req.Limit, req.Lease, s, now)
	case codec.CmdRelease, codec.CmdSemRelease:
		r.Code = tbl.Release(ns, req.Key, req.Token, now)
	case codec.CmdRenew, codec.CmdSemRenew:
		r = tbl.Renew(ns, req.Key, req.Token, req.Lease, now)
	case codec.CmdEnqueue, codec.CmdSemEnqueue:
		r = tbl.Enqueue(&s.owner, ns, req.Key, req.Limit, req.Lease, now)
	case codec.CmdWait, codec.CmdSemWait:
		r = tbl.Wait(&s.owner, ns, req.Key, req.Timeout, s, now)
	}
	if r.Parked {
		s.parked = true
		s.parkedAt, s.parkedCmd = now, req.Cmd
		srv.parked.Add(1)
		// The result may already be here (granted by another goroutine
		// between the table call and now); unpark picks it up.
		s.unpark(now)
		return
	}
	s.record(req.Cmd, r.Code)
	s.out = appendResult(s.out, r)
}

// allowedWhileDraining: release and renew still work during a drain. They
// start nothing new, and a release is how a blocked request gets the grant
// the drain is waiting for. So do w and sw: they only finish a two-phase
// enqueue made before the drain (without one they answer
// error_not_enqueued); refused, the enqueue would stay in line, take the
// grant a release hands on, and hold up every request queued behind it
// until the shutdown timeout. A second auth answers error as always.
func allowedWhileDraining(c codec.Command) bool {
	switch c {
	case codec.CmdRelease, codec.CmdSemRelease, codec.CmdRenew, codec.CmdSemRenew,
		codec.CmdWait, codec.CmdSemWait, codec.CmdAuth:
		return true
	}
	return false
}

// appendResult appends the reply line for r to dst.
func appendResult(dst []byte, r lockcore.Result) []byte {
	switch {
	case (r.Code == codec.CodeOK || r.Code == codec.CodeAcquired) && !r.Token.IsZero():
		return codec.AppendGrant(dst, r.Code, r.Token, r.Lease)
	case r.Code == codec.CodeOK && r.Lease > 0:
		return codec.AppendRenewed(dst, r.Lease)
	default:
		return codec.AppendStatus(dst, r.Code)
	}
}

// failCode is the status fail answers with.
func (s *session) failCode() codec.Code {
	if !s.authed {
		return codec.CodeErrorAuth
	}
	return codec.CodeError
}

// readTimedOut answers a read timeout like any request that ends the
// connection: error, or before authentication error_auth and the close
// after the anti-brute-force pause (PROTOCOL.md "Auth and TLS").
func (s *session) readTimedOut(now int64) {
	if s.authed {
		s.fail(now, CloseReadTimeout)
	} else {
		s.fail(now, CloseAuthTimeout)
	}
}

// CloseReason is why the server closed a connection, as counted by
// dflockd_connections_closed_total{reason}. Closes the client began (a
// close, a reset, a half-close) and the shutdown's have none.
type CloseReason uint8

const (
	// CloseAuthFailed: the first request was not auth with the secret.
	CloseAuthFailed CloseReason = iota
	// CloseAuthTimeout: no auth in time (the TLS handshake included).
	CloseAuthTimeout
	// CloseReadTimeout: idle past --read-timeout.
	CloseReadTimeout
	// CloseLineTooLong: a line over the protocol's limit.
	CloseLineTooLong
	// CloseWriteTimeout: replies made no progress for --write-timeout.
	CloseWriteTimeout
	// CloseInboundCap: more than the inbound cap arrived unread, behind
	// a blocked request or unread replies.
	CloseInboundCap
	// CloseTLSHandshake: the TLS handshake failed.
	CloseTLSHandshake
	// NumCloseReasons is the number of reasons.
	NumCloseReasons
)

var closeReasonNames = [NumCloseReasons]string{"auth_failed", "auth_timeout", "read_timeout",
	"line_too_long", "write_timeout", "inbound_cap", "tls_handshake"}

func (r CloseReason) String() string {
	if r < NumCloseReasons {
		return closeReasonNames[r]
	}
	return "unknown"
}

// closeFor records why the server closes the connection; the first
// reason stands. session.close counts it.
func (s *session) closeFor(why CloseReason) {
	if s.closeWhy == 0 {
		s.closeWhy = uint8(why) + 1
	}
}

// closeReason is the recorded reason, or "" when the server had none.
func (s *session) closeReason() string {
	if s.closeWhy == 0 {
		return ""
	}
	return CloseReason(s.closeWhy - 1).String()
}

// readDeadline is when the read timeout fires, or 0 when none applies.
// Before authentication it is never later than AuthTimeout.
func (s *session) readDeadline() int64 {
	if s.parked || s.closing {
		return 0
	}
	rt := s.srv.cfg.ReadTimeout
	if !s.authed && (rt <= 0 || rt > s.srv.cfg.AuthTimeout) {
		rt = s.srv.cfg.AuthTimeout
	}
	if rt <= 0 {
		return 0
	}
	return s.lastProgress + int64(rt)
}

// close releases the session's lock state. Called once, on the
// connection's goroutine, when the connection is gone.
func (s *session) close(now int64) {
	if s.closed.Swap(true) {
		return
	}
	if s.parked {
		s.srv.parked.Add(-1)
	}
	if s.parked || s.owed > 0 {
		s.srv.cutOff.Add(1)
	}
	s.sent() // never will be
	s.releaseBig()
	if s.closeWhy != 0 {
		s.srv.closes[s.closeWhy-1].Add(1)
	}
	s.srv.table.CloseOwner(&s.owner, now)
	s.srv.conns.Add(-1)
}

// Large replies. A stats reply grows with the keys tracked: up to ~1.6 MB
// with the default --max-locks and 256-byte keys of bytes JSON writes
// six-fold (\u0001), far past the 64 KiB of replies a connection may leave
// unsent before its requests wait unread (that bound is checked before
// each request, and this is one request's reply). So a stats reply larger
// than bigReply is charged to a server-wide budget of bigOutBudget until
// the client's socket has taken all of it (or the connection is gone);
// while the budget is spent, stats answers error. When nothing is charged
// one reply of any size goes, so stats works however many keys there are.
// A connection holds at most one such reply: on the event loops it is not
// decoded while it has one (gnet.go serve); on TLS the processor writes
// each batch, which holds at most one, before it decodes again.
// Without it, each connection that sent one stats and stopped reading
// held its own copy until the write timeout: 150 of them, 240 MB.
const (
	bigReply     = 64 << 10
	bigOutBudget = 32 << 20
)

// appendStats answers stats.
func (s *session) appendStats(now int64) {
	srv := s.srv
	// Refuse before rendering, which costs about 6 ms for 1,024 such
	// keys, when the budget is spent or the reply, estimated from the
	// last large one, would not fit what is left (a refusal answers 6
	// bytes, so without this each 10-byte pipelined stats cost the loop
	// a full render); or when the rendered reply does not fit.
	var body []byte
	if srv.statsMayFit(now) {
		body = srv.statsJSON(now)
		kib := int64(0)
		if len(body) > bigReply {
			kib = int64(len(body)+len("ok \n")+1023) >> 10
		}
		srv.lastBigKiB.Store(kib)
		srv.lastBigKeys.Store(srv.table.Keys())
		srv.lastRender.Store(now)
		if kib > 0 {
			if srv.chargeBig(kib) {
				s.bigKiB += uint32(kib)
			} else {
				body = nil
			}
		}
	}
	if body == nil {
		s.record(codec.CmdStats, codec.CodeError)
		s.out = codec.AppendStatus(s.out, codec.CodeError)
		return
	}
	s.record(codec.CmdStats, codec.CodeOK)
	s.out = codec.AppendStats(s.out, body)
}

// statsMayFit tells whether a stats reply rendered at now may fit the
// large-reply budget left: always when nothing is charged; never when the
// budget is spent; else when the last large reply, scaled by the keys
// tracked now over the keys then, fits. An estimate gone stale the other
// way (as many keys, shorter names) is refreshed by one render a second.
func (srv *Server) statsMayFit(now int64) bool {
	const budget = int64(bigOutBudget >> 10)
	cur := srv.bigOut.Load()
	switch {
	case cur == 0:
		return true
	case cur >= budget:
		return false
	}
	est := srv.lastBigKiB.Load()
	if then := srv.lastBigKeys.Load(); then > 0 {
		est = est * srv.table.Keys() / then
	}
	if cur+est <= budget {
		return true
	}
	last := srv.lastRender.Load()
	return now-last >= int64(time.Second) && srv.lastRender.CompareAndSwap(last, now)
}

// chargeBig takes kib of the large-reply budget: all of it fits, or
// nothing is charged yet.
func (srv *Server) chargeBig(kib int64) bool {
	for {
		cur := srv.bigOut.Load()
		if cur > 0 && cur+kib > bigOutBudget>>10 {
			return false
		}
		if srv.bigOut.CompareAndSwap(cur, cur+kib) {
			return true
		}
	}
}

// releaseBig gives back the session's share of the large-reply budget:
// its replies are all written to the socket, or it is closed.
func (s *session) releaseBig() {
	if s.bigKiB > 0 {
		s.srv.bigOut.Add(-int64(s.bigKiB))
		s.bigKiB = 0
	}
}

type statsBody struct {
	Connections    int64               `json:"connections"`
	Locks          []lockcore.LockStat `json:"locks"`
	Semaphores     []lockcore.SemStat  `json:"semaphores"`
	IdleLocks      []lockcore.IdleStat `json:"idle_locks"`
	IdleSemaphores []lockcore.IdleStat `json:"idle_semaphores"`
}

func (srv *Server) statsJSON(now int64) []byte {
	// Count connections first: a closing session releases its locks before
	// it leaves the count, so a connection not counted here is already gone
	// from the snapshot below.
	conns := srv.conns.Load()
	snap := srv.table.Stats(now)
	b, err := json.Marshal(statsBody{
		Connections:    conns,
		Locks:          snap.Locks,
		Semaphores:     snap.Semaphores,
		IdleLocks:      snap.IdleLocks,
		IdleSemaphores: snap.IdleSemaphores,
	})
	if err != nil { // cannot happen for these types
		return []byte("{}")
	}
	return b
}

// emptyOut empties a written reply buffer for reuse, or drops it when it
// grew past 4 KiB: an idle connection must not pin a large buffer.
func emptyOut(b []byte) []byte {
	if cap(b) > 4<<10 {
		return nil
	}
	return b[:0]
}
