package client

import (
	"crypto/tls"
	"net"
	"time"
)

// Option configures one request: the lease it asks for and, for the
// modern Conn methods, the semaphore namespace.
type Option func(*options)

type options struct {
	leaseTTL int // seconds; 0 = server default
	limit    int // 0 = lock namespace; > 0 = semaphore of this limit
}

// collect applies opts. Calling an Option makes its argument escape, so
// the common no-option call returns before taking an address.
func collect(opts []Option) options {
	if len(opts) == 0 {
		return options{}
	}
	o := new(options)
	for _, fn := range opts {
		fn(o)
	}
	return *o
}

// WithLeaseTTL asks for a lease of the given whole seconds on an acquire,
// enqueue or renew (0, the default, takes the server's default lease).
func WithLeaseTTL(seconds int) Option {
	return func(o *options) { o.leaseTTL = max(seconds, 0) }
}

// WithLimit makes Conn.Acquire and Conn.Enqueue address the semaphore
// namespace with the given limit (the number of concurrent holders).
// Without it they address the lock namespace. Locks and semaphores are
// separate namespaces on the server: lock "k" and semaphore "k" are
// different resources. A limit < 1 fails with ErrInvalid.
func WithLimit(n int) Option {
	return func(o *options) {
		o.limit = n
		if n < 1 {
			o.limit = -1
		}
	}
}

// Defaults shared by Dial, Lock and Semaphore.
const (
	// DefaultDialTimeout bounds establishing a connection (TCP, TLS and
	// auth) when the context has no earlier deadline.
	DefaultDialTimeout = 10 * time.Second
	// DefaultAcquireTimeout is Lock.AcquireTimeout's default.
	DefaultAcquireTimeout = 10 * time.Second
	// DefaultRenewRatio is Lock.RenewRatio's default: renew at half the
	// lease.
	DefaultRenewRatio = 0.5
	// DefaultRenewJitter is Lock.RenewJitter's default: each renewal comes
	// up to a tenth of its interval early (as in dflockd's later clients).
	DefaultRenewJitter = 0.1
	// DefaultServer is the server a Lock with no Servers talks to.
	DefaultServer = "127.0.0.1:6388"
	// DefaultHeartbeat is the idle interval after which a Lock's or
	// Semaphore's connection sends a ping: below the server's default
	// 23 s read timeout, above the 16.5 s renewal interval of the default
	// 33 s lease (so with defaults no ping is ever sent).
	DefaultHeartbeat = 20 * time.Second
	// DefaultWriteTimeout bounds one write to the server; a write that
	// cannot finish in time breaks the connection.
	DefaultWriteTimeout = 10 * time.Second

	defaultKeepAlive = 30 * time.Second
)

// DialOption configures DialContext.
type DialOption func(*dialConfig)

type dialConfig struct {
	tls       *tls.Config
	auth      string
	heartbeat time.Duration
	dialer    *net.Dialer
}

// WithTLS speaks TLS to the server with cfg (nil = plain TCP). When cfg has
// no ServerName, the host of the dialled address is verified.
func WithTLS(cfg *tls.Config) DialOption { return func(d *dialConfig) { d.tls = cfg } }

// WithAuth authenticates the connection with the shared secret right after
// connecting ("" = no auth).
func WithAuth(secret string) DialOption { return func(d *dialConfig) { d.auth = secret } }

// WithHeartbeat sends a ping whenever the connection has sent nothing for
// d and has no request outstanding, so an idle connection (a held lock with
// a long lease, a queued two-phase waiter) survives the server's read
// timeout. Use an interval below the server's --read-timeout. 0 disables.
// It starts after WithAuth's auth; with a server that needs auth, use
// WithAuth rather than calling Conn.Auth afterwards (a ping first would be
// refused and the connection closed).
func WithHeartbeat(d time.Duration) DialOption {
	return func(c *dialConfig) { c.heartbeat = max(d, 0) }
}

// WithDialer dials with d instead of a dialer with DefaultDialTimeout and a
// 30 s TCP keep-alive.
func WithDialer(d *net.Dialer) DialOption { return func(c *dialConfig) { c.dialer = d } }
