package client

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/lockreactor/dflockd/codec"
)

// This file holds the context-first request methods of Conn. Every method
// that can wait takes a context; a server-side timeout is ErrTimeout, the
// context ending is ctx.Err(), and neither closes the connection.

// Acquire asks for the lock key (or, with WithLimit, a slot of semaphore
// key) and waits up to timeout for it, in queue order. timeout is rounded
// up to whole seconds and capped at ctx's deadline; 0 tries once and
// answers at once. It returns the Grant, ErrTimeout when the server's
// timeout ran out, ctx.Err() when ctx ended first (a grant arriving later
// is released at once), or another sentinel error. While an abandoned
// request for key on c is unanswered, Acquire, Enqueue and Wait for key
// wait for it first (see Conn).
func (c *Conn) Acquire(ctx context.Context, key string, timeout time.Duration, opts ...Option) (Grant, error) {
	o := collect(opts)
	return c.acquire(ctx, key, o.limit, timeout, o.leaseTTL)
}

// TryAcquire is Acquire with a zero timeout: it returns ErrTimeout at once
// when the lock or every slot is taken.
func (c *Conn) TryAcquire(ctx context.Context, key string, opts ...Option) (Grant, error) {
	return c.Acquire(ctx, key, 0, opts...)
}

// Enqueue is the first phase of a two-phase acquire: it joins the key's
// queue and answers at once. The Grant is held (Held, fast path: the key
// was free) or a queued place to pass to Wait. Between the phases the
// caller can do anything — tell another system it is next, say — while
// keeping its place in line. Options as for Acquire.
func (c *Conn) Enqueue(ctx context.Context, key string, opts ...Option) (Grant, error) {
	o := collect(opts)
	return c.enqueue(ctx, key, o.limit, o.leaseTTL)
}

// Wait is the second phase of a two-phase acquire on the connection that
// called Enqueue: it waits up to timeout (rounded up to whole seconds and
// capped at ctx's deadline) for the place g to be granted. A held g (fast
// path) is answered at once with the same token. The lease restarts when
// Wait answers. A server-side timeout (ErrTimeout) leaves the queue.
//
// If ctx ends first, a late grant is released — unless g was already held,
// in which case the caller keeps what it has.
func (c *Conn) Wait(ctx context.Context, g Grant, timeout time.Duration) (Grant, error) {
	var flags callFlags
	if g.Held() {
		flags = keepGrant
	}
	return c.wait(ctx, g.Key, g.Limit, timeout, flags)
}

// Renew extends the lease of g, by the lease given with WithLeaseTTL or
// else the server's default lease (not the lease g was granted with), and
// returns g with the new Lease. It fails with an ErrServer error when the
// token is unknown or its lease has already run out: expired grants are
// never revived.
func (c *Conn) Renew(ctx context.Context, g Grant, opts ...Option) (Grant, error) {
	return c.renew(ctx, g, collect(opts).leaseTTL)
}

// Release gives g back. It fails with an ErrServer error when the token is
// not held (already released, or expired).
func (c *Conn) Release(ctx context.Context, g Grant) error {
	return c.release(ctx, g)
}

// Ping asks the server to answer; a working heartbeat for servers that
// support ping (later dflockd and this one). dflockd 1.10 answers ping
// with an ErrServer error, which still proves the connection alive.
func (c *Conn) Ping(ctx context.Context) error {
	req := codec.Request{Cmd: codec.CmdPing}
	r, _, err := c.roundTrip(ctx, &req, "", 0)
	if err != nil {
		return err
	}
	return expectOK(req.Cmd, &r)
}

// Auth authenticates the connection with the server's shared secret; it
// must be the first request on a server started with --auth-token. A
// wrong or missing secret (error_auth) is ErrAuth, and the server then
// closes the connection. A bare error (no secret configured, or the
// connection is authenticated already) matches ErrAuth and ErrServer, and
// the connection stays.
func (c *Conn) Auth(ctx context.Context, secret string) error {
	if strings.ContainsAny(secret, "\n") || len(secret) > codec.MaxLineLen {
		return fmt.Errorf("%w: auth secret must be one line of at most %d bytes", ErrInvalid, codec.MaxLineLen)
	}
	req := codec.Request{Cmd: codec.CmdAuth, Arg: []byte(secret)}
	r, _, err := c.roundTrip(ctx, &req, "", 0)
	if err != nil {
		return err
	}
	return expectOK(req.Cmd, &r)
}

// Stats returns the server's state as one JSON object: connections, held
// and idle locks and semaphores (see PROTOCOL.md, "stats"). A reply over
// 4 MiB (a server tracking many thousands of long keys) fails with
// ErrServer; the connection stays.
func (c *Conn) Stats(ctx context.Context) (json.RawMessage, error) {
	req := codec.Request{Cmd: codec.CmdStats}
	r, body, err := c.roundTrip(ctx, &req, "", wantBody)
	if err != nil {
		return nil, err
	}
	if r.Code != codec.CodeOK || body == nil {
		return nil, replyErr(req.Cmd, &r)
	}
	return body, nil
}

// ---- shared by the Conn methods and the dflockd-compatible functions ----

// acquire: limit 0 = lock, > 0 = semaphore slot, < 0 invalid.
func (c *Conn) acquire(ctx context.Context, key string, limit int, timeout time.Duration, lease int) (Grant, error) {
	if err := checkResource(key, limit); err != nil {
		return Grant{}, err
	}
	secs, err := waitSeconds(ctx, timeout)
	if err != nil {
		return Grant{}, err
	}
	req := codec.Request{Cmd: codec.CmdLock, Key: []byte(key), Timeout: secs, Lease: int64(max(lease, 0))}
	if limit > 0 {
		req.Cmd, req.Limit = codec.CmdSemLock, int64(limit)
	}
	r, _, err := c.roundTrip(ctx, &req, key, 0)
	if err != nil {
		return Grant{}, err
	}
	return grantOf(req.Cmd, key, limit, &r, codec.CodeOK)
}

func (c *Conn) enqueue(ctx context.Context, key string, limit int, lease int) (Grant, error) {
	if err := checkResource(key, limit); err != nil {
		return Grant{}, err
	}
	req := codec.Request{Cmd: codec.CmdEnqueue, Key: []byte(key), Lease: int64(max(lease, 0))}
	if limit > 0 {
		req.Cmd, req.Limit = codec.CmdSemEnqueue, int64(limit)
	}
	r, _, err := c.roundTrip(ctx, &req, key, 0)
	if err != nil {
		return Grant{}, err
	}
	if r.Code == codec.CodeQueued {
		return Grant{Key: key, Limit: limit}, nil
	}
	return grantOf(req.Cmd, key, limit, &r, codec.CodeAcquired)
}

func (c *Conn) wait(ctx context.Context, key string, limit int, timeout time.Duration, flags callFlags) (Grant, error) {
	if err := checkResource(key, limit); err != nil {
		return Grant{}, err
	}
	secs, err := waitSeconds(ctx, timeout)
	if err != nil {
		return Grant{}, err
	}
	req := codec.Request{Cmd: codec.CmdWait, Key: []byte(key), Timeout: secs}
	if limit > 0 {
		req.Cmd = codec.CmdSemWait
	}
	r, _, err := c.roundTrip(ctx, &req, key, flags)
	if err != nil {
		return Grant{}, err
	}
	return grantOf(req.Cmd, key, limit, &r, codec.CodeOK)
}

func (c *Conn) renew(ctx context.Context, g Grant, lease int) (Grant, error) {
	cmd := codec.CmdRenew
	if g.semaphore() {
		cmd = codec.CmdSemRenew
	}
	tok, err := checkGrant(g)
	if err != nil {
		return g, err
	}
	req := codec.Request{Cmd: cmd, Key: []byte(g.Key), Token: tok, Lease: int64(max(lease, 0))}
	r, _, err := c.roundTrip(ctx, &req, g.Key, 0)
	if err != nil {
		return g, err
	}
	if r.Code != codec.CodeOK || !r.HasLease || r.HasToken {
		return g, replyErr(cmd, &r)
	}
	g.tok, g.Lease = tok, time.Duration(r.Lease)*time.Second
	return g, nil
}

func (c *Conn) release(ctx context.Context, g Grant) error {
	cmd := codec.CmdRelease
	if g.semaphore() {
		cmd = codec.CmdSemRelease
	}
	tok, err := checkGrant(g)
	if err != nil {
		return err
	}
	req := codec.Request{Cmd: cmd, Key: []byte(g.Key), Token: tok}
	r, _, err := c.roundTrip(ctx, &req, g.Key, 0)
	if err != nil {
		return err
	}
	return expectOK(cmd, &r)
}

// grantOf turns a reply into a Grant when its status is want and it
// carries a token and a lease.
func grantOf(cmd codec.Command, key string, limit int, r *codec.Reply, want codec.Code) (Grant, error) {
	if r.Code != want || !r.HasToken || !r.HasLease {
		return Grant{}, replyErr(cmd, r)
	}
	var text [codec.TokenLen]byte
	return Grant{
		Key:   key,
		Limit: limit,
		Token: string(r.Token.AppendText(text[:0])), // the one allocation of a grant
		Lease: time.Duration(r.Lease) * time.Second,
		tok:   r.Token,
	}, nil
}

// expectOK accepts a bare "ok".
func expectOK(cmd codec.Command, r *codec.Reply) error {
	if r.Code == codec.CodeOK && !r.HasToken && !r.HasLease && r.Body == nil {
		return nil
	}
	return replyErr(cmd, r)
}

// replyErr is the error for a reply that is not the success cmd expects.
func replyErr(cmd codec.Command, r *codec.Reply) error {
	switch r.Code {
	case codec.CodeOK, codec.CodeAcquired, codec.CodeQueued:
		return unexpected(cmd, r)
	}
	return statusErr(cmd, r.Code)
}

// checkKey applies the server's key rules before anything is sent: a key
// the server rejects would waste a round trip, and one longer than a line
// would make the server close the connection and drop its locks.
func checkKey(key string) error {
	switch {
	case key == "":
		return fmt.Errorf("%w: empty key", errRejected)
	case len(key) > codec.MaxLineLen:
		return fmt.Errorf("%w: key longer than %d bytes", errRejected, codec.MaxLineLen)
	case strings.ContainsAny(key, " \t\r\n"):
		return fmt.Errorf("%w: key contains whitespace", errRejected)
	}
	return nil
}

func checkResource(key string, limit int) error {
	if limit < 0 {
		return fmt.Errorf("%w: semaphore limit must be at least 1", errRejected)
	}
	return checkKey(key)
}

func checkGrant(g Grant) (codec.Token, error) {
	if err := checkKey(g.Key); err != nil {
		return codec.Token{}, err
	}
	tok, ok := g.token()
	if !ok {
		return codec.Token{}, errBadToken
	}
	return tok, nil
}

// ceilSeconds rounds d up to whole seconds: the protocol counts seconds,
// and truncating would turn 500ms into "try once".
func ceilSeconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	s := int64(d / time.Second)
	if d%time.Second != 0 {
		s++
	}
	return s
}

// waitSeconds is the server-side timeout for a wait of d under ctx: d
// rounded up, capped at ctx's deadline rounded up, so that an abandoned
// wait holds the connection back as briefly as the protocol allows.
func waitSeconds(ctx context.Context, d time.Duration) (int64, error) {
	s := ceilSeconds(d)
	if dl, ok := ctx.Deadline(); ok {
		left := time.Until(dl)
		if left <= 0 {
			return 0, context.DeadlineExceeded
		}
		s = min(s, ceilSeconds(left))
	}
	return min(s, codec.MaxSeconds), nil
}
