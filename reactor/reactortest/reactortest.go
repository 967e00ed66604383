// Package reactortest runs an in-process dflockd server for black-box tests:
// bound to 127.0.0.1 on a free port, stopped in t.Cleanup.
package reactortest

import (
	"bufio"
	"context"
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/lockreactor/dflockd/lockcore"
	"github.com/lockreactor/dflockd/reactor"
)

// Config is what a test may change; zero fields take the server defaults
// (auto-release on, 33 s leases, 1024 max locks, 23 s read timeout).
type Config struct {
	Server reactor.Config
	Core   lockcore.Config
	// NoAutoRelease turns auto-release on disconnect off.
	NoAutoRelease bool
	// SelfSignedTLS serves the port over TLS with a fresh self-signed
	// certificate (see SelfSignedTLS); Connect then dials TLS.
	SelfSignedTLS bool
}

// Server is a running test server.
type Server struct {
	*reactor.Server
	Table *lockcore.Table
	// Addr is "127.0.0.1:port".
	Addr string
	// ClientTLS trusts the server's certificate when Config.SelfSignedTLS
	// was set; nil otherwise.
	ClientTLS *tls.Config
	done      chan error
}

// Start runs a server configured by the optional functions and registers
// its shutdown with t.Cleanup.
func Start(t testing.TB, configure ...func(*Config)) *Server {
	t.Helper()
	cfg := Config{}
	cfg.Core.MaxLocks = 1024
	cfg.Server.ReadTimeout = 23 * time.Second
	for _, f := range configure {
		f(&cfg)
	}
	cfg.Core.AutoRelease = !cfg.NoAutoRelease
	var clientTLS *tls.Config
	if cfg.SelfSignedTLS && cfg.Server.TLS == nil {
		cfg.Server.TLS, clientTLS = SelfSignedTLS(t)
	}
	if cfg.Server.Addr == "" {
		cfg.Server.Addr = "127.0.0.1:0"
	}
	if cfg.Server.Logger == nil {
		cfg.Server.Logger = zaptest.NewLogger(t).Named("server")
	}
	table := lockcore.New(cfg.Core)
	table.Start()
	srv, err := reactor.New(cfg.Server, table)
	if err != nil {
		table.Stop()
		t.Fatalf("reactortest: start server: %v", err)
	}
	s := &Server{Server: srv, Table: table, Addr: srv.Addr().String(), ClientTLS: clientTLS, done: make(chan error, 1)}
	go func() { s.done <- srv.Serve() }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-s.done; err != nil {
			t.Errorf("reactortest: Serve: %v", err)
		}
		table.Stop()
	})
	return s
}

// Conn is a raw protocol connection with send/expect helpers.
type Conn struct {
	t testing.TB
	net.Conn
	r *bufio.Reader
}

// Dial connects to the server; the connection is closed in t.Cleanup.
func (s *Server) Dial(t testing.TB) *Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", s.Addr, 5*time.Second)
	if err != nil {
		t.Fatalf("reactortest: dial: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &Conn{t: t, Conn: c, r: bufio.NewReader(c)}
}

// DialTLS connects to the server over TLS with cfg and completes the
// handshake; the connection is closed in t.Cleanup.
func (s *Server) DialTLS(t testing.TB, cfg *tls.Config) *Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d := tls.Dialer{NetDialer: &net.Dialer{}, Config: cfg}
	c, err := d.DialContext(ctx, "tcp", s.Addr)
	if err != nil {
		t.Fatalf("reactortest: dial tls: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &Conn{t: t, Conn: c, r: bufio.NewReader(c)}
}

// Connect dials the way the server is served: TLS with ClientTLS when the
// server was started with Config.SelfSignedTLS, plain TCP otherwise.
func (s *Server) Connect(t testing.TB) *Conn {
	t.Helper()
	if s.ClientTLS != nil {
		return s.DialTLS(t, s.ClientTLS)
	}
	return s.Dial(t)
}

// Send writes raw bytes.
func (c *Conn) Send(s string) {
	c.t.Helper()
	_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(s)); err != nil {
		c.t.Fatalf("reactortest: send: %v", err)
	}
}

// Request sends one request of three lines.
func (c *Conn) Request(cmd, key, arg string) {
	c.t.Helper()
	c.Send(cmd + "\n" + key + "\n" + arg + "\n")
}

// ReadLine reads one reply line (without '\n') within timeout.
func (c *Conn) ReadLine(timeout time.Duration) (string, error) {
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	line, err := c.r.ReadString('\n')
	return strings.TrimSuffix(line, "\n"), err
}

// Line reads one reply line, failing the test after 5 s.
func (c *Conn) Line() string {
	c.t.Helper()
	line, err := c.ReadLine(5 * time.Second)
	if err != nil {
		c.t.Fatalf("reactortest: read reply: %v (partial %q)", err, line)
	}
	return line
}

// Do sends a request and returns its reply.
func (c *Conn) Do(cmd, key, arg string) string {
	c.t.Helper()
	c.Request(cmd, key, arg)
	return c.Line()
}

// NoReply asserts that nothing arrives within d.
func (c *Conn) NoReply(d time.Duration) {
	c.t.Helper()
	if line, err := c.ReadLine(d); err == nil || line != "" {
		c.t.Fatalf("reactortest: unexpected reply %q (err %v)", line, err)
	}
}

// Closed asserts that the server closes the connection within d (after
// any replies already read).
func (c *Conn) Closed(d time.Duration) {
	c.t.Helper()
	line, err := c.ReadLine(d)
	if err == nil || line != "" {
		c.t.Fatalf("reactortest: connection still open: read %q, err %v", line, err)
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		c.t.Fatalf("reactortest: connection not closed within %v", d)
	}
}
