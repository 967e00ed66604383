package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/lockreactor/dflockd/codec"
)

// options is the server's effective configuration.
type options struct {
	Host               string
	Port               int64
	DefaultLeaseTTL    int64
	LeaseSweepInterval int64
	GCInterval         int64
	GCMaxIdle          int64
	MaxLocks           int64
	MaxConnections     int64
	MaxWaiters         int64
	MaxSemaphoreLimit  int64
	ReadTimeout        int64
	WriteTimeout       int64
	ShutdownTimeout    int64
	TLSCert, TLSKey    string
	AuthToken          string
	AuthTokenFile      string
	AutoRelease        bool
	Debug              bool
	EventLoops         int64
	Tick               time.Duration
	FenceStateFile     string
	LogFormat          string
	Version            bool
	HTTPAddr           string
	PProf              bool
	// filesBy is when the configuration files must all have been read
	// (pipeWait from the start of parsing; see readBounded).
	filesBy time.Time
}

// intSpec describes one integer flag: its env variable, default and bounds.
type intSpec struct {
	name, env, usage string
	def, min         int64
	max              int64
	dst              *int64
}

// textValue is a flag that records its text unchecked: parseConfig
// validates flag and environment text alike, so every bad value is one
// "invalid --name: ..." line (the flag package's own errors would name
// "-name" and dump the usage).
type textValue struct {
	text   string
	isBool bool // a switch: --name means --name=true
}

func (v *textValue) String() string {
	if v == nil {
		return ""
	}
	return v.text
}

func (v *textValue) Set(s string) error { v.text = s; return nil }

func (v *textValue) IsBoolFlag() bool { return v != nil && v.isBool }

// parseConfig reads flags, then the environment for flags not given, then
// defaults. Any bad value is one error naming the flag; nothing is written
// to usage except the usage text asked for with -h/--help (then the error
// is flag.ErrHelp).
func parseConfig(args []string, getenv func(string) string, usage io.Writer) (*options, error) {
	o, err := parseConfig1(args, getenv, usage)
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		return nil, oneLineError{err}
	}
	return o, err
}

// oneLineError keeps a configuration error on one line: a newline in a
// flag's value, a path or a flag name (echoed by the flag package) would
// otherwise split it, and could forge a log line.
type oneLineError struct{ error }

func (e oneLineError) Error() string { return oneLine(e.error.Error()) }
func (e oneLineError) Unwrap() error { return e.error }

// oneLine escapes control characters in s (as %q would), or returns s.
func oneLine(s string) string {
	if strings.IndexFunc(s, unicode.IsControl) < 0 {
		return s
	}
	q := strconv.Quote(s)
	return q[1 : len(q)-1]
}

func parseConfig1(args []string, getenv func(string) string, usage io.Writer) (*options, error) {
	o := &options{filesBy: time.Now().Add(pipeWait)}
	fs := flag.NewFlagSet("dflockd", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}

	ints := []intSpec{
		{"port", "DFLOCKD_PORT", "TCP `port` (0 picks a free port)", 6388, 0, 65535, &o.Port},
		{"default-lease-ttl", "DFLOCKD_DEFAULT_LEASE_TTL_S", "lease in `seconds` when a request gives none", 33, 1, 3_155_760_000, &o.DefaultLeaseTTL},
		{"lease-sweep-interval", "DFLOCKD_LEASE_SWEEP_INTERVAL_S", "`seconds`; accepted for compatibility, expiry here is tick-precise", 1, 1, math.MaxInt32, &o.LeaseSweepInterval},
		{"gc-interval", "DFLOCKD_GC_LOOP_SLEEP", "`seconds` between idle-key pruning passes", 5, 1, math.MaxInt32, &o.GCInterval},
		{"gc-max-idle", "DFLOCKD_GC_MAX_UNUSED_TIME", "`seconds` an idle key is kept", 60, 0, math.MaxInt32, &o.GCMaxIdle},
		{"max-locks", "DFLOCKD_MAX_LOCKS", "maximum `number` of keys tracked, locks and semaphores together (0 = unlimited)", 1024, 0, math.MaxInt64, &o.MaxLocks},
		{"max-connections", "DFLOCKD_MAX_CONNECTIONS", "maximum `number` of open connections (0 = limited only by open files)", 0, 0, math.MaxInt64, &o.MaxConnections},
		{"max-waiters", "DFLOCKD_MAX_WAITERS", "maximum `number` of queued waiters per key (0 = unlimited)", 0, 0, math.MaxInt64, &o.MaxWaiters},
		{"max-semaphore-limit", "DFLOCKD_MAX_SEMAPHORE_LIMIT", "largest semaphore `limit` a client may ask for (0 = unlimited)", 1024, 0, math.MaxInt64, &o.MaxSemaphoreLimit},
		{"read-timeout", "DFLOCKD_READ_TIMEOUT_S", "`seconds` allowed for each request line while not blocked (0 = none)", 23, 0, math.MaxInt32, &o.ReadTimeout},
		{"write-timeout", "DFLOCKD_WRITE_TIMEOUT_S", "`seconds` a client may leave replies unread before it is dropped", 5, 1, math.MaxInt32, &o.WriteTimeout},
		{"shutdown-timeout", "DFLOCKD_SHUTDOWN_TIMEOUT_S", "`seconds` to let blocked requests finish on SIGTERM (0 = forever)", 30, 0, math.MaxInt32, &o.ShutdownTimeout},
		{"event-loops", "DFLOCKD_EVENT_LOOPS", "`number` of gnet event loops (0 = one per CPU)", 0, 0, 1024, &o.EventLoops},
	}
	for _, s := range ints {
		v := &textValue{}
		if s.def != 0 { // a zero default goes unmentioned in the usage
			v.text = strconv.FormatInt(s.def, 10)
		}
		fs.Var(v, s.name, s.usage+" ["+s.env+"]")
	}
	strs := []struct {
		name, env, def, usage string
		dst                   *string
	}{
		{"host", "DFLOCKD_HOST", defaultHost, "`address` to listen on", &o.Host},
		{"tls-cert", "DFLOCKD_TLS_CERT", "", "TLS certificate `file` (with --tls-key)", &o.TLSCert},
		{"tls-key", "DFLOCKD_TLS_KEY", "", "TLS key `file` (with --tls-cert)", &o.TLSKey},
		{"auth-token", "DFLOCKD_AUTH_TOKEN", "", "shared `secret` every connection must present first", &o.AuthToken},
		{"auth-token-file", "DFLOCKD_AUTH_TOKEN_FILE", "", "`file` holding the shared secret (one line)", &o.AuthTokenFile},
		{"fence-state-file", "DFLOCKD_FENCE_STATE_FILE", "", "`file` persisting the fence ceiling across restarts", &o.FenceStateFile},
		{"log-format", "DFLOCKD_LOG_FORMAT", "console", "log `format`: console or json", &o.LogFormat},
		{"http-addr", "DFLOCKD_HTTP_ADDR", "", "`host:port` of the HTTP side port: /metrics, /healthz, /readyz, /v1/stats (off when unset)", &o.HTTPAddr},
		{"tick", "DFLOCKD_TICK", "1ms", "timer resolution for timeouts and leases (a `duration`, 1ms..1s)", nil},
	}
	for _, s := range strs {
		fs.Var(&textValue{text: s.def}, s.name, s.usage+" ["+s.env+"]")
	}
	fs.Var(&textValue{text: "true", isBool: true}, "auto-release-on-disconnect", "release a connection's locks when it closes [DFLOCKD_AUTO_RELEASE_ON_DISCONNECT]")
	fs.Var(&textValue{isBool: true}, "no-auto-release-on-disconnect", "same as --auto-release-on-disconnect=false")
	fs.Var(&textValue{isBool: true}, "debug", "debug logging [DFLOCKD_DEBUG]")
	fs.Var(&textValue{isBool: true}, "pprof", "serve /debug/pprof/ on the --http-addr port [DFLOCKD_PPROF]")
	fs.Var(&textValue{isBool: true}, "version", "print the version and exit")

	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(usage)
			_, _ = fmt.Fprintln(usage, "Usage: dflockd [flags]\n\nEvery flag can also be set by the environment variable in brackets; a flag\ngiven on the command line wins.")
			_, _ = fmt.Fprintln(usage)
			fs.PrintDefaults()
		}
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })

	var err error
	if o.Version, err = boolValue(fs, given, func(string) string { return "" }, "version", "", false); err != nil {
		return nil, err
	}
	if o.Version {
		// --version must work whatever the environment holds.
		return o, nil
	}

	// value returns the flag's text if given, else the env's, else "".
	value := func(name, env string) (text, source string) {
		if given[name] {
			return fs.Lookup(name).Value.String(), "--" + name
		}
		if v := getenv(env); v != "" {
			return v, env + " (--" + name + ")"
		}
		return "", ""
	}
	for _, s := range ints {
		*s.dst = s.def
		text, src := value(s.name, s.env)
		if src == "" {
			continue
		}
		v, err := strconv.ParseInt(strings.TrimSpace(text), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("invalid %s: %q is not a whole number", src, text)
		}
		if v < s.min || v > s.max {
			return nil, fmt.Errorf("invalid %s: %d is out of range [%d, %d]", src, v, s.min, s.max)
		}
		*s.dst = v
	}
	for _, s := range strs {
		text, src := value(s.name, s.env)
		if src == "" {
			text, src = s.def, "--"+s.name
		}
		if s.dst != nil {
			*s.dst = text
			continue
		}
		d, err := time.ParseDuration(strings.TrimSpace(text))
		if err != nil || d < time.Millisecond || d > time.Second {
			return nil, fmt.Errorf("invalid %s: %q must be a duration between 1ms and 1s", src, text)
		}
		o.Tick = d
	}
	if given["host"] && o.Host != "" && strings.TrimSpace(o.Host) == "" {
		// --host '' is the documented way to every interface; blanks
		// are a mistake (--host="$UNSET_VAR" with a space) to refuse.
		return nil, fmt.Errorf("invalid --host: %q is blank (--host '' listens on every interface)", o.Host)
	}
	if !given["host"] && strings.TrimSpace(o.Host) == "" {
		// A blank DFLOCKD_HOST counts as unset, as an empty one does:
		// every interface must be asked for (--host '', 0.0.0.0 or ::),
		// not fall out of an EnvironmentFile line "DFLOCKD_HOST= ".
		o.Host = defaultHost
	}
	o.Host = strings.TrimSpace(o.Host)
	if err := checkHost(o.Host); err != nil {
		_, src := value("host", "DFLOCKD_HOST")
		return nil, fmt.Errorf("invalid %s: %v", src, err)
	}
	// --auth-token and --auth-token-file are one setting: a flag given on
	// the command line wins over the other one's environment variable.
	// Both as flags, or both only in the environment, is an error (see
	// validate).
	if given["auth-token-file"] && strings.TrimSpace(o.AuthTokenFile) == "" {
		// Fail closed: an empty file flag must not silently drop a
		// secret set in the environment (or turn auth off).
		return nil, errors.New("invalid --auth-token-file: no file given")
	}
	switch {
	case given["auth-token"] && !given["auth-token-file"]:
		o.AuthTokenFile = ""
	case given["auth-token-file"] && !given["auth-token"]:
		o.AuthToken = ""
	}
	if o.AuthToken != "" || given["auth-token"] {
		if strings.TrimSpace(o.AuthToken) == "" {
			// Fail closed: an empty secret would silently turn auth off.
			_, src := value("auth-token", "DFLOCKD_AUTH_TOKEN")
			return nil, fmt.Errorf("invalid %s: the secret is empty", src)
		}
	}
	if o.AutoRelease, err = boolValue(fs, given, getenv, "auto-release-on-disconnect", "DFLOCKD_AUTO_RELEASE_ON_DISCONNECT", true); err != nil {
		return nil, err
	}
	noAuto, err := boolValue(fs, given, func(string) string { return "" }, "no-auto-release-on-disconnect", "", false)
	if err != nil {
		return nil, err
	}
	if given["no-auto-release-on-disconnect"] && noAuto {
		if given["auto-release-on-disconnect"] && o.AutoRelease {
			return nil, errors.New("invalid --no-auto-release-on-disconnect: contradicts --auto-release-on-disconnect")
		}
		o.AutoRelease = false
	}
	if o.Debug, err = boolValue(fs, given, getenv, "debug", "DFLOCKD_DEBUG", false); err != nil {
		return nil, err
	}
	if o.PProf, err = boolValue(fs, given, getenv, "pprof", "DFLOCKD_PPROF", false); err != nil {
		return nil, err
	}
	if err := o.validate(); err != nil {
		return nil, err
	}
	if o.AuthToken != "" {
		_, src := value("auth-token", "DFLOCKD_AUTH_TOKEN")
		if o.AuthTokenFile != "" {
			_, src = value("auth-token-file", "DFLOCKD_AUTH_TOKEN_FILE")
		}
		// A client sends the secret as one protocol line: a secret that
		// cannot be one would lock every client out.
		switch {
		case strings.ContainsRune(o.AuthToken, '\n'):
			return nil, fmt.Errorf("invalid %s: the secret contains a newline; a client sends it on one line", src)
		case len(o.AuthToken) > codec.MaxLineLen:
			return nil, fmt.Errorf("invalid %s: the secret is %d bytes; a protocol line holds at most %d", src, len(o.AuthToken), codec.MaxLineLen)
		}
	}
	return o, nil
}

// boolValue reads a switch: the flag if given, else its env variable (if
// env is not ""), else def. Both accept 1/yes/true/on and 0/no/false/off
// in any case (and what strconv.ParseBool accepts).
func boolValue(fs *flag.FlagSet, given map[string]bool, getenv func(string) string, name, env string, def bool) (bool, error) {
	text, src := "", ""
	switch {
	case given[name]:
		text, src = fs.Lookup(name).Value.String(), "--"+name
	case env != "" && getenv(env) != "":
		text, src = getenv(env), env+" (--"+name+")"
	default:
		return def, nil
	}
	switch strings.ToLower(strings.TrimSpace(text)) {
	case "1", "yes", "true", "on", "t":
		return true, nil
	case "0", "no", "false", "off", "f":
		return false, nil
	}
	return false, fmt.Errorf("invalid %s: %q is not one of 1/yes/true or 0/no/false", src, text)
}

func (o *options) validate() error {
	if (o.TLSCert == "") != (o.TLSKey == "") {
		if o.TLSCert == "" {
			return errors.New("invalid --tls-key: --tls-cert is required with it")
		}
		return errors.New("invalid --tls-cert: --tls-key is required with it")
	}
	if o.AuthToken != "" && o.AuthTokenFile != "" {
		return errors.New("invalid --auth-token-file: give either --auth-token or --auth-token-file, not both")
	}
	if o.AuthTokenFile != "" {
		b, err := readSmallFile(o.AuthTokenFile, o.filesBy)
		if err != nil {
			return fmt.Errorf("invalid --auth-token-file: %v", err)
		}
		line, _, _ := strings.Cut(string(b), "\n")
		o.AuthToken = strings.TrimSpace(line)
		if o.AuthToken == "" {
			return fmt.Errorf("invalid --auth-token-file: %s holds no token", o.AuthTokenFile)
		}
	}
	o.AuthToken = strings.TrimSpace(o.AuthToken)
	switch o.LogFormat {
	case "console", "json":
	default:
		return fmt.Errorf("invalid --log-format: %q (want console or json)", o.LogFormat)
	}
	o.HTTPAddr = strings.TrimSpace(o.HTTPAddr)
	if o.HTTPAddr != "" {
		host, port, err := net.SplitHostPort(o.HTTPAddr)
		if err != nil {
			return fmt.Errorf("invalid --http-addr: %q is not host:port", o.HTTPAddr)
		}
		if err := checkHost(host); err != nil {
			return fmt.Errorf("invalid --http-addr: %q: %v", o.HTTPAddr, err)
		}
		if p, err := strconv.ParseUint(port, 10, 16); err != nil || p > 65535 {
			return fmt.Errorf("invalid --http-addr: %q has no valid port (0..65535)", o.HTTPAddr)
		}
	}
	if o.PProf && o.HTTPAddr == "" {
		return errors.New("invalid --pprof: it needs --http-addr")
	}
	return nil
}

// checkHost rejects, before anything is bound, a listen host that no
// resolver turns into an address: brackets, or a colon that is not part of
// an IPv6 address. "" means all interfaces. Anything else is left to the
// resolver at listen time, so names from /etc/hosts or DNS ("localhost")
// keep working, and so do the numeric forms the system resolver accepts
// ("127.1", "0"); one that does not resolve ("999.1.1.1") fails the
// listen, which names the flag too.
func checkHost(h string) error {
	if h == "" {
		return nil
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return nil
	}
	switch {
	case strings.IndexFunc(h, unicode.IsControl) >= 0:
		return fmt.Errorf("%q contains a control character", h)
	case strings.ContainsAny(h, "[]"):
		return fmt.Errorf("%q: give an IPv6 address without brackets", h)
	case strings.Contains(h, ":"):
		return fmt.Errorf("%q is neither an IP address nor a host name", h)
	}
	return nil
}

// defaultHost is where the server listens unless told otherwise: this
// machine only.
const defaultHost = "127.0.0.1"

// maxSmallFile bounds the token and fence state files: both hold one line,
// and a wrong path (a log, a device such as /dev/zero) must fail at once
// rather than read without end.
const maxSmallFile = 64 << 10

// maxPEMFile bounds each of the TLS certificate and key files.
const maxPEMFile = 1 << 20

// pipeWait bounds how long the configuration files may take to open and
// read, all of them together from the start: a FIFO waits for its writer,
// a pipe (<(pass show dflockd)) for its content, and any file for a hung
// mount or another holder's lease. A variable for tests.
var pipeWait = 5 * time.Second

// readSmallFile reads a file of at most maxSmallFile bytes by by (see
// readBounded).
func readSmallFile(path string, by time.Time) ([]byte, error) {
	return readBounded(path, maxSmallFile, by)
}

// readBounded reads a file of at most limit bytes by the time by (the
// zero time: pipeWait from now), with a grace of pipeGrace when by has
// passed (an earlier file may have used the time up). Opening a FIFO waits
// for its writer and reading a pipe waits for its content, as before, but
// neither that nor an open that cannot finish (a leased file, a hung
// mount) holds the start for longer: it fails with one line. The open and
// read run in a goroutine that is left to end on its own after a timeout
// (the server exits on the error).
func readBounded(path string, limit int, by time.Time) ([]byte, error) {
	wait := pipeWait // for the messages; the goroutine may outlive this call
	if by.IsZero() {
		by = time.Now().Add(wait)
	}
	by = later(by, time.Now().Add(pipeGrace))
	type result struct {
		b   []byte
		err error
	}
	done := make(chan result, 1)
	var opened atomic.Bool
	go func() {
		b, err := readOpened(path, limit, by, wait, &opened)
		done <- result{b, err}
	}()
	// A little past by, so that a pipe's read deadline answers first.
	t := time.NewTimer(time.Until(by) + pipeGrace)
	defer t.Stop()
	select {
	case r := <-done:
		return r.b, r.err
	case <-t.C:
		if !opened.Load() {
			return nil, fmt.Errorf("%s: not opened %v after the start (a FIFO without a writer?)", path, wait)
		}
		return nil, fmt.Errorf("%s: still being read %v after the start", path, wait)
	}
}

// readOpened is readBounded's open and read; anything but a regular file
// is read with the deadline by.
func readOpened(path string, limit int, by time.Time, wait time.Duration, opened *atomic.Bool) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	opened.Store(true)
	defer func() { _ = f.Close() }()
	if fi, err := f.Stat(); err == nil && !fi.Mode().IsRegular() {
		_ = f.SetReadDeadline(by)
	}
	b, err := io.ReadAll(io.LimitReader(f, int64(limit)+1))
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return nil, fmt.Errorf("%s: still being written %v after the start", path, wait)
	}
	if err != nil {
		return nil, err
	}
	if len(b) > limit {
		return nil, fmt.Errorf("%s: larger than %d KiB", path, limit>>10)
	}
	return b, nil
}

// pipeGrace is what a file read after the start's deadline still gets.
const pipeGrace = 100 * time.Millisecond

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// loadKeyPair is tls.LoadX509KeyPair with readBounded's bounds.
func loadKeyPair(certFile, keyFile string, by time.Time) (tls.Certificate, error) {
	cert, err := readBounded(certFile, maxPEMFile, by)
	if err != nil {
		return tls.Certificate{}, err
	}
	key, err := readBounded(keyFile, maxPEMFile, by)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.X509KeyPair(cert, key)
}
