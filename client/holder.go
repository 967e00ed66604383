package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/lockreactor/dflockd/codec"
)

// holder is the one implementation under Lock and Semaphore: a lock is a
// holder in the lock namespace (limit 0 on the wire, one holder at a time),
// a semaphore slot one with a limit. It owns at most one hold at a time,
// each on a connection of its own, so a blocked acquire never holds back
// another hold's renewals and closing the connection is always safe.
//
// mu guards the holder's and every hold's mutable fields. Network calls
// are made without it; Close and Release may run concurrently with an
// Acquire or Wait in flight, and end it.
type holder struct {
	mu   sync.Mutex
	cur  *hold // connecting, queued or held; nil when idle
	last *hold // the most recent hold that ended
	// unreported is what the next Release returns (unless its ctx ends
	// first): the ErrLost error of each hold lost, and the failure of each
	// release that was not confirmed, that no Release has returned yet.
	// Only Release clears it.
	unreported error
	// releasing are the releases still in flight (see runRelease).
	releasing []*releaseOp
}

// releaseOp is one release of a held grant, run in the background so
// that it is sent, and its connection closed only once it is answered,
// even when the caller's context has ended.
type releaseOp struct {
	conn    *Conn
	g       Grant
	expires time.Time
	sp      spec
	cut     bool // Close cut it off: its failure is not reported (under h.mu)
	// unanswered: a new acquire closed the connection after waiting
	// reacquireReleaseWait for the answer (under h.mu): a failure then is
	// no sign of a loss.
	unanswered bool
	err        error         // its failure (under h.mu, once done)
	done       chan struct{} // closed when answered or failed; the error is in unreported

	// An abort (see runAbort) instead ends a hold that was not held yet:
	// hd is that hold, leave its zero-timeout wait (two-phase), late the
	// grants its callers received after it ended (under h.mu), and stop
	// cuts off the release of those grants.
	hd    *hold
	leave bool
	late  []Grant
	stop  context.CancelFunc
	// answered is closed once the server has closed the connection after
	// the half-close (or the wait for it ended) and the hold's calls have
	// returned: what is left is releasing the grants that turned up.
	answered chan struct{}
}

// spec is a request as configured by a Lock's or Semaphore's exported
// fields, read at every call and defaulted.
type spec struct {
	kind           string // "lock" or "semaphore", for errors
	key            string
	limit          int // 0 = lock namespace
	addr           string
	acquireTimeout time.Duration
	leaseTTL       int
	renewRatio     float64
	renewJitter    float64
	tls            *tls.Config
	auth           string
	heartbeat      time.Duration
	onRenewError   func(error)
}

func newSpec(kind, key string, limit int, servers []string, shard ShardFunc, acquireTimeout time.Duration,
	leaseTTL int, ratio, jitter float64, tlsCfg *tls.Config, auth string, heartbeat time.Duration, onErr func(error),
) (spec, error) {
	if len(servers) == 0 {
		servers = []string{DefaultServer}
	}
	if shard == nil {
		shard = CRC32Shard
	}
	if err := checkResource(key, limit); err != nil {
		return spec{}, err
	}
	i := shard(key, len(servers))
	if i < 0 || i >= len(servers) {
		return spec{}, fmt.Errorf("%w: shard function chose server %d of %d for %q", ErrInvalid, i, len(servers), key)
	}
	if acquireTimeout <= 0 {
		acquireTimeout = DefaultAcquireTimeout
	}
	if !(ratio > 0 && ratio < 1) {
		ratio = DefaultRenewRatio
	}
	if !(jitter > 0 && jitter < 1) {
		jitter = DefaultRenewJitter
	}
	switch {
	case heartbeat == 0:
		heartbeat = DefaultHeartbeat
	case heartbeat < 0:
		heartbeat = 0
	}
	return spec{
		kind: kind, key: key, limit: limit, addr: servers[i],
		acquireTimeout: acquireTimeout, leaseTTL: max(leaseTTL, 0), renewRatio: ratio, renewJitter: jitter,
		tls: tlsCfg, auth: auth, heartbeat: heartbeat, onRenewError: onErr,
	}, nil
}

// renewAfter is when, after a grant or renewal of lease, to renew: at
// renewRatio of the lease, up to renewJitter of that early, at random, so
// that holders granted together do not all renew at the same moment.
func (sp *spec) renewAfter(lease time.Duration) time.Duration {
	return time.Duration(float64(lease) * sp.renewRatio * (1 - sp.renewJitter*rand.Float64()))
}

func (sp *spec) dial(ctx context.Context) (*Conn, error) {
	return DialContext(ctx, sp.addr, WithTLS(sp.tls), WithAuth(sp.auth), WithHeartbeat(sp.heartbeat))
}

type holdState uint8

const (
	stateConnecting holdState = iota
	stateQueued               // Enqueue answered "queued"; Wait is next
	stateHeld                 // granted; the renewer runs
	stateEnded
)

// hold is one attempt to hold the resource, from dial to release or loss.
type hold struct {
	sp    spec
	state holdState
	conn  *Conn
	grant Grant
	// pendingWait: Enqueue answered and no Wait has collected the place
	// yet. Only then does Wait send w; on a hold Acquire or an earlier
	// Wait made, the server would answer error_not_enqueued.
	pendingWait bool
	// twoPhase: an e/se was sent on conn, so the server may keep a place
	// (or a grant awaiting w) for it.
	twoPhase bool
	// calls counts the requests in flight on conn (Add under h.mu while
	// the hold has not ended; see beginCall); abort is the abort that
	// ended the hold, if one did: grants that reach the hold's callers
	// after it ended are released by it.
	calls sync.WaitGroup
	abort *releaseOp
	// expires is the local estimate of the lease's end, the deadline for a
	// renewal's answer: measured from when the last renewal was sent (no
	// later than the server's), or for a fresh grant from when it arrived
	// (later by at most the network delay; the first renewal, at
	// renewRatio of the lease, corrects it). renewAt is the next renewal.
	expires, renewAt time.Time
	stopRenew        context.CancelFunc
	renewDone        chan struct{}
	done             chan struct{} // closed when the hold ends
	err              error         // set when the hold was lost
	cancelDial       context.CancelFunc
}

// reacquireReleaseWait bounds how long an Acquire or Enqueue of a held
// Lock waits for the release of the old hold before it closes the old
// connection and goes on.
const reacquireReleaseWait = time.Second

// abortWait bounds how long Release waits for the server to end an abort
// (see runAbort) before it leaves it to finish in the background: this
// server closes within a round trip of the half-close, but one that keeps
// a blocked request after a half-close answers only when the request is
// decided. Releasing a grant that turned up is waited for like any
// release.
const abortWait = 500 * time.Millisecond

// releaseWait bounds a release sent after the caller's context ended (see
// runRelease): long enough for a slow network, and the connection's own
// watchdog would break a silent connection soon after anyway.
const releaseWait = 5 * time.Second

var closedCh = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// start ends the current hold (as dflockd's client does: acquiring again
// drops what was held) and dials a connection for a new one.
func (h *holder) start(ctx context.Context, sp spec) (*hold, error) {
	// The dial is ended by what ends the hold (Release, Close, another
	// Acquire), not only by ctx: endLocked cancels dctx.
	dctx, cancelDial := context.WithCancel(ctx)
	defer cancelDial()
	hd := &hold{sp: sp, done: make(chan struct{}), cancelDial: cancelDial}
	h.mu.Lock()
	old := h.cur
	var op *releaseOp
	var lost error
	if old != nil {
		op, lost = h.endCurLocked(old)
	}
	h.cur = hd
	h.mu.Unlock()
	if old != nil {
		h.runEnd(ctx, old, op, lost)
		if op != nil {
			// Release it rather than only close its connection: with the
			// server's auto-release off, a closed connection's lock stays
			// held until its lease ends, and this acquire would queue
			// behind it. The release is sent even if ctx has ended, and
			// its failure is kept for the next Release (unless Close
			// cuts it off). Briefly: a
			// silent old connection must not hold up the new acquire,
			// so after reacquireReleaseWait it is closed (which frees
			// the lock where auto-release is on).
			t := time.NewTimer(reacquireReleaseWait)
			select {
			case <-op.done:
			case <-ctx.Done(): // the release goes on; the dial below fails
			case <-t.C:
				h.mu.Lock()
				op.unanswered = true // closed by us: not a loss
				h.mu.Unlock()
				_ = op.conn.Close()
			}
			t.Stop()
		}
	}
	conn, err := sp.dial(dctx)
	h.mu.Lock()
	defer h.mu.Unlock()
	if err != nil {
		if hd.state == stateEnded { // ended while connecting
			// The dial's own error may be dctx's cancellation: the
			// caller gets ctx's error if ctx has ended (whichever came
			// first), else ErrClosed, never a bare context.Canceled.
			if cerr := ctx.Err(); cerr != nil {
				return nil, cerr
			}
			return nil, errClosedHere
		}
		h.endLocked(hd, nil)
		return nil, err
	}
	if hd.state == stateEnded { // closed meanwhile
		_ = conn.Close()
		return nil, errClosedHere
	}
	hd.conn = conn
	return hd, nil
}

// acquire runs l/sl on a fresh connection. A server-side timeout is
// (false, nil), as in dflockd's client.
func (h *holder) acquire(ctx context.Context, sp spec, timeout time.Duration) (bool, error) {
	ctx = orBackground(ctx)
	hd, err := h.start(ctx, sp)
	if err != nil {
		return false, err
	}
	if !h.beginCall(hd, false) {
		return false, errClosedHere
	}
	defer hd.calls.Done()
	g, err := hd.conn.acquire(ctx, sp.key, sp.limit, timeout, sp.leaseTTL)
	if err != nil {
		return false, h.fail(ctx, hd, err)
	}
	return h.granted(hd, g)
}

// enqueue runs e/se on a fresh connection.
func (h *holder) enqueue(ctx context.Context, sp spec) (string, error) {
	ctx = orBackground(ctx)
	hd, err := h.start(ctx, sp)
	if err != nil {
		return "", err
	}
	if !h.beginCall(hd, true) {
		return "", errClosedHere
	}
	defer hd.calls.Done()
	g, err := hd.conn.enqueue(ctx, sp.key, sp.limit, sp.leaseTTL)
	if err != nil {
		if err = h.fail(ctx, hd, err); err == nil {
			err = ErrTimeout // not a status e answers; keep it an error
		}
		return "", err
	}
	if g.Held() {
		if _, err := h.granted(hd, g); err != nil {
			return "", err
		}
		h.mu.Lock()
		hd.pendingWait = true
		h.mu.Unlock()
		return StatusAcquired, nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if hd.state == stateEnded {
		return "", errClosedHere
	}
	hd.state = stateQueued
	hd.pendingWait = true
	return StatusQueued, nil
}

// wait runs w/sw on the connection of the current hold, if an Enqueue
// left a place (or a fast-path grant) to collect. Without one it answers
// ErrNotQueued and leaves a held lock alone.
func (h *holder) wait(ctx context.Context, timeout time.Duration) (bool, error) {
	ctx = orBackground(ctx)
	h.mu.Lock()
	hd := h.cur
	if hd == nil || !hd.pendingWait || hd.state != stateQueued && hd.state != stateHeld {
		h.mu.Unlock()
		return false, ErrNotQueued
	}
	conn, sp := hd.conn, hd.sp
	held := hd.state == stateHeld
	var flags callFlags
	if held {
		flags = keepGrant
	}
	hd.calls.Add(1)
	h.mu.Unlock()
	defer hd.calls.Done()
	g, err := conn.wait(ctx, sp.key, sp.limit, timeout, flags)
	if err != nil {
		if held && isCtxErr(err) && conn.Err() == nil {
			// A fast-path grant is held already and the connection is
			// fine: the caller keeps it (and may Wait again). err may
			// be context.DeadlineExceeded before ctx.Err() is set (the
			// deadline passed, its timer not yet run).
			return false, ctxErr(ctx, err)
		}
		if held && errors.Is(err, ErrNotQueued) && conn.Err() == nil {
			// Either an earlier Wait whose context ended had its w
			// served after all (the place is collected, the lock still
			// held), or the grant expired and the server forgot it. A
			// renewal tells which.
			h.mu.Lock()
			g := hd.grant
			h.mu.Unlock()
			_, rerr := conn.renew(ctx, g, sp.leaseTTL)
			if rerr == nil {
				h.mu.Lock()
				defer h.mu.Unlock()
				if hd.state != stateHeld {
					return false, ErrNotQueued // ended meanwhile
				}
				hd.pendingWait = false
				return true, nil
			}
			if isCtxErr(rerr) && conn.Err() == nil {
				// ctx ended before the server answered the check: that
				// is no refusal, so the hold stays (the renewer goes on
				// and notices a real loss).
				return false, ctxErr(ctx, rerr)
			}
		}
		return false, h.fail(ctx, hd, err)
	}
	ok, err := h.granted(hd, g)
	if ok {
		h.mu.Lock()
		hd.pendingWait = false
		h.mu.Unlock()
	}
	return ok, err
}

// granted records a grant and starts (or, after a fast-path Enqueue,
// refreshes) the renewer.
func (h *holder) granted(hd *hold, g Grant) (bool, error) {
	now := time.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	if hd.state == stateEnded {
		if hd.abort != nil && g.Held() {
			// Released or abandoned while this grant was on its way:
			// the abort releases it. (After Close, the server releases
			// it with the connection, or at its lease's end.)
			hd.abort.late = append(hd.abort.late, g)
		}
		return false, errClosedHere
	}
	hd.grant = g
	hd.expires = now.Add(g.Lease)
	hd.renewAt = now.Add(hd.sp.renewAfter(g.Lease))
	if hd.state != stateHeld {
		hd.state = stateHeld
		ctx, cancel := context.WithCancel(context.Background())
		hd.stopRenew, hd.renewDone = cancel, make(chan struct{})
		go h.renewLoop(ctx, hd)
	}
	return true, nil
}

// fail ends hd after a failed request, closing its connection (which makes
// the server drop a waiter at once; the connection carries nothing else).
// It maps a server-side timeout to nil and a context that ended to its
// error.
func (h *holder) fail(ctx context.Context, hd *hold, err error) error {
	h.mu.Lock()
	var op *releaseOp
	var lost error
	aborting := hd.abort != nil // a Release or Acquire is aborting it: the abort owns the connection
	switch {
	case !aborting && isCtxErr(err) && hd.state != stateEnded && hd.state != stateHeld && hd.conn.Err() == nil:
		// The request was abandoned, not answered: a grant may be on
		// its way, which the abort releases (see runAbort).
		h.endLocked(hd, nil)
		op = h.abortLocked(hd)
	case !aborting && hd.state == stateHeld:
		// A Wait on a grant held since its Enqueue failed (wait keeps
		// the hold when only its context ended on a sound connection):
		// the connection broke or the server no longer knows the grant.
		// That ends a held lock as the renewer's finding would, as a
		// loss, not as a release.
		lost = h.lostLocked(hd, err)
	default:
		h.endLocked(hd, nil)
	}
	h.mu.Unlock()
	switch {
	case op != nil:
		h.runAbort(ctx, op)
	case !aborting:
		h.stop(hd)
	}
	if lost != nil {
		if cb := hd.sp.onRenewError; cb != nil {
			cb(lost)
		}
	}
	switch {
	case errors.Is(err, ErrTimeout):
		return nil
	case ctx.Err() != nil:
		return ctx.Err()
	case aborting && errors.Is(err, ErrClosed):
		// A Release or a new Acquire ended the call: the connection
		// closed because this process closed it (the server's close
		// after the half-close is the abort's doing), as with Close.
		return errClosedHere
	}
	return err
}

// orBackground is ctx, or context.Background() for a nil ctx: Lock and
// Semaphore take nil as no context rather than panic, possibly in a
// goroutine of their own that no caller could recover (a release goes on
// in the background).
func orBackground(ctx context.Context) context.Context {
	if ctx == nil {
		return context.Background()
	}
	return ctx
}

// isCtxErr tells whether err is a context's error: a call gave up on its
// context, which says nothing about the hold.
func isCtxErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// ctxErr is ctx.Err(), or err while ctx has not caught up with its
// deadline yet.
func ctxErr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	return err
}

// joinErr joins two errors, returning either unchanged when the other is
// nil.
func joinErr(a, b error) error {
	switch {
	case a == nil:
		return b
	case b == nil:
		return a
	}
	return errors.Join(a, b)
}

// release ends the current hold, releasing the grant first, waits (within
// ctx) for the releases in flight, and returns what was unreported: the
// failure of a release, the loss of a hold since the last Release. If ctx
// ends first it returns ctx.Err(), and the releases go on in the
// background; what they report is kept for the next Release.
func (h *holder) release(ctx context.Context) error {
	ctx = orBackground(ctx)
	h.mu.Lock()
	hd := h.cur
	var op *releaseOp
	var lost error
	if hd != nil {
		op, lost = h.endCurLocked(hd)
	}
	h.mu.Unlock()
	if hd != nil {
		h.runEnd(ctx, hd, op, lost)
	}
	h.mu.Lock()
	ops := slices.Clone(h.releasing) // runRelease removes in place
	h.mu.Unlock()
	abortDeadline := time.Now().Add(abortWait) // one bound for all the aborts
	for _, op := range ops {
		select {
		case <-op.done: // answered already: report it even if ctx has ended
			continue
		default:
		}
		answered := false
		if op.hd != nil {
			select {
			case <-op.answered:
				// Before the bound is looked at: it may have passed
				// while earlier releases were waited for.
				answered = true
			default:
			}
		}
		if op.hd != nil && !answered {
			t := time.NewTimer(time.Until(abortDeadline))
			select {
			case <-op.answered:
			case <-t.C:
				// A server that keeps serving a blocked request after
				// a half-close (dflockd 1.10) ends the abort only when
				// it answers: it goes on in the background, and what
				// it finds is released then and reported by the next
				// Release.
				continue
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			}
			t.Stop()
			// The server has answered: the releases of the grants it
			// sent are waited for as any release is (bounded by
			// releaseWait), however slow the link.
		}
		select {
		case <-op.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	err := h.unreported
	h.unreported = nil
	if op != nil && op.cut {
		// A Close cut this call's own release off while it waited: that
		// is a release not confirmed, not a background one nobody waits
		// for (those report nothing).
		err = joinErr(err, op.err)
	}
	return err
}

// endCurLocked ends the current hold hd for Release or a new Acquire: a
// held grant is released (op), a hold not held yet is aborted (op: a
// grant may be on its way), a held one whose connection broke is lost
// (lost: the renewer had not noticed yet). runEnd starts it once h.mu is
// released.
func (h *holder) endCurLocked(hd *hold) (op *releaseOp, lost error) {
	switch {
	case hd.state == stateHeld && hd.conn.Err() != nil:
		return nil, h.lostLocked(hd, hd.conn.Err())
	case hd.state == stateHeld:
		op = h.releaseLocked(hd, hd.conn, hd.grant)
	case hd.conn != nil:
		op = h.abortLocked(hd)
	}
	h.endLocked(hd, nil)
	return op, nil
}

// runEnd carries out what endCurLocked decided for hd.
func (h *holder) runEnd(ctx context.Context, hd *hold, op *releaseOp, lost error) {
	switch {
	case lost != nil:
		h.stop(hd)
		if cb := hd.sp.onRenewError; cb != nil {
			cb(lost)
		}
	case op == nil:
		h.stop(hd) // dialling: start closes what it dials
	case op.hd != nil:
		h.runAbort(ctx, op)
	default:
		h.stopRenewer(hd)
		h.runRelease(ctx, op)
	}
}

// releaseLocked registers the release of hd's grant g on conn, its
// connection, in the critical section that ends hd: a Close that sees hd
// ended sees its release too. runRelease starts it once hd's renewer is
// stopped.
func (h *holder) releaseLocked(hd *hold, conn *Conn, g Grant) *releaseOp {
	op := &releaseOp{conn: conn, g: g, expires: hd.expires, sp: hd.sp, done: make(chan struct{})}
	h.releasing = append(h.releasing, op)
	return op
}

// runRelease sends op's release in the background and closes its
// connection once the release is answered (or failed). It is sent even if
// ctx has ended: closing instead would leave the lock held until its lease
// ends where the server's auto-release is off, and nothing could release
// it later. It is bounded by releaseWait. A failure goes to h.unreported,
// unless Close cut the release off.
func (h *holder) runRelease(ctx context.Context, op *releaseOp) {
	go func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseWait)
		err := op.conn.release(rctx, op.g)
		cancel()
		_ = op.conn.Close()
		switch {
		case err == nil:
		case !time.Now().Before(op.expires):
			// The lease may have run out before the server saw the
			// release (a pause longer than the renewer's margin): the
			// hold cannot be shown to have lasted until the release.
			err = fmt.Errorf("%w: %s %q: the lease ran out before the release was answered: %w", ErrLost, op.sp.kind, op.sp.key, err)
		case isCtxErr(err):
			err = fmt.Errorf("dflockd: %s %q: release not answered within %v: %w", op.sp.kind, op.sp.key, releaseWait, err)
		}
		h.mu.Lock()
		if err != nil && op.unanswered && !errors.Is(err, ErrLost) {
			err = fmt.Errorf("dflockd: %s %q: release not answered within %v of a new acquire: %w", op.sp.kind, op.sp.key, reacquireReleaseWait, err)
		} else if err != nil && !op.cut && !errors.Is(err, ErrLost) && (errors.Is(err, ErrClosed) || errors.Is(err, ErrServer)) {
			// The connection broke first (the server released with it,
			// or will at the lease's end), or the server no longer knew
			// the token: the hold cannot be shown to have lasted until
			// the release. (Cut off by Close, it is not a loss.)
			err = fmt.Errorf("%w: %s %q: release failed: %w", ErrLost, op.sp.kind, op.sp.key, err)
		}
		h.finishOpLocked(op, err)
		h.mu.Unlock()
	}()
}

// close ends the current hold without releasing: the server releases when
// the connection closes (or when the lease runs out, with auto-release
// off).
func (h *holder) close() error {
	h.mu.Lock()
	hd := h.cur
	if hd != nil {
		h.endLocked(hd, nil)
	}
	ops := slices.Clone(h.releasing)
	for _, op := range ops {
		op.cut = true
		if op.stop != nil {
			op.stop()
		}
	}
	h.mu.Unlock()
	if hd != nil {
		h.stop(hd)
	}
	// Close does not release: a release still in flight (its Release's
	// context ended first) is cut off with its connection, as a held
	// lock's would be, and waited for, so nothing the Lock started
	// outlives Close. As for a held lock, nothing is left to report.
	for _, op := range ops {
		_ = op.conn.Close()
		<-op.done
	}
	return nil
}

// lostLocked ends hd as lost and keeps the loss for the next Release;
// the caller stops hd and calls OnRenewError with the error returned.
func (h *holder) lostLocked(hd *hold, cause error) error {
	err := fmt.Errorf("%w: %s %q: %w", ErrLost, hd.sp.kind, hd.sp.key, cause)
	h.endLocked(hd, err)
	h.unreported = joinErr(h.unreported, err)
	return err
}

// beginCall counts a request about to be sent for hd (see hold.calls),
// unless hd has ended; twoPhase marks an e/se.
func (h *holder) beginCall(hd *hold, twoPhase bool) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if hd.state == stateEnded {
		return false
	}
	hd.twoPhase = hd.twoPhase || twoPhase
	hd.calls.Add(1)
	return true
}

// abortLocked registers the abort of hd, which ended (under h.mu) while
// connecting or queued: a request of it may be in flight, and the grant
// it brings must be released, not dropped with the connection (with the
// server's auto-release off it would stay held until its lease ends).
// runAbort starts it.
func (h *holder) abortLocked(hd *hold) *releaseOp {
	op := &releaseOp{conn: hd.conn, sp: hd.sp, hd: hd, leave: hd.twoPhase, done: make(chan struct{}), answered: make(chan struct{})}
	hd.abort = op
	h.releasing = append(h.releasing, op)
	return op
}

// runAbort ends op's hold in the background: the connection shuts its
// sending side after what is queued (Conn.abort; for a two-phase hold a
// zero-timeout wait goes first, collecting a place granted meanwhile),
// the hold's requests in flight get their replies, and every grant that
// turns up (to an abandoned call, or to a caller after the hold ended) is
// released from a fresh connection. Like runRelease it is bounded by
// releaseWait (for each of the two steps), a failure goes to
// h.unreported, and Close cuts it off.
func (h *holder) runAbort(ctx context.Context, op *releaseOp) {
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	h.mu.Lock()
	op.stop = cancel
	cut := op.cut
	h.mu.Unlock()
	if cut {
		cancel()
	}
	go func() {
		defer cancel()
		var leave *codec.Request
		if op.leave {
			leave = &codec.Request{Cmd: codec.CmdWait, Key: []byte(op.sp.key)}
			if op.sp.limit > 0 {
				leave.Cmd = codec.CmdSemWait
			}
		}
		orphans := op.conn.abort(releaseWait, leave)
		op.hd.calls.Wait() // the connection is closed: every call returns
		close(op.answered)
		h.mu.Lock()
		grants := op.late
		h.mu.Unlock()
		for _, o := range orphans {
			if o.key == op.sp.key && o.sem == (op.sp.limit > 0) {
				var text [codec.TokenLen]byte
				grants = append(grants, Grant{Key: o.key, Limit: op.sp.limit, Token: string(o.token.AppendText(text[:0])), tok: o.token})
			}
		}
		var err error
		if len(grants) > 0 && rctx.Err() == nil {
			err = h.releaseLate(rctx, op.sp, grants)
		}
		h.mu.Lock()
		h.finishOpLocked(op, err)
		h.mu.Unlock()
	}()
}

// releaseLate releases grants that reached an ended hold, from a fresh
// connection, within releaseWait.
func (h *holder) releaseLate(ctx context.Context, sp spec, grants []Grant) error {
	ctx, cancel := context.WithTimeout(ctx, releaseWait)
	defer cancel()
	conn, err := sp.dial(ctx)
	if err != nil {
		return fmt.Errorf("dflockd: %s %q: a grant that came after the acquire ended was not released: %w", sp.kind, sp.key, err)
	}
	defer func() { _ = conn.Close() }()
	var errs error
	seen := make(map[string]bool, len(grants))
	for _, g := range grants {
		if seen[g.Token] {
			continue // the same grant twice: e answered acquired, then the leave's w
		}
		seen[g.Token] = true
		if err := conn.release(ctx, g); err != nil && !errors.Is(err, ErrServer) {
			// (ErrServer: the server no longer holds it for this token,
			// so there is nothing left to release.)
			errs = joinErr(errs, fmt.Errorf("dflockd: %s %q: a grant that came after the acquire ended was not released: %w", sp.kind, sp.key, err))
		}
	}
	return errs
}

// finishOpLocked ends op with err: kept for the next Release unless
// Close cut op off, and op leaves h.releasing.
func (h *holder) finishOpLocked(op *releaseOp, err error) {
	op.err = err
	if !op.cut {
		h.unreported = joinErr(h.unreported, err)
	}
	h.removeOpLocked(op)
	close(op.done)
}

// removeOpLocked drops op from h.releasing.
func (h *holder) removeOpLocked(op *releaseOp) {
	for i, o := range h.releasing {
		if o == op {
			h.releasing = append(h.releasing[:i], h.releasing[i+1:]...)
			return
		}
	}
}

// endLocked marks hd ended, with err set if it was lost.
func (h *holder) endLocked(hd *hold, err error) {
	if hd.state == stateEnded {
		return
	}
	hd.state, hd.err = stateEnded, err
	close(hd.done)
	if hd.cancelDial != nil {
		hd.cancelDial() // a dial still in progress gives up
	}
	if h.cur == hd {
		h.cur = nil
	}
	h.last = hd
}

// stop stops hd's renewer and closes its connection. Never called from
// the renewer itself.
func (h *holder) stop(hd *hold) {
	h.stopRenewer(hd)
	h.mu.Lock()
	conn := hd.conn
	h.mu.Unlock()
	if conn != nil {
		_ = conn.Close()
	}
}

func (h *holder) stopRenewer(hd *hold) {
	h.mu.Lock()
	cancel, done := hd.stopRenew, hd.renewDone
	h.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

// renewLoop renews hd's lease at renewRatio of each lease (less the jitter)
// until stopped.
// A failed renewal, the connection breaking, or the lease running out
// before a renewal is answered loses the hold.
func (h *holder) renewLoop(ctx context.Context, hd *hold) {
	defer close(hd.renewDone)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	conn, sp := hd.conn, hd.sp
	for {
		h.mu.Lock()
		g, expires, at := hd.grant, hd.expires, hd.renewAt
		h.mu.Unlock()
		timer.Reset(time.Until(at))
		select {
		case <-ctx.Done():
			return
		case <-conn.Done():
			h.lose(hd, conn.Err())
			return
		case <-timer.C:
		}
		sent := time.Now()
		rctx, cancel := context.WithDeadline(ctx, expires)
		ng, err := conn.renew(rctx, g, sp.leaseTTL)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return // stopped: not a failure
			}
			if errors.Is(err, context.DeadlineExceeded) {
				err = errors.New("dflockd: lease ran out before a renewal was answered")
			}
			h.lose(hd, err)
			return
		}
		h.mu.Lock()
		hd.grant = ng
		hd.expires = sent.Add(ng.Lease)
		hd.renewAt = sent.Add(sp.renewAfter(ng.Lease))
		h.mu.Unlock()
	}
}

// lose ends hd as lost, unless it already ended, and reports the cause to
// OnRenewError. Called from the renewer only.
func (h *holder) lose(hd *hold, cause error) {
	h.mu.Lock()
	if hd.state == stateEnded {
		h.mu.Unlock()
		return
	}
	err := h.lostLocked(hd, cause)
	h.mu.Unlock()
	_ = hd.conn.Close()
	if cb := hd.sp.onRenewError; cb != nil {
		cb(err)
	}
}

// ---- accessors ----

func (h *holder) token() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if hd := h.cur; hd != nil && hd.state == stateHeld {
		return hd.grant.Token
	}
	return ""
}

func (h *holder) grant() (Grant, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if hd := h.cur; hd != nil && hd.state == stateHeld {
		return hd.grant, true
	}
	return Grant{}, false
}

func (h *holder) done() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cur != nil {
		return h.cur.done
	}
	return closedCh
}

func (h *holder) err() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cur == nil && h.last != nil {
		return h.last.err
	}
	return nil
}
