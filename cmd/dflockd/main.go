// Command dflockd is the lock server: a wire-compatible replacement for
// dflockd built on gnet event loops. It only wires flags, logging, signals
// and the fence state to the reactor and lockcore packages.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/lockreactor/dflockd/lockcore"
	"github.com/lockreactor/dflockd/reactor"
)

// defaultGCPercent is GOGC unless the operator sets it.
//
// The request path allocates nothing, so in steady state the garbage
// collector runs only on connection churn, and what it keeps alive is
// mostly connection state. Its heap goal, (1 + GOGC/100) x the live heap,
// is then memory a server holding many idle connections pays for nothing.
// Measured with 19,000 idle connections: server RSS 1.01 KiB per connection
// at GOGC=100, 0.88-0.95 at 50; accept-heavy CPU per connection +5-10%,
// request CPU unchanged. With 80 MB of live connection state and 1,000 new
// connections a second (about 0.5 MB of garbage), a GC every ~80 s instead
// of ~160 s.
const defaultGCPercent = 50

// setGCPercent applies defaultGCPercent unless GOGC is set, and returns
// the setting in effect.
func setGCPercent(getenv func(string) string) int {
	if getenv("GOGC") != "" {
		p := debug.SetGCPercent(100)
		debug.SetGCPercent(p)
		return p
	}
	debug.SetGCPercent(defaultGCPercent)
	return defaultGCPercent
}

// loopsServing is the event loops the start-up line reports: none on a
// TLS port, which crypto/tls serves with goroutines.
func loopsServing(loops int, tls bool) int {
	if tls {
		return 0
	}
	return loops
}

// eventLoops is the number of gnet event loops: --event-loops, or one per
// CPU.
func eventLoops(o *options) int {
	if o.EventLoops > 0 {
		return int(o.EventLoops)
	}
	return runtime.NumCPU()
}

// setProcs makes GOMAXPROCS exceed the number of event loops, unless the
// operator set GOMAXPROCS, and returns the setting in effect.
//
// gnet's event loops wait in epoll_wait system calls, and a goroutine in a
// system call keeps its P (processor) until the runtime's monitor takes it
// back, which on an idle process it checks only every 10 ms or so. With
// GOMAXPROCS equal to the number of loops, every P can be parked in an idle
// loop's epoll_wait: the lock table's timer goroutine, or a loop woken to
// deliver a grant, then waits up to 10-30 ms for a P. Measured on 2 CPUs
// with 2 loops, 5 runs of 20 lease hand-offs each: worst hand-off 2-31 ms
// after the lease end at GOMAXPROCS=2 (3 runs over 10 ms), 1.3-6 ms at 3;
// with 4 loops at GOMAXPROCS=4 the tail came back (up to 15 ms). One spare
// P is enough; a P in a system call burns no CPU.
func setProcs(loops int, getenv func(string) string) int {
	if getenv("GOMAXPROCS") != "" {
		return runtime.GOMAXPROCS(0)
	}
	n := max(runtime.NumCPU(), loops+1)
	runtime.GOMAXPROCS(n)
	return n
}

// fdReserve is how many descriptors the lock port's connection cap leaves
// for everything else: the reactor's default 64, plus the side port's
// connections when it is on.
func fdReserve(sidePort bool) int {
	if sidePort {
		return 64 + httpMaxConns + 1 // +1: the side port's newcomer waiting for a slot
	}
	return 64
}

func main() {
	// A write to a broken pipe on stdout or stderr (a log reader that went
	// away) would otherwise end the process with SIGPIPE, and every lock
	// with it: ignored, the write fails and the log line is lost.
	signal.Ignore(syscall.SIGPIPE)
	os.Exit(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr, nil))
}

// run is main without the process: ready (if not nil) receives the bound
// address once the server accepts connections.
func run(args []string, getenv func(string) string, stdout, stderr io.Writer, ready chan<- net.Addr) int {
	o, err := parseConfig(args, getenv, stdout)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		_, _ = fmt.Fprintln(stderr, "dflockd:", err)
		return 2
	}
	if o.Version {
		_, _ = fmt.Fprintln(stdout, versionString())
		return 0
	}
	log, err := newLogger(o, stderr)
	if err != nil {
		_, _ = fmt.Fprintln(stderr, "dflockd:", err)
		return 2
	}
	defer func() { _ = log.Sync() }()

	nofile, _ := reactor.RaiseNoFile()
	loops := eventLoops(o)
	procs := setProcs(loops, getenv)
	gcPercent := setGCPercent(getenv)

	var tlsCfg *tls.Config
	if o.TLSCert != "" {
		cert, err := loadKeyPair(o.TLSCert, o.TLSKey, o.filesBy)
		if err != nil {
			_, _ = fmt.Fprintf(stderr, "dflockd: invalid --tls-cert/--tls-key: %s\n", oneLine(err.Error()))
			return 2
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}

	fence, err := newFenceState(o.FenceStateFile, o.filesBy)
	if err != nil {
		_, _ = fmt.Fprintf(stderr, "dflockd: invalid --fence-state-file: %s\n", oneLine(err.Error()))
		return 2
	}

	table := lockcore.New(lockcore.Config{
		MaxLocks:          o.MaxLocks,
		MaxWaiters:        o.MaxWaiters,
		MaxSemaphoreLimit: o.MaxSemaphoreLimit,
		DefaultLease:      o.DefaultLeaseTTL,
		AutoRelease:       o.AutoRelease,
		Tick:              o.Tick,
		GCInterval:        time.Duration(o.GCInterval) * time.Second,
		GCMaxIdle:         max(time.Duration(o.GCMaxIdle)*time.Second, time.Nanosecond),
		FenceStart:        fence.start(),
	})
	table.Start()
	defer table.Stop()

	// Catch signals before the socket is bound and "listening" is logged:
	// a supervisor may signal as soon as it sees either, and the default
	// action would kill the process instead of draining it.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)

	// The side port is bound first: the reactor logs as it starts its
	// event loops, and a failure to listen must be the only line.
	var httpLn net.Listener
	if o.HTTPAddr != "" {
		httpLn, err = net.Listen("tcp", o.HTTPAddr)
		if err != nil {
			_, _ = fmt.Fprintf(stderr, "dflockd: cannot listen on --http-addr %s: %s\n", quoteEmpty(o.HTTPAddr), listenFailure(err))
			return 1
		}
	}
	addr := net.JoinHostPort(o.Host, strconv.FormatInt(o.Port, 10))
	srv, err := reactor.New(reactor.Config{
		Addr:           addr,
		Loops:          loops,
		MaxConnections: int(o.MaxConnections),
		ReadTimeout:    time.Duration(o.ReadTimeout) * time.Second,
		WriteTimeout:   time.Duration(o.WriteTimeout) * time.Second,
		AuthToken:      o.AuthToken,
		TLS:            tlsCfg,
		Logger:         log,
		Metrics:        o.HTTPAddr != "",
		FDReserve:      fdReserve(o.HTTPAddr != ""),
	}, table)
	if err != nil {
		if httpLn != nil {
			_ = httpLn.Close()
		}
		if opErr := (*net.OpError)(nil); errors.As(err, &opErr) && opErr.Op == "listen" {
			_, _ = fmt.Fprintf(stderr, "dflockd: cannot listen on --host %s --port %d: %s\n", quoteEmpty(o.Host), o.Port, listenFailure(err))
			return 1
		}
		log.Error("cannot start", zap.Error(err))
		return 1
	}
	httpAddr := ""
	if httpLn != nil {
		side := startHTTP(httpLn, srv, table, o, log)
		// Stopped last: /readyz answers 503 for the whole drain.
		defer side.stop()
		httpAddr = side.Addr().String()
	}
	stopFence := fence.persistLoop(table, log)
	defer stopFence()

	log.Info("dflockd listening",
		zap.Stringer("addr", srv.Addr()),
		zap.String("version", versionString()),
		zap.Bool("tls", tlsCfg != nil),
		zap.Bool("auth", o.AuthToken != ""),
		zap.Int64("default_lease_ttl_s", o.DefaultLeaseTTL),
		zap.Int64("max_locks", o.MaxLocks),
		zap.Int64("max_waiters", o.MaxWaiters),
		zap.Int64("max_semaphore_limit", o.MaxSemaphoreLimit),
		zap.Int64("max_connections", o.MaxConnections),
		zap.Int64("connection_cap", srv.ConnCap()),
		zap.Uint64("open_files_limit", nofile),
		zap.Int64("read_timeout_s", o.ReadTimeout),
		zap.Int64("write_timeout_s", o.WriteTimeout),
		zap.Int64("shutdown_timeout_s", o.ShutdownTimeout),
		zap.Int64("gc_interval_s", o.GCInterval),
		zap.Int64("gc_max_idle_s", o.GCMaxIdle),
		zap.Bool("auto_release_on_disconnect", o.AutoRelease),
		zap.Duration("tick", o.Tick),
		zap.Int("event_loops", loopsServing(loops, tlsCfg != nil)),
		zap.Int("gomaxprocs", procs),
		zap.Int("gogc", gcPercent),
		zap.String("fence_state_file", o.FenceStateFile),
		zap.String("http_addr", httpAddr),
		zap.Bool("pprof", o.PProf),
	)

	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()
	if ready != nil {
		ready <- srv.Addr()
	}

	select {
	case err := <-served:
		// Serve returns only after Shutdown/Close, which nobody called.
		log.Error("server stopped unexpectedly", zap.Error(err))
		srv.Close()
		return 1
	case sig := <-sigs:
		log.Info("draining", zap.Stringer("signal", sig), zap.Int64("shutdown_timeout_s", o.ShutdownTimeout))
	}
	ctx := context.Background()
	if o.ShutdownTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(o.ShutdownTimeout)*time.Second)
		defer cancel()
	}
	if err := srv.Shutdown(ctx); err != nil {
		log.Warn("shutdown timeout: blocked requests cut off", zap.Error(err))
	}
	<-served
	log.Info("stopped")
	return 0
}

// listenFailure is the reason in a failed listen's error, without the
// address (the caller names the flags): the system's text ("address
// already in use", "permission denied", "cannot assign requested
// address") or the resolver's ("lookup db1 on 10.0.0.53:53: no such
// host").
func listenFailure(err error) string {
	var sysErr *os.SyscallError
	if errors.As(err, &sysErr) {
		return sysErr.Err.Error()
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Err != nil {
		return opErr.Err.Error()
	}
	return err.Error()
}

// quoteEmpty quotes s if it is empty or holds blanks, so a flag's value
// stays visible in a message.
func quoteEmpty(s string) string {
	if s == "" || strings.ContainsAny(s, " \t") {
		return strconv.Quote(s)
	}
	return s
}

func newLogger(o *options, stderr io.Writer) (*zap.Logger, error) {
	level := zapcore.InfoLevel
	if o.Debug {
		level = zapcore.DebugLevel
	}
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	if o.LogFormat == "json" {
		enc = zapcore.NewJSONEncoder(encCfg)
	} else {
		encCfg.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(encCfg)
	}
	core := zapcore.NewCore(enc, zapcore.AddSync(stderr), level)
	return zap.New(core), nil
}

func versionString() string {
	version, rev := buildVersion()
	if rev != "" {
		return "dflockd " + version + " " + rev
	}
	return "dflockd " + version
}

// buildVersion is the module version and VCS revision from the build info
// ("(devel)" and "" when unknown). A revision built from a modified tree
// ends in "-dirty".
func buildVersion() (version, rev string) {
	version = "(devel)"
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			version = bi.Main.Version
		}
		dirty := false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if rev != "" && dirty {
			rev += "-dirty"
		}
	}
	return version, rev
}
