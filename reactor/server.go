package reactor

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/panjf2000/gnet/v2"
	"go.uber.org/zap"

	"github.com/lockreactor/dflockd/codec"
	"github.com/lockreactor/dflockd/lockcore"
)

// Config configures a Server. Zero durations take the defaults noted.
type Config struct {
	// Addr is host:port to listen on (port 0 picks a free port).
	Addr string
	// Loops is the number of gnet event loops (default one per CPU). Keep
	// GOMAXPROCS above it: see cmd/dflockd's setProcs.
	Loops int
	// MaxConnections caps open connections (0 = only the open-file cap).
	// A connection over the cap is accepted and closed without a byte.
	MaxConnections int
	// ReadTimeout: while not blocked on a lock, each line of a request must
	// arrive within this of the previous line or reply (0 = none).
	ReadTimeout time.Duration
	// WriteTimeout: a connection whose replies do not drain for this long
	// is closed (default 5s).
	WriteTimeout time.Duration
	// AuthToken, when set, must be presented by each connection's first
	// request (auth).
	AuthToken string
	// AuthTimeout bounds how long a connection may stay unauthenticated
	// when ReadTimeout is 0 or longer (default 30s), so that idle
	// strangers cannot hold connection slots for ever.
	AuthTimeout time.Duration
	// AuthFailDelay is the pause before closing a connection that failed
	// authentication (default 100ms).
	AuthFailDelay time.Duration
	// TLS, when set, makes the port speak TLS only (served by crypto/tls).
	TLS *tls.Config
	// Tick is the resolution of connection timers: read timeout, write
	// stall, auth delay (default 10ms). Lock timeouts and leases run on
	// the lock table's own, finer tick.
	Tick time.Duration
	// OutboundHighWater: stop decoding a connection's requests while this
	// many reply bytes are unsent (default 64 KiB).
	OutboundHighWater int
	// InboundCap: close a connection that has this many unread bytes while
	// it is not being decoded (parked or above the high-water mark;
	// default 64 KiB).
	InboundCap int
	// FDReserve is how many file descriptors are kept free below
	// RLIMIT_NOFILE for everything but client connections (default 64).
	// The event loops' own descriptors (an epoll and an eventfd each) are
	// reserved on top of it.
	FDReserve int
	Logger    *zap.Logger
	// Metrics turns on the per-request counters and latency histograms
	// that Server.Metrics reports (kept per event loop; a few atomic adds
	// per request).
	Metrics bool
}

func (c *Config) setDefaults() {
	if c.Loops <= 0 {
		c.Loops = runtime.NumCPU()
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 5 * time.Second
	}
	if c.AuthTimeout <= 0 {
		c.AuthTimeout = 30 * time.Second
	}
	if c.AuthFailDelay <= 0 {
		c.AuthFailDelay = 100 * time.Millisecond
	}
	if c.Tick <= 0 {
		c.Tick = 10 * time.Millisecond
	}
	if c.OutboundHighWater <= 0 {
		c.OutboundHighWater = 64 << 10
	}
	if c.InboundCap <= 0 {
		c.InboundCap = 64 << 10
	}
	if c.FDReserve <= 0 {
		c.FDReserve = 64
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
}

// Server is a dflockd protocol server over one listening port.
type Server struct {
	cfg       Config
	table     *lockcore.Table
	log       *zap.Logger
	authToken []byte
	ln        net.Listener
	cli       *gnet.Client
	connCap   int64

	conns  atomic.Int64 // open connections (all transports)
	parked atomic.Int64 // sessions with a parked request
	// cutOff counts sessions closed with a request still parked or a
	// decided reply unsent: Shutdown reports ctx.Err() only if its Close
	// cut something off.
	cutOff  atomic.Int64
	directs atomic.Int64 // parked results written by their completer (tryDirect)
	bigOut  atomic.Int64 // KiB of large replies not yet written (appendStats)
	// lastBigKiB is the size of the last stats reply rendered, if large
	// (0 if not), lastBigKeys the keys tracked then and lastRender the
	// table time of that render: appendStats refuses without rendering
	// when the reply would not fit the budget left (statsMayFit).
	lastBigKiB  atomic.Int64
	lastBigKeys atomic.Int64
	lastRender  atomic.Int64
	closes      [NumCloseReasons]atomic.Int64
	nextID      atomic.Uint64
	draining    atomic.Bool
	refused     atomic.Int64 // connections closed at accept (over a cap)
	accepted    atomic.Uint64
	// refusals are logged at most once a second, with a count; the rest
	// of a burst when the second is up (noteRefused).
	refusedMu     sync.Mutex
	refusedLogged int64
	refusedLogAt  time.Time
	refusedTail   bool      // a log of the rest of a burst is scheduled
	stuckLogAt    time.Time // noteAcceptStuck's last line

	loopsMu sync.Mutex
	loops   map[gnet.EventLoop]*loopTimers

	tlsMu    sync.Mutex
	tlsConns map[*tlsConn]struct{}
	tlsWG    sync.WaitGroup

	// Request metrics (Config.Metrics): one sink per event loop, and
	// sinks shared by TLS connections.
	metricsMu   sync.Mutex
	loopMetrics []*loopMetrics
	tlsSinks    [tlsSinks]*sink

	stopOnce  sync.Once
	stopCh    chan struct{}
	acceptErr chan error
	// acceptMu orders Serve's acceptWG.Add with the Wait of Shutdown and
	// Close: once acceptStop is set, Serve returns at once.
	acceptMu   sync.Mutex
	acceptStop bool
	acceptWG   sync.WaitGroup
	tickWG     sync.WaitGroup
	// execMu orders dispatchBarrier's Execute calls before Close's stop
	// of the loops: a task queued after a loop's poller is closed would
	// write to a closed (maybe reused) eventfd descriptor.
	execMu      sync.Mutex
	execStopped bool
}

// New binds the listening socket and starts the event loops; call Serve to
// start accepting. The table is used, not owned: the caller starts and
// stops its driver.
func New(cfg Config, table *lockcore.Table) (*Server, error) {
	cfg.setDefaults()
	// A client presents the secret as one protocol line, trimmed: any
	// other secret would lock every client out.
	if tok := cfg.AuthToken; len(tok) > codec.MaxLineLen || strings.ContainsRune(tok, '\n') || strings.TrimSpace(tok) != tok {
		return nil, errors.New("reactor: AuthToken must fit one protocol line (at most 256 bytes, no newline, no surrounding whitespace)")
	}
	s := &Server{
		cfg:       cfg,
		table:     table,
		log:       cfg.Logger,
		authToken: []byte(cfg.AuthToken),
		loops:     make(map[gnet.EventLoop]*loopTimers),
		tlsConns:  make(map[*tlsConn]struct{}),
		stopCh:    make(chan struct{}),
		acceptErr: make(chan error, 1),
	}
	if cfg.Metrics {
		for i := range s.tlsSinks {
			s.tlsSinks[i] = new(sink)
		}
	}
	reserve := cfg.FDReserve
	if cfg.TLS == nil {
		reserve += loopFDs * cfg.Loops
	}
	s.connCap = fdConnCap(reserve)
	if cfg.MaxConnections > 0 && int64(cfg.MaxConnections) < s.connCap {
		s.connCap = int64(cfg.MaxConnections)
	}
	// TCP keepalive is set per connection at accept (setKeepAlive).
	lc := net.ListenConfig{KeepAlive: -1}
	ln, err := lc.Listen(context.Background(), "tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("reactor: listen %s: %w", cfg.Addr, err)
	}
	s.ln = ln
	if cfg.TLS == nil {
		cli, err := gnet.NewClient(&gnetHandler{srv: s},
			gnet.WithMulticore(true),
			gnet.WithNumEventLoop(cfg.Loops),
			gnet.WithLogger(gnetLogger{s.log.Named("gnet").Sugar()}),
		)
		if err == nil {
			err = cli.Start()
		}
		if err != nil {
			_ = ln.Close()
			return nil, fmt.Errorf("reactor: start event loops: %w", err)
		}
		s.cli = cli
		s.tickWG.Add(1)
		go s.tickLoops()
	}
	return s, nil
}

// Keepalive: a dead peer's connection (and, with auto-release, its locks)
// goes after at most keepAliveIdle + keepAliveSpread + keepAliveCount x
// keepAliveInterval, 2.5-3 minutes.
const (
	keepAliveIdle     = 30 * time.Second
	keepAliveSpread   = 30 * time.Second
	keepAliveInterval = 15 * time.Second
	keepAliveCount    = 8
)

// setKeepAlive turns TCP keepalive on for an accepted connection (the
// socket, so also for the descriptor gnet takes over), with its idle time
// spread at random over keepAliveSpread. Connections opened together must
// not probe together: with gnet's default keepalive (probes at 30 s, then
// every 6 s, 5 at most) 10,000 connections opened in one burst probed in
// one burst; loopback dropped most probes past its 1,000-packet backlog
// and the kernel aborted 2,741 healthy idle connections within 100 s
// (found by the soak test).
func setKeepAlive(c net.Conn) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return
	}
	_ = tc.SetKeepAliveConfig(net.KeepAliveConfig{
		Enable:   true,
		Idle:     keepAliveIdle + rand.N(keepAliveSpread),
		Interval: keepAliveInterval,
		Count:    keepAliveCount,
	})
}

// loopFDs is how many descriptors each gnet event loop holds: its epoll
// instance and the eventfd that wakes it.
const loopFDs = 2

// fdConnCap is how many client connections fit under RLIMIT_NOFILE.
func fdConnCap(reserve int) int64 {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur > 1<<40 {
		return 1 << 40
	}
	return max(int64(rl.Cur)-int64(reserve), 1)
}

// Addr is the bound listening address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Connections is the number of open connections.
func (s *Server) Connections() int64 { return s.conns.Load() }

// ConnCap is the effective connection cap (max-connections or the
// open-file limit less the reserve, whichever is lower).
func (s *Server) ConnCap() int64 { return s.connCap }

// Serve accepts connections until Shutdown or Close. It returns nil after
// a shutdown and an error if accepting failed for good.
func (s *Server) Serve() error {
	s.acceptMu.Lock()
	if s.acceptStop {
		s.acceptMu.Unlock()
		return nil
	}
	s.acceptWG.Add(1)
	s.acceptMu.Unlock()
	defer s.acceptWG.Done()
	spare := openSpare()
	defer func() {
		if spare != nil {
			_ = spare.Close()
		}
	}()
	var backoff time.Duration
	for {
		c, err := s.ln.Accept()
		if err != nil {
			select {
			case <-s.stopCh:
				return nil
			default:
			}
			if s.draining.Load() {
				return nil
			}
			if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				if spare == nil {
					// No reserve to take a connection with: closing it
					// was not enough (the limit was lowered below what
					// is open). Nothing is taken, so nothing is counted;
					// a warning says why connections wait.
					if spare = openSpare(); spare == nil {
						s.noteAcceptStuck(err)
						time.Sleep(10 * time.Millisecond)
					}
					continue
				}
				// Out of descriptors: free the spare, take the pending
				// connection and close it, so the flood is refused rather
				// than queued, then re-reserve.
				_ = spare.Close()
				if c2, err2 := s.ln.Accept(); err2 == nil {
					_ = c2.Close()
					s.noteRefused(1)
				}
				spare = openSpare()
				time.Sleep(time.Millisecond)
				continue
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				backoff = min(max(backoff*2, 5*time.Millisecond), time.Second)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("reactor: accept: %w", err)
		}
		backoff = 0
		if s.draining.Load() {
			_ = c.Close()
			continue
		}
		if s.conns.Add(1) > s.connCap {
			s.conns.Add(-1)
			_ = c.Close()
			s.noteRefused(1)
			continue
		}
		// Past the drain and cap checks: the connection is served, and
		// counted before it is handed on, so that a client that got a
		// reply sees it: here for TLS, in OnOpen on an event loop (an
		// enroll can still fail, and the counter must never go down).
		setKeepAlive(c)
		if s.cfg.TLS != nil {
			s.accepted.Add(1)
			s.startTLS(c)
			continue
		}
		// Handed to a loop without waiting for it to register the
		// connection: waiting cost a loop round trip per connection and
		// held accepting to ~7,000 connections/s. Registrations queued
		// here run before the shutdown task Close queues after Serve
		// returns, so none is lost.
		if err := s.cli.EnrollAsync(c, nil, s.enrollFailed); err != nil {
			// EnrollAsync closed c and queued nothing: not served.
			s.conns.Add(-1)
			if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				// Its duplicate of the descriptor found none left (the
				// limit lowered under a running server, or the system's
				// table full): refused, as at accept, and not a log
				// line per connection of a flood.
				s.noteRefused(1)
				continue
			}
			s.log.Warn("enroll connection", zap.Error(err))
		}
	}
}

// enrollFailed runs on an event loop when it could not register an
// enrolled connection (its descriptor is closed; OnOpen never ran).
func (s *Server) enrollFailed() {
	s.conns.Add(-1)
	s.log.Warn("enroll connection: the event loop could not register it")
}

// Refused returns how many connections were closed at accept because the
// server was at its connection cap or out of file descriptors.
func (s *Server) Refused() int64 { return s.refused.Load() }

// noteRefused counts refused connections and logs a warning at most once a
// second, so a flood cannot flood the log too.
func (s *Server) noteRefused(n int64) {
	s.refused.Add(n)
	s.refusedMu.Lock()
	defer s.refusedMu.Unlock()
	since := time.Since(s.refusedLogAt)
	if since >= time.Second {
		s.logRefusedLocked()
		return
	}
	// Within a second of the last line: the rest of the burst is logged
	// when the second is up, so that it is not left out when no refusal
	// follows.
	if !s.refusedTail {
		s.refusedTail = true
		time.AfterFunc(time.Second-since, s.refusalTail)
	}
}

// noteAcceptStuck logs, at most once a second, that accept fails for want
// of descriptors and none is left to refuse a connection with: new
// connections wait in the listen backlog, neither served nor refused.
func (s *Server) noteAcceptStuck(err error) {
	s.refusedMu.Lock()
	defer s.refusedMu.Unlock()
	if time.Since(s.stuckLogAt) < time.Second {
		return
	}
	s.stuckLogAt = time.Now()
	limit, _ := openFileLimit()
	s.log.Warn("cannot accept: out of file descriptors (EMFILE: the process's open-file limit is at or below what it has open; ENFILE: the system's table is full); new connections wait in the listen backlog",
		zap.Error(err),
		zap.Uint64("open_files_limit", limit),
		zap.Int64("open_connections", s.conns.Load()))
}

// refusalTail logs the refusals since the last line, a second after it.
// A refusal may have logged in the meantime (its second was up first):
// then it waits for that line's second.
func (s *Server) refusalTail() {
	s.refusedMu.Lock()
	defer s.refusedMu.Unlock()
	select {
	case <-s.stopCh:
		s.refusedTail = false
		return // nothing is logged after Close
	default:
	}
	if since := time.Since(s.refusedLogAt); since < time.Second {
		time.AfterFunc(time.Second-since, s.refusalTail)
		return
	}
	s.refusedTail = false
	if s.refused.Load() > s.refusedLogged {
		s.logRefusedLocked()
	}
}

func (s *Server) logRefusedLocked() {
	total := s.refused.Load()
	s.log.Warn("refusing connections: at the connection cap or out of file descriptors",
		zap.Int64("refused_since_last_log", total-s.refusedLogged),
		zap.Int64("refused_total", total),
		zap.Int64("connection_cap", s.connCap),
		zap.Int64("open_connections", s.conns.Load()))
	s.refusedLogged = total
	s.refusedLogAt = time.Now()
}

// logConn logs a connection event at debug level (free when debug is
// off), with the reason when the server closed the connection (why).
func (s *Server) logConn(msg string, id uint64, remote net.Addr, why string) {
	if ce := s.log.Check(zap.DebugLevel, msg); ce != nil {
		if why == "" {
			ce.Write(zap.Uint64("conn_id", id), zap.Stringer("remote", remote))
			return
		}
		ce.Write(zap.Uint64("conn_id", id), zap.Stringer("remote", remote), zap.String("reason", why))
	}
}

func isTemporary(err error) bool {
	return errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.EINTR) ||
		errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM)
}

func openSpare() *os.File {
	f, err := os.Open(os.DevNull)
	if err != nil {
		return nil
	}
	return f
}

// Shutdown drains the server: it stops accepting, answers new requests with
// error_draining, lets parked requests finish until ctx is done (a ctx
// without deadline waits for them all), then closes every connection. It
// returns ctx.Err() if parked requests were cut off.
func (s *Server) Shutdown(ctx context.Context) error {
	s.draining.Store(true)
	_ = s.ln.Close()
	s.stopAccepting()
	// A request read before draining was set may still be on its way to
	// parking (a shard lock can hold it up): wait until every such
	// request has parked or been answered before counting parked. If ctx
	// ends first, whether anything is cut off is unknown: report it.
	err := s.dispatchBarrier(ctx)
	if err == nil {
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for s.parked.Load() > 0 && err == nil {
			select {
			case <-ctx.Done():
				err = ctx.Err()
			case <-tick.C:
			}
		}
	}
	cut := s.cutOff.Load()
	s.Close()
	if s.cutOff.Load() == cut {
		err = nil // ctx ended, but Close cut nothing off
	}
	return err
}

// dispatchBarrier returns once every request decoded before it was called
// has been dispatched: parked, and counted in parked, or answered. An
// event loop runs one callback at a time, so a no-op task queued on each
// has run after every callback in progress; a TLS processor holds its
// connection's mutex while it decodes. It returns ctx.Err() if ctx ends
// first, and nil at once if Close has begun (Close's own shutdown task
// can be ahead of the barrier's, which then never runs).
func (s *Server) dispatchBarrier(ctx context.Context) error {
	s.loopsMu.Lock()
	loops := make([]*loopTimers, 0, len(s.loops))
	for _, lt := range s.loops {
		loops = append(loops, lt)
	}
	s.loopsMu.Unlock()
	// One no-op task per loop; a loop counts as done when its task has
	// run or it has exited (gnet's patched Exited: Execute still accepts
	// tasks for a loop that exited, which runs none).
	type pending struct{ ran, exited <-chan struct{} }
	waits := make([]pending, 0, len(loops))
	s.execMu.Lock()
	if s.execStopped {
		s.execMu.Unlock()
		return nil // closing: nothing is left to drain
	}
	for _, lt := range loops {
		ran := make(chan struct{})
		task := runFunc(func(context.Context) error { close(ran); return nil })
		if lt.el.Execute(context.Background(), task) != nil {
			continue
		}
		var exited <-chan struct{} // nil (never ready) if unknown
		if ex, ok := lt.el.(interface{ Exited() <-chan struct{} }); ok {
			exited = ex.Exited()
		}
		waits = append(waits, pending{ran, exited})
	}
	s.execMu.Unlock()
	for _, w := range waits {
		select {
		case <-w.ran:
		case <-w.exited:
		case <-s.stopCh:
			return nil // closing: nothing is left to drain
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.tlsMu.Lock()
	conns := make([]*tlsConn, 0, len(s.tlsConns))
	for t := range s.tlsConns {
		conns = append(conns, t)
	}
	s.tlsMu.Unlock()
	for _, t := range conns {
		t.mu.Lock()
		//nolint:staticcheck // an empty critical section: a barrier
		t.mu.Unlock()
	}
	return nil
}

// runFunc is a gnet.Runnable.
type runFunc func(context.Context) error

func (f runFunc) Run(ctx context.Context) error { return f(ctx) }

// stopAccepting waits for Serve to return (the listener is closed) and
// makes a later Serve return at once.
func (s *Server) stopAccepting() {
	s.acceptMu.Lock()
	s.acceptStop = true
	s.acceptMu.Unlock()
	s.acceptWG.Wait()
}

// Close stops the server at once: no drain.
func (s *Server) Close() {
	s.stopOnce.Do(func() {
		close(s.stopCh)
		// A refusal log's tail running now finishes before Close goes
		// on; later ones see stopCh closed (noteRefused).
		s.refusedMu.Lock()
		s.refusedMu.Unlock() //nolint:staticcheck // an empty critical section: a barrier
		_ = s.ln.Close()
		// Required before cli.Stop: Serve enrolls without waiting
		// (EnrollAsync), and only registrations queued before the
		// loops' shutdown task run; one queued after it would be lost
		// with its descriptor and its count in conns.
		s.stopAccepting()
		if s.cli != nil {
			s.tickWG.Wait()
			s.execMu.Lock()
			s.execStopped = true
			s.execMu.Unlock()
			if err := s.cli.Stop(); err != nil {
				s.log.Warn("stop event loops", zap.Error(err))
			}
		}
		s.tlsMu.Lock()
		for t := range s.tlsConns {
			// The socket, not the TLS connection: a close_notify could
			// block for up to 5 s on each client that does not read.
			_ = t.nc.NetConn().Close()
		}
		s.tlsMu.Unlock()
		s.tlsWG.Wait()
	})
}
