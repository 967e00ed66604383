package client

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lockreactor/dflockd/codec"
)

// maxReplyLen bounds one reply line (a stats reply grows with the number of
// keys: up to ~1.6 MB with the server's default --max-locks and long keys
// of control bytes), so a broken or hostile server cannot make the client
// buffer without limit. A longer reply is skipped up to its newline and
// fails only its own call: the connection, and what it holds, stay.
const maxReplyLen = 4 << 20

// errReplyTooLong is the error of a call whose reply was skipped.
var errReplyTooLong = fmt.Errorf("%w: reply longer than %d bytes", ErrServer, maxReplyLen)

// Conn is one connection to a dflockd server, safe for concurrent use.
//
// Requests from any number of goroutines are written in the order they are
// made and may be pipelined; one reader goroutine matches the replies, which
// the server sends strictly in request order, to a FIFO of pending calls.
//
// Requests are written by a writer goroutine of the connection, never by
// the caller, so a call whose context ends returns at once even while the
// socket does not take its bytes (a stalled server); the request stays
// queued in order, and a write that cannot finish within
// DefaultWriteTimeout breaks the connection.
//
// A call whose context ends before its reply arrives returns ctx.Err() at
// once and is abandoned, but the connection stays open: closing it would
// make the server drop every lock the connection holds. The abandoned
// reply is consumed by the reader when it comes; if it is a grant, the
// reader releases it at once, and if it is a "queued" place from Enqueue,
// the reader leaves the queue (a zero-timeout wait, releasing a grant that
// raced in). The server answers in order, so a blocked acquire or wait —
// abandoned or not — holds back the replies to every later request on the
// connection until it is granted or its server-side timeout ends. The
// client caps that timeout at the context's deadline (rounded up to a
// second), but a context cancelled without a deadline cannot shorten it:
// do not put a long blocking acquire on a connection whose held locks need
// renewing within that time (Lock and Semaphore use a connection each).
//
// While an abandoned acquire, enqueue or wait for a key is unanswered (or
// its clean-up not yet sent), a new Acquire, Enqueue or Wait for the same
// key (and namespace) on the same Conn is held back, within its own
// context, until the abandoned reply has arrived and its release or
// queue-leave is queued ahead of it. Otherwise the new request would reach
// the server first and, the server answering in order, wait behind the
// very grant that is about to be released. Requests for other keys are
// not held back.
//
// Closing a Conn, or losing it, makes the server release everything it
// held (with auto-release on, the default).
type Conn struct {
	nc           net.Conn
	raw          net.Conn // the TCP connection under nc; closed to break nc at once
	br           *bufio.Reader
	long         []byte // reader-only: assembles replies longer than br's buffer
	heartbeat    time.Duration
	writeTimeout time.Duration
	grace        time.Duration // replyGrace (tests shorten it)

	mu       sync.Mutex
	wbuf     []byte        // requests not yet written
	spare    []byte        // the buffer being written, reused for the next batch
	flushing bool          // the writer has been woken for wbuf; others only append
	wake     chan struct{} // capacity 1: wakes the writer goroutine
	pending  fifo          // calls awaiting replies, in wire order
	// abandoned counts, per key and namespace, the abandoned calls that
	// may still produce a grant or a queued place (acquire, enqueue,
	// wait) and whose reply has not been cleaned up. gates holds the
	// requests held back for a key, in call order: only the head goes,
	// when the key's count is 0 (its channel is closed then). See Conn,
	// and gateLocked.
	abandoned map[abandonKey]int
	gates     map[abandonKey][]chan struct{}
	err       error // why the connection broke; nil while usable
	lastWrite time.Time
	// chainEnd is the latest moment the server may answer the last
	// pending request: replies come in order and a blocked request holds
	// back those behind it, so a request's own timeout counts from the
	// latest answer to the one before it.
	chainEnd time.Time
	// watch breaks the connection when the oldest pending request is
	// replyGrace past its chainEnd (see watchdog); watchAt is when it is
	// set to fire, zero when it is not armed.
	watch   *time.Timer
	watchAt time.Time
	suspect *call // found overdue once; broken if still so at the recheck

	// aborting: abort has begun. No new call is taken, and the grant of an
	// abandoned call goes to orphans rather than being released here (the
	// sending side is shut once the queued requests are written; shut).
	aborting bool
	shut     bool
	orphans  []orphan

	broken     chan struct{} // closed when err is set
	readerDone chan struct{}
	bg         sync.WaitGroup // writer and heartbeat
}

// orphan is a grant that reached an abandoned call after abort began: the
// connection can no longer send its release.
type orphan struct {
	sem   bool
	key   string
	token codec.Token
}

// abandonKey names a resource: a key in the lock or semaphore namespace.
type abandonKey struct {
	sem bool
	key string
}

// Dial connects to a dflockd server at addr (host:port) with
// DefaultDialTimeout and TCP keep-alive.
func Dial(addr string) (*Conn, error) {
	return DialContext(context.Background(), addr)
}

// DialTLS connects to a dflockd server at addr over TLS (a nil cfg is an
// empty tls.Config).
func DialTLS(addr string, cfg *tls.Config) (*Conn, error) {
	if cfg == nil {
		cfg = &tls.Config{}
	}
	return DialContext(context.Background(), addr, WithTLS(cfg))
}

// DialContext connects to a dflockd server at addr: TCP, then TLS and auth
// when the options ask for them. ctx bounds the whole setup; without a
// deadline the dialer's Timeout bounds all of it (DefaultDialTimeout,
// unless WithDialer gives a dialer with another, or none for 0).
func DialContext(ctx context.Context, addr string, opts ...DialOption) (*Conn, error) {
	var dc dialConfig
	for _, fn := range opts {
		fn(&dc)
	}
	d := dc.dialer
	if d == nil {
		d = &net.Dialer{Timeout: DefaultDialTimeout, KeepAlive: defaultKeepAlive}
	}
	if _, ok := ctx.Deadline(); !ok && d.Timeout > 0 {
		// One bound for TCP, TLS and auth together, not one each.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d.Timeout)
		defer cancel()
	}
	var (
		nc, raw net.Conn
		err     error
	)
	if dc.tls != nil {
		td := &tls.Dialer{NetDialer: d, Config: dc.tls}
		nc, err = td.DialContext(ctx, "tcp", addr)
		if err == nil {
			raw = nc.(*tls.Conn).NetConn()
		}
	} else {
		nc, err = d.DialContext(ctx, "tcp", addr)
		raw = nc
	}
	if err != nil {
		return nil, err
	}
	c := newConn(nc, raw)
	if dc.auth != "" {
		if err := c.Auth(ctx, dc.auth); err != nil {
			_ = c.Close()
			return nil, err
		}
	}
	// After auth: a ping before it would be answered error_auth and the
	// connection closed.
	c.startHeartbeat(dc.heartbeat)
	return c, nil
}

func newConn(nc, raw net.Conn) *Conn {
	c := &Conn{
		nc:           nc,
		raw:          raw,
		br:           bufio.NewReaderSize(nc, 4096),
		writeTimeout: DefaultWriteTimeout,
		grace:        replyGrace,
		lastWrite:    time.Now(),
		wake:         make(chan struct{}, 1),
		broken:       make(chan struct{}),
		readerDone:   make(chan struct{}),
	}
	go c.readLoop()
	c.bg.Add(1)
	go c.writeLoop()
	return c
}

// startHeartbeat starts pinging the idle connection every d (none for
// d <= 0). Called once, before the Conn is shared.
func (c *Conn) startHeartbeat(d time.Duration) {
	if d <= 0 {
		return
	}
	c.mu.Lock()
	c.heartbeat = d
	c.lastWrite = time.Now()
	c.mu.Unlock()
	c.bg.Add(1)
	go c.heartbeatLoop()
}

// Close closes the connection; the server then releases everything it
// holds (with auto-release on). Calls in flight fail with ErrClosed. Close
// waits for the connection's goroutines to exit and is idempotent.
func (c *Conn) Close() error {
	c.mu.Lock()
	c.breakLocked(errClosedHere)
	c.mu.Unlock()
	<-c.readerDone
	c.bg.Wait()
	return nil
}

// Done returns a channel that is closed when the connection is closed or
// breaks (read or write failure, the server going away, a malformed reply).
func (c *Conn) Done() <-chan struct{} { return c.broken }

// Err returns nil while the connection is usable, and afterwards why it is
// not (an error matching ErrClosed, or ErrServer for a protocol violation).
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// errAborting is the error of a call made after abort began.
var errAborting = fmt.Errorf("%w: the connection is being shut down", errClosedHere)

// abort ends the connection without losing a grant that is on its way,
// for a Lock or Semaphore whose acquire or two-phase place ends while a
// request may be in flight (closing at once would drop such a grant,
// which with the server's auto-release off stays held until its lease
// ends). leave, if not nil, is queued first (a zero-timeout wait: it
// collects a place that was granted meanwhile, or leaves the queue). The
// requests queued are written, then the sending side is shut: this server
// then drops a request still blocked at once, answers what it had decided,
// and closes (dflockd 1.10 closes; either way a blocked request goes). The
// replies are read until the server closes, for at most wait. Replies to
// calls still waiting go to their callers as usual; the grants that reach
// abandoned calls meanwhile are returned, for the caller to release from
// another connection (tokens are bearer credentials). The connection is
// closed when abort returns.
func (c *Conn) abort(wait time.Duration, leave *codec.Request) []orphan {
	c.mu.Lock()
	if c.err != nil || c.aborting {
		c.mu.Unlock()
		_ = c.Close()
		return nil
	}
	if leave != nil {
		c.sendDetachedLocked(leave, string(leave.Key))
	}
	c.aborting = true
	if !c.flushing { // else the writer sees aborting once it has flushed
		c.flushing = true
		select {
		case c.wake <- struct{}{}:
		default:
		}
	}
	c.mu.Unlock()
	t := time.NewTimer(wait)
	select {
	case <-c.readerDone:
	case <-t.C:
	}
	t.Stop()
	_ = c.Close()
	c.mu.Lock()
	defer c.mu.Unlock()
	o := c.orphans
	c.orphans = nil
	return o
}

// closeWrite shuts the sending side (a TLS close_notify, then the TCP
// FIN). Writer only, after the last request is written. A connection that
// cannot half-close is closed.
func (c *Conn) closeWrite() {
	type closeWriter interface{ CloseWrite() error }
	_ = c.nc.SetWriteDeadline(time.Now().Add(c.writeTimeout))
	var err error
	if c.raw != c.nc {
		if cw, ok := c.nc.(closeWriter); ok {
			err = cw.CloseWrite()
		}
	}
	if cw, ok := c.raw.(closeWriter); ok && err == nil {
		err = cw.CloseWrite()
	} else if err == nil {
		err = errors.New("cannot shut the sending side")
	}
	if err != nil {
		c.fail(fmt.Errorf("%w: %w", ErrClosed, err))
	}
}

// RemoteAddr returns the server's address.
func (c *Conn) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }

// ---- calls ----

const (
	callWaiting   uint32 = iota // the caller waits on done
	callDone                    // the reply (or err) is in; done signalled
	callAbandoned               // the caller left; the reader cleans up
)

// call is one request awaiting its reply. The reader owns it from the
// moment it is queued until it is completed; a caller that abandons it
// hands it to the reader for good.
type call struct {
	state atomic.Uint32
	done  chan struct{} // capacity 1; signalled once per use
	cmd   codec.Command
	key   string // for cleaning up an abandoned grant
	flags callFlags
	reply codec.Reply // Body always nil; see body
	body  []byte
	err   error
	// due is when the reply is overdue: the server should have answered
	// by then (see Conn.chainEnd) plus replyGrace.
	due time.Time
}

// callFlags adjust how a reply is handled.
type callFlags uint8

const (
	wantBody  callFlags = 1 << iota // keep a copy of the reply's body (stats)
	keepGrant                       // if abandoned, do not release the grant: the caller holds it already
)

var callPool = sync.Pool{New: func() any { return &call{done: make(chan struct{}, 1)} }}

func getCall(cmd codec.Command, key string) *call {
	cl := callPool.Get().(*call)
	cl.state.Store(callWaiting)
	cl.cmd, cl.key = cmd, key
	return cl
}

func putCall(cl *call) {
	cl.key, cl.flags, cl.body, cl.err = "", 0, nil, nil
	cl.reply = codec.Reply{}
	callPool.Put(cl)
}

// fifo is the queue of pending calls: a slice with a moving head, compacted
// when it would grow, so the steady state allocates nothing.
type fifo struct {
	q    []*call
	head int
}

func (f *fifo) push(cl *call) {
	if f.head > 0 && len(f.q) == cap(f.q) {
		n := copy(f.q, f.q[f.head:])
		clear(f.q[n:])
		f.q, f.head = f.q[:n], 0
	}
	f.q = append(f.q, cl)
}

func (f *fifo) pop() *call {
	if f.head == len(f.q) {
		return nil
	}
	cl := f.q[f.head]
	f.q[f.head] = nil
	if f.head++; f.head == len(f.q) {
		f.q, f.head = f.q[:0], 0
	}
	return cl
}

func (f *fifo) len() int { return len(f.q) - f.head }

func (f *fifo) peek() *call {
	if f.head == len(f.q) {
		return nil
	}
	return f.q[f.head]
}

// roundTrip queues req for the writer and waits for its reply or for ctx.
// The returned body (stats only) belongs to the caller.
func (c *Conn) roundTrip(ctx context.Context, req *codec.Request, key string, flags callFlags) (codec.Reply, []byte, error) {
	if err := ctx.Err(); err != nil {
		return codec.Reply{}, nil, err
	}
	c.mu.Lock()
	if err := c.err; err != nil {
		c.mu.Unlock()
		return codec.Reply{}, nil, err
	}
	if c.aborting {
		c.mu.Unlock()
		return codec.Reply{}, nil, errAborting
	}
	if len(c.abandoned) > 0 || len(c.gates) > 0 {
		if err := c.gateLocked(ctx, req, key); err != nil {
			c.mu.Unlock()
			return codec.Reply{}, nil, err
		}
	}
	cl := getCall(req.Cmd, key)
	cl.flags = flags
	c.enqueueLocked(req, cl)
	c.mu.Unlock()

	select {
	case <-cl.done:
	case <-ctx.Done():
		if c.abandon(cl) {
			return codec.Reply{}, nil, ctx.Err()
		}
		<-cl.done // the reply won the race: use it
	}
	r, body, err := cl.reply, cl.body, cl.err
	putCall(cl)
	return r, body, err
}

// resourceOf tells whether cmd asks for a grant of key (acquire, enqueue,
// wait) and in which namespace.
func resourceOf(cmd codec.Command) (sem, ok bool) {
	switch cmd {
	case codec.CmdLock, codec.CmdEnqueue, codec.CmdWait:
		return false, true
	case codec.CmdSemLock, codec.CmdSemEnqueue, codec.CmdSemWait:
		return true, true
	}
	return false, false
}

// tracked tells whether cl, once abandoned, is counted in c.abandoned: a
// request that may bring a grant or a queued place to clean up. cmd, key
// and flags do not change while the call is in use, so the caller that
// abandons it and the reader that settles it agree.
func (cl *call) tracked() (abandonKey, bool) {
	sem, ok := resourceOf(cl.cmd)
	if !ok || cl.flags&keepGrant != 0 {
		return abandonKey{}, false
	}
	return abandonKey{sem: sem, key: cl.key}, true
}

// abandon hands cl to the reader for good, unless its reply or the
// connection's failure came first. Under c.mu, so that the reader, which
// settles an abandoned call under c.mu after failing to complete it,
// always finds it counted.
func (c *Conn) abandon(cl *call) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !cl.state.CompareAndSwap(callWaiting, callAbandoned) {
		return false
	}
	if k, ok := cl.tracked(); ok && c.err == nil {
		if c.abandoned == nil {
			c.abandoned = make(map[abandonKey]int)
		}
		c.abandoned[k]++
	}
	return true
}

// settleLocked uncounts the abandoned call cl once its reply has been
// dealt with (its clean-up, if any, queued), and wakes the requests held
// back for its key.
func (c *Conn) settleLocked(cl *call) {
	k, ok := cl.tracked()
	if !ok {
		return
	}
	switch n := c.abandoned[k]; {
	case n > 1:
		c.abandoned[k] = n - 1
	case n == 1:
		delete(c.abandoned, k)
		c.openGateLocked(k)
	}
}

// openGateLocked lets the first request held back for k go, if nothing
// abandoned for k is unsettled.
func (c *Conn) openGateLocked(k abandonKey) {
	q := c.gates[k]
	if len(q) == 0 || c.abandoned[k] > 0 {
		return
	}
	select {
	case <-q[0]: // open already
	default:
		close(q[0])
	}
}

// leaveGateLocked removes ch from k's held-back requests and lets the
// next one go (it cannot enqueue before the caller, who holds c.mu until
// its own request is queued).
func (c *Conn) leaveGateLocked(k abandonKey, ch chan struct{}) {
	q := c.gates[k]
	for i := range q {
		if q[i] == ch {
			q = append(q[:i], q[i+1:]...)
			break
		}
	}
	if len(q) == 0 {
		delete(c.gates, k)
		return
	}
	c.gates[k] = q
	c.openGateLocked(k)
}

// gateLocked holds req back while an abandoned request for the same key
// is unsettled (see Conn), waiting within ctx; called and returning with
// c.mu held and c.err nil, unless it returns an error. A request that had
// to wait has its server-side timeout capped anew at ctx's deadline.
func (c *Conn) gateLocked(ctx context.Context, req *codec.Request, key string) error {
	sem, ok := resourceOf(req.Cmd)
	if !ok {
		return nil
	}
	k := abandonKey{sem: sem, key: key}
	if c.abandoned[k] == 0 && len(c.gates[k]) == 0 {
		return nil
	}
	// Held back, behind the requests held back before it: they go one at
	// a time, in call order, each once the key has nothing abandoned.
	ch := make(chan struct{})
	if c.gates == nil {
		c.gates = make(map[abandonKey][]chan struct{})
	}
	c.gates[k] = append(c.gates[k], ch)
	c.openGateLocked(k)
	for {
		c.mu.Unlock()
		select {
		case <-ch:
		case <-c.broken:
		case <-ctx.Done():
		}
		c.mu.Lock()
		err := c.err
		if err == nil {
			err = ctx.Err()
		}
		if err != nil {
			c.leaveGateLocked(k, ch)
			return err
		}
		if c.abandoned[k] == 0 {
			break
		}
		// Opened, but something for k was abandoned since: wait again,
		// still first in line.
		ch = make(chan struct{})
		c.gates[k][0] = ch
	}
	c.leaveGateLocked(k, ch)
	if req.Timeout > 0 {
		if dl, ok := ctx.Deadline(); ok {
			left := time.Until(dl)
			if left <= 0 {
				return context.DeadlineExceeded
			}
			req.Timeout = min(req.Timeout, ceilSeconds(left))
		}
	}
	return nil
}

// replyGrace is how long past the latest moment the server may answer a
// request (its own timeout, 0 for requests answered at once, counted from
// the latest answer to the requests before it on the connection) the
// client waits before it treats the connection as dead. The server answers
// a timeout within milliseconds, so only a server or network that stopped
// answering (a wedged or paused process, a half-open connection) gets
// there: the connection is then broken with an error that matches
// ErrClosed, failing every pending call even under a context that never
// ends, and the server, if it is still there, drops what it held.
const replyGrace = 10 * time.Second

// enqueueLocked appends req to the write buffer and cl to the FIFO in one
// critical section, so that wire order and FIFO order agree, and wakes
// the writer unless it is awake already.
func (c *Conn) enqueueLocked(req *codec.Request, cl *call) {
	c.wbuf = codec.AppendRequest(c.wbuf, req)
	now := time.Now()
	if c.pending.len() == 0 || c.chainEnd.Before(now) {
		c.chainEnd = now
	}
	c.chainEnd = c.chainEnd.Add(time.Duration(req.Timeout) * time.Second)
	cl.due = c.chainEnd.Add(c.grace)
	c.pending.push(cl)
	c.armWatchLocked(cl.due)
	if c.heartbeat > 0 {
		c.lastWrite = now
	}
	if c.flushing {
		return
	}
	c.flushing = true
	select {
	case c.wake <- struct{}{}:
	default: // a wake-up is pending already
	}
}

// writeLoop is the writer goroutine: woken by enqueueLocked, it writes
// the buffer until it stays empty. Callers never write, so none is held
// up by a socket that does not drain beyond its own context.
func (c *Conn) writeLoop() {
	defer c.bg.Done()
	for {
		select {
		case <-c.broken:
			return
		case <-c.wake:
		}
		c.mu.Lock()
		c.flushLocked()
		shut := c.aborting && !c.shut && c.err == nil
		if shut {
			c.shut = true
		}
		c.mu.Unlock()
		if shut {
			c.closeWrite()
		}
	}
}

// flushLocked writes the buffer until it stays empty, dropping the mutex
// around each write so that other callers can append meanwhile: requests
// made during a write go out together in the next one. Writer only.
func (c *Conn) flushLocked() {
	for len(c.wbuf) > 0 && c.err == nil {
		buf := c.wbuf
		c.wbuf = c.spare[:0]
		c.mu.Unlock()
		_ = c.nc.SetWriteDeadline(time.Now().Add(c.writeTimeout))
		_, err := c.nc.Write(buf)
		c.mu.Lock()
		c.spare = buf[:0]
		if err != nil {
			c.breakLocked(fmt.Errorf("%w: %w", ErrClosed, err))
		}
	}
	c.flushing = false
}

// sendDetachedLocked queues a request whose reply nobody waits for (a
// cleanup release or wait, a heartbeat ping). Called with c.mu held and
// c.err nil. A detached wait is counted as abandoned (see Conn) until the
// reader settles its reply.
func (c *Conn) sendDetachedLocked(req *codec.Request, key string) {
	cl := getCall(req.Cmd, key)
	cl.state.Store(callAbandoned)
	if k, ok := cl.tracked(); ok {
		if c.abandoned == nil {
			c.abandoned = make(map[abandonKey]int)
		}
		c.abandoned[k]++
	}
	c.enqueueLocked(req, cl)
}

// breakLocked marks the connection unusable, closes the socket and fails
// every pending call with err. Only the first call has any effect.
func (c *Conn) breakLocked(err error) {
	if c.err != nil {
		return
	}
	c.err = err
	close(c.broken)
	if c.watch != nil {
		c.watch.Stop()
	}
	_ = c.raw.Close() // never blocks, unlike a TLS close_notify
	for cl := c.pending.pop(); cl != nil; cl = c.pending.pop() {
		cl.err = err
		if cl.state.CompareAndSwap(callWaiting, callDone) {
			cl.done <- struct{}{}
		} else {
			putCall(cl)
		}
	}
	c.wbuf = c.wbuf[:0]
	clear(c.abandoned) // held-back requests see c.broken and leave
}

// armWatchLocked makes sure the watchdog runs no later than at.
func (c *Conn) armWatchLocked(at time.Time) {
	switch {
	case c.watch == nil:
		c.watch = time.AfterFunc(time.Until(at), c.watchdog)
	case c.watchAt.IsZero() || at.Before(c.watchAt):
		c.watch.Reset(time.Until(at))
	default:
		return
	}
	c.watchAt = at
}

// watchRecheck is how long the watchdog waits, after it first finds the
// oldest call overdue, before it breaks the connection: a process that was
// paused (SIGSTOP, a frozen cgroup or VM) wakes its timers and its reader
// together, and a reply already in the socket must get the chance to be
// read first.
const watchRecheck = time.Second

// clearSuspectLocked forgets cl as the watchdog's suspect once its reply
// is read: the pool may hand the same call to a later request.
func (c *Conn) clearSuspectLocked(cl *call) {
	if c.suspect == cl {
		c.suspect = nil
	}
}

// watchdog breaks the connection if its oldest pending call is overdue
// and still is at a recheck, and otherwise sets itself for when that call
// will be.
func (c *Conn) watchdog() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.watchAt = time.Time{}
	cl := c.pending.peek()
	if c.err != nil || cl == nil {
		c.suspect = nil
		return
	}
	now := time.Now()
	if now.Before(cl.due) {
		c.suspect = nil
		c.armWatchLocked(cl.due)
		return
	}
	if c.suspect != cl {
		c.suspect = cl
		c.armWatchLocked(now.Add(watchRecheck))
		return
	}
	c.breakLocked(fmt.Errorf("%w: no reply to %s within %v of when it was due", ErrClosed, cl.cmd, c.grace))
}

func (c *Conn) fail(err error) {
	c.mu.Lock()
	c.breakLocked(err)
	c.mu.Unlock()
}

// ---- the reader ----

func (c *Conn) readLoop() {
	defer close(c.readerDone)
	for {
		line, err := c.readLine()
		if errors.Is(err, errReplyTooLong) {
			c.mu.Lock()
			cl := c.pending.pop()
			c.clearSuspectLocked(cl)
			c.mu.Unlock()
			if cl == nil {
				c.fail(fmt.Errorf("%w: %w: reply without a request", ErrClosed, ErrServer))
				return
			}
			cl.err = err
			if cl.state.CompareAndSwap(callWaiting, callDone) {
				cl.done <- struct{}{}
			} else {
				// Abandoned: nothing to clean up from an unread reply.
				c.mu.Lock()
				c.settleLocked(cl)
				c.mu.Unlock()
				putCall(cl)
			}
			continue
		}
		if err != nil {
			c.fail(fmt.Errorf("%w: %w", ErrClosed, err))
			return
		}
		var r codec.Reply
		if !codec.ParseReply(line, &r) {
			c.fail(fmt.Errorf("%w: %w: malformed reply %.64q", ErrClosed, ErrServer, line))
			return
		}
		c.mu.Lock()
		cl := c.pending.pop()
		c.clearSuspectLocked(cl)
		c.mu.Unlock()
		if cl == nil {
			c.fail(fmt.Errorf("%w: %w: reply without a request %.64q", ErrClosed, ErrServer, line))
			return
		}
		if cl.flags&wantBody != 0 && r.Body != nil {
			cl.body = append([]byte(nil), r.Body...)
		}
		r.Body = nil // it aliases the read buffer
		cl.reply = r
		if cl.state.CompareAndSwap(callWaiting, callDone) {
			cl.done <- struct{}{}
			continue
		}
		c.cleanUp(cl)
		putCall(cl)
	}
}

// readLine returns the next reply line without its '\n'. The slice is valid
// until the next call.
func (c *Conn) readLine() ([]byte, error) {
	if cap(c.long) > 64<<10 {
		c.long = nil // a long reply's buffer is not kept for the Conn's life
	}
	line, err := c.br.ReadSlice('\n')
	if err == nil {
		return line[:len(line)-1], nil
	}
	if !errors.Is(err, bufio.ErrBufferFull) {
		return nil, err
	}
	c.long = append(c.long[:0], line...)
	for {
		line, err = c.br.ReadSlice('\n')
		n := len(c.long) + len(line)
		if err == nil {
			n-- // the '\n' is not the reply's
		}
		if n > maxReplyLen {
			c.long = c.long[:0]
			for errors.Is(err, bufio.ErrBufferFull) { // skip to the newline
				_, err = c.br.ReadSlice('\n')
			}
			if err != nil {
				return nil, err
			}
			return nil, errReplyTooLong
		}
		c.long = append(c.long, line...)
		switch {
		case err == nil:
			return c.long[:len(c.long)-1], nil
		case !errors.Is(err, bufio.ErrBufferFull):
			return nil, err
		}
	}
}

// cleanUp deals with the reply to an abandoned call: a grant is released,
// a queued place is left. The follow-up requests are abandoned calls too,
// so a grant that races into the zero-timeout wait is released in turn.
// The follow-up is queued and the call settled in one critical section,
// so a request held back for the key goes out after the follow-up.
func (c *Conn) cleanUp(cl *call) {
	c.mu.Lock()
	defer c.mu.Unlock()
	defer c.settleLocked(cl)
	r := &cl.reply
	var rel, wait codec.Command
	switch cl.cmd {
	case codec.CmdLock, codec.CmdEnqueue, codec.CmdWait:
		rel, wait = codec.CmdRelease, codec.CmdWait
	case codec.CmdSemLock, codec.CmdSemEnqueue, codec.CmdSemWait:
		rel, wait = codec.CmdSemRelease, codec.CmdSemWait
	default:
		return
	}
	var req codec.Request
	switch {
	case r.HasToken && (r.Code == codec.CodeOK || r.Code == codec.CodeAcquired):
		if cl.flags&keepGrant != 0 {
			return
		}
		if c.aborting {
			// The sending side is (about to be) shut: abort's caller
			// releases it from another connection.
			c.orphans = append(c.orphans, orphan{sem: rel == codec.CmdSemRelease, key: cl.key, token: r.Token})
			return
		}
		req = codec.Request{Cmd: rel, Key: []byte(cl.key), Token: r.Token}
	case r.Code == codec.CodeQueued:
		req = codec.Request{Cmd: wait, Key: []byte(cl.key)}
	default:
		return
	}
	if c.err == nil && !c.aborting {
		// (aborting: a queued place is left by abort's leave request,
		// queued after this reply's request.)
		c.sendDetachedLocked(&req, cl.key)
	}
}

// heartbeatLoop pings when nothing has been sent for the heartbeat interval
// and no request is outstanding (while one is, the server is busy with it
// and its read timeout does not run).
func (c *Conn) heartbeatLoop() {
	defer c.bg.Done()
	t := time.NewTimer(c.heartbeat)
	defer t.Stop()
	for {
		select {
		case <-c.broken:
			return
		case <-t.C:
		}
		c.mu.Lock()
		if c.err != nil {
			c.mu.Unlock()
			return
		}
		next := c.heartbeat - time.Since(c.lastWrite)
		if next <= 0 {
			next = c.heartbeat
			if c.pending.len() == 0 && !c.aborting {
				c.sendDetachedLocked(&codec.Request{Cmd: codec.CmdPing}, "")
			}
		}
		c.mu.Unlock()
		t.Reset(next)
	}
}
