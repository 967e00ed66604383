package loadtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"net"
	"time"

	"github.com/lockreactor/dflockd/codec"
)

// Shard picks the server for key among n: IEEE CRC32 of the key mod n, as
// the dflockd clients shard.
func Shard(key []byte, n int) int {
	if n <= 1 {
		return 0
	}
	return int(crc32.ChecksumIEEE(key) % uint32(n))
}

// errors of the wire layer.
var (
	errLineTooLong = errors.New("reply line longer than the read buffer")
)

// badReplyError is a reply that is not the one expected.
type badReplyError struct {
	what string
	line string
}

func (e *badReplyError) Error() string { return fmt.Sprintf("%s: unexpected reply %q", e.what, e.line) }

// wconn is one raw, persistent protocol connection. Requests are encoded
// with codec.AppendRequest into a reused buffer and replies are split out
// of a fixed read buffer and parsed with codec.ParseReply, so a
// request/reply costs no allocation. It is owned by one goroutine, except
// where a scenario says otherwise.
type wconn struct {
	nc   net.Conn
	wbuf []byte
	rbuf []byte
	r, w int
	rep  codec.Reply
}

const readBufSize = 16 << 10

func newWconn(nc net.Conn) *wconn {
	return &wconn{nc: nc, wbuf: make([]byte, 0, 4096), rbuf: make([]byte, readBufSize)}
}

// dialer dials the protocol port of a server.
type dialer struct {
	d net.Dialer
}

func (d *dialer) dial(ctx context.Context, addr string, small bool) (*wconn, error) {
	nc, err := d.d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if small {
		return newSmallWconn(nc), nil
	}
	return newWconn(nc), nil
}

// queue appends req to the pending write buffer.
func (c *wconn) queue(req *codec.Request) { c.wbuf = codec.AppendRequest(c.wbuf, req) }

// flush writes the pending requests.
func (c *wconn) flush() error {
	if len(c.wbuf) == 0 {
		return nil
	}
	_, err := c.nc.Write(c.wbuf)
	c.wbuf = c.wbuf[:0]
	return err
}

// send writes one request.
func (c *wconn) send(req *codec.Request) error {
	c.queue(req)
	return c.flush()
}

// bufferedLine returns the next complete reply line already buffered
// (without its '\n'), or ok == false.
func (c *wconn) bufferedLine() (line []byte, ok bool) {
	if i := bytes.IndexByte(c.rbuf[c.r:c.w], '\n'); i >= 0 {
		line = c.rbuf[c.r : c.r+i]
		c.r += i + 1
		return line, true
	}
	return nil, false
}

// fill reads more bytes from the connection (blocking), keeping any
// partial line.
func (c *wconn) fill() error {
	if c.r > 0 {
		c.w = copy(c.rbuf, c.rbuf[c.r:c.w])
		c.r = 0
	}
	if c.w == len(c.rbuf) {
		return errLineTooLong
	}
	n, err := c.nc.Read(c.rbuf[c.w:])
	c.w += n
	if n > 0 {
		return nil
	}
	return err
}

// line returns the next reply line, reading as needed.
func (c *wconn) line() ([]byte, error) {
	for {
		if l, ok := c.bufferedLine(); ok {
			return l, nil
		}
		if err := c.fill(); err != nil {
			return nil, err
		}
	}
}

// parse parses line into c.rep.
func (c *wconn) parse(line []byte, what string) (*codec.Reply, error) {
	if !codec.ParseReply(line, &c.rep) {
		return nil, &badReplyError{what: what, line: string(line)}
	}
	return &c.rep, nil
}

// reply reads and parses the next reply.
func (c *wconn) reply(what string) (*codec.Reply, error) {
	l, err := c.line()
	if err != nil {
		return nil, err
	}
	return c.parse(l, what)
}

// roundTrip sends one request and reads its reply.
func (c *wconn) roundTrip(req *codec.Request, what string) (*codec.Reply, error) {
	if err := c.send(req); err != nil {
		return nil, err
	}
	return c.reply(what)
}

func (c *wconn) close() {
	if c != nil && c.nc != nil {
		_ = c.nc.Close()
	}
}

// closeAbort closes with SO_LINGER 0 (a reset): no TIME_WAIT is left
// behind, so runs of many connections can follow each other on the same
// source addresses.
func (c *wconn) closeAbort() {
	if tc, ok := c.nc.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.nc.Close()
}

// unexpected wraps a reply that is well formed but not the expected one.
func unexpected(what string, r *codec.Reply) error {
	return &badReplyError{what: what, line: r.Code.String()}
}

// isGrant reports whether r grants a lock (ok <token> <lease>).
func isGrant(r *codec.Reply) bool { return r.Code == codec.CodeOK && r.HasToken }

// isOK reports a successful release or ping: any `ok` (the ceiling server
// answers every request with a grant-shaped `ok`).
func isOK(r *codec.Reply) bool { return r.Code == codec.CodeOK }

// deadlineFor is a safety deadline for the connections of a run: a server
// that stops answering cannot hang the load generator forever.
func deadlineFor(start time.Time, c *Common) time.Time {
	d := 10 * time.Minute
	if c.Duration > 0 {
		d = c.Duration + time.Duration(c.Timeout)*time.Second + 30*time.Second
	}
	return start.Add(d)
}
