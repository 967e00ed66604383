package main

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	stdlog "log"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/lockreactor/dflockd/lockcore"
	"github.com/lockreactor/dflockd/reactor"
	"github.com/lockreactor/dflockd/reactor/metrics"
)

// httpSide is the HTTP side port (--http-addr): metrics, health,
// readiness, stats and, with --pprof, profiling.
type httpSide struct {
	srv *http.Server
	ln  net.Listener
	log *zap.Logger
}

// newRegistry registers the server's collector, the Go runtime and process
// collectors and a build-info gauge.
func newRegistry(srv *reactor.Server, table *lockcore.Table) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		metrics.New(srv, table),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	version, rev := buildVersion()
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "dflockd_build_info",
		Help:        "Always 1; the labels carry the module version and VCS revision.",
		ConstLabels: prometheus.Labels{"version": version, "revision": rev},
	}, func() float64 { return 1 }))
	return reg
}

// httpHandler routes the side port. /healthz and /readyz are open (load
// balancers and orchestrators probe them); with an auth token the rest
// needs "Authorization: Bearer <token>".
func httpHandler(srv *reactor.Server, reg *prometheus.Registry, authToken string, withPProf bool, log *zap.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if srv.Draining() {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("draining\n"))
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	guard := bearer(authToken)
	renders := make(chan struct{}, httpMaxRenders) // shared by /metrics and /v1/stats
	mux.Handle("GET /metrics", guard(limitRenders(renders, promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:          stdLog(log),
		ErrorHandling:     promhttp.ContinueOnError,
		EnableOpenMetrics: true,
	}))))
	mux.Handle("GET /v1/stats", guard(limitRenders(renders, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(append(srv.StatsJSON(), '\n'))
	}))))
	if withPProf {
		mux.Handle("/debug/pprof/", guard(http.HandlerFunc(pprof.Index)))
		mux.Handle("/debug/pprof/cmdline", guard(http.HandlerFunc(pprof.Cmdline)))
		mux.Handle("/debug/pprof/profile", guard(http.HandlerFunc(pprof.Profile)))
		mux.Handle("/debug/pprof/symbol", guard(http.HandlerFunc(pprof.Symbol)))
		mux.Handle("/debug/pprof/trace", guard(http.HandlerFunc(pprof.Trace)))
	}
	return mux
}

// httpMaxRenders caps the /metrics and /v1/stats responses in progress at
// once (each can be megabytes with many keys, held until its client has
// read it); past it they answer 503 at once. Without it 64 clients that
// asked for /v1/stats and stopped reading held every one of the side
// port's connections, and /healthz and /readyz went unanswered.
const httpMaxRenders = 8

// limitRenders runs h when one of sem's slots is free, and answers 503
// (with Retry-After) when none is.
func limitRenders(sem chan struct{}, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case sem <- struct{}{}:
		default:
			w.Header().Set("Retry-After", "1")
			http.Error(w, "busy: too many metrics or stats responses in progress", http.StatusServiceUnavailable)
			return
		}
		defer func() { <-sem }()
		h.ServeHTTP(w, r)
	})
}

// bearer wraps handlers to require "Authorization: Bearer <token>" (the
// scheme in any case); an empty token lets every request through. The
// SHA-256 digests of the presented and the configured token are compared in
// constant time, so neither the token's bytes nor its length leak through
// timing.
func bearer(token string) func(http.Handler) http.Handler {
	want := sha256.Sum256([]byte(token))
	return func(h http.Handler) http.Handler {
		if token == "" {
			return h
		}
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !bearerOK(r.Header.Get("Authorization"), &want) {
				w.Header().Set("WWW-Authenticate", `Bearer realm="dflockd"`)
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
			h.ServeHTTP(w, r)
		})
	}
}

// bearerOK reports whether the Authorization header value carries the
// token whose digest is want.
func bearerOK(header string, want *[sha256.Size]byte) bool {
	scheme, presented, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	got := sha256.Sum256([]byte(presented))
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1
}

// startHTTP serves the side port on ln (bound by the caller) in the
// background.
func startHTTP(ln net.Listener, srv *reactor.Server, table *lockcore.Table, o *options, log *zap.Logger) *httpSide {
	return startHTTPStall(ln, srv, table, o, log, httpWriteStall)
}

// startHTTPStall is startHTTP with the write-stall bound given (tests
// shorten it).
func startHTTPStall(ln net.Listener, srv *reactor.Server, table *lockcore.Table, o *options, log *zap.Logger, stall time.Duration) *httpSide {
	log = log.Named("http")
	h := &httpSide{
		ln:  ln,
		log: log,
		srv: &http.Server{
			Handler:           httpHandler(srv, newRegistry(srv, table), o.AuthToken, o.PProf, log),
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       30 * time.Second,
			IdleTimeout:       30 * time.Second,
			ErrorLog:          stdLog(log),
		},
	}
	lim := newLimitListener(ln, httpMaxConns)
	lim.stall = stall
	h.srv.ConnState = lim.connState
	go func() {
		if err := h.srv.Serve(lim); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http side port stopped", zap.Error(err))
		}
	}()
	return h
}

// Addr is the bound address.
func (h *httpSide) Addr() net.Addr { return h.ln.Addr() }

// stop closes the side port, letting requests in flight finish briefly.
func (h *httpSide) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := h.srv.Shutdown(ctx); err != nil {
		_ = h.srv.Close()
	}
}

// stdLog is the side port's log.Logger for net/http and promhttp: what they
// log is errors (accept failures, handler panics, failed gathers), so at
// warn level, not zap.NewStdLog's info.
func stdLog(log *zap.Logger) *stdlog.Logger {
	l, err := zap.NewStdLogAt(log, zapcore.WarnLevel)
	if err != nil { // only for an invalid level
		return zap.NewStdLog(log)
	}
	return l
}

// httpMaxConns caps the side port's open connections. Its descriptors
// come from the budget the lock port's connection cap is computed from
// (the reactor keeps this many more in reserve), so connections to the
// side port cannot starve the lock port. At the cap a newcomer has an
// idle keep-alive connection closed to make room (so idle clients cannot
// lock out the health probes); with none idle, it waits (one descriptor
// past the cap) and later ones wait in the kernel's accept queue.
const httpMaxConns = 64

// httpWriteStall bounds how long a response write may make no progress
// (take no byte): a client that stops reading loses its connection, and
// its slot, after it. It is a progress bound, not a WriteTimeout, so a
// slow reader of a large response and a long /debug/pprof/profile are not
// cut off.
const httpWriteStall = 10 * time.Second

// limitListener accepts at most n connections open at once.
type limitListener struct {
	net.Listener
	sem       chan struct{}
	stall     time.Duration // see httpWriteStall; 0: none
	done      chan struct{}
	closeOnce sync.Once
	idleSig   chan struct{} // a connection went idle

	mu   sync.Mutex
	idle map[*limitConn]struct{}
}

func newLimitListener(ln net.Listener, n int) *limitListener {
	return &limitListener{Listener: ln, sem: make(chan struct{}, n), done: make(chan struct{}),
		idleSig: make(chan struct{}, 1), idle: make(map[*limitConn]struct{})}
}

// Accept takes the next connection, then waits for a slot for it: at the
// cap it closes an idle keep-alive connection to make room, or waits for
// one to go idle or close. (Making room before a newcomer arrived would
// close idle connections for nothing.) The connection waiting for a slot
// is one descriptor past the cap: fdReserve counts it.
func (l *limitListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	for {
		select {
		case l.sem <- struct{}{}:
			return &limitConn{Conn: c, l: l}, nil
		default:
		}
		l.closeIdle()
		select {
		case l.sem <- struct{}{}:
			return &limitConn{Conn: c, l: l}, nil
		case <-l.idleSig:
		case <-l.done:
			_ = c.Close()
			return nil, net.ErrClosed
		}
	}
}

// closeIdle closes one idle keep-alive connection, if there is one.
func (l *limitListener) closeIdle() {
	l.mu.Lock()
	var victim *limitConn
	for c := range l.idle {
		victim = c
		delete(l.idle, c)
		break
	}
	l.mu.Unlock()
	if victim != nil {
		_ = victim.Close()
	}
}

// connState is the http.Server's ConnState hook: it tracks idle
// connections.
func (l *limitListener) connState(nc net.Conn, st http.ConnState) {
	c, ok := nc.(*limitConn)
	if !ok {
		return
	}
	l.mu.Lock()
	if st == http.StateIdle {
		l.idle[c] = struct{}{}
	} else {
		delete(l.idle, c)
	}
	l.mu.Unlock()
	if st == http.StateIdle {
		select {
		case l.idleSig <- struct{}{}:
		default:
		}
	}
}

func (l *limitListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

type limitConn struct {
	net.Conn
	l    *limitListener
	once sync.Once
}

// Write writes p, giving up when the stall bound passes with no byte
// taken: each time some were, the bound starts again.
func (c *limitConn) Write(p []byte) (n int, err error) {
	if c.l.stall <= 0 {
		return c.Conn.Write(p)
	}
	for {
		if err := c.SetWriteDeadline(time.Now().Add(c.l.stall)); err != nil {
			return n, err
		}
		m, err := c.Conn.Write(p)
		n += m
		p = p[m:]
		if err == nil || len(p) == 0 || m == 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
			return n, err
		}
	}
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.mu.Lock()
		delete(c.l.idle, c)
		c.l.mu.Unlock()
		<-c.l.sem
	})
	return err
}

// CloseWrite passes a half-close through, as net/http uses it to let a
// client read a final response before the connection closes.
func (c *limitConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
