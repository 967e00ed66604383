package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/reactor"
)

// The server binary is built once per test run, on first use, into a
// directory TestMain owns (so `go test -run ParseConfig` builds nothing).
var serverBin struct {
	dir  string
	once sync.Once
	path string
	err  error
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "dflockd-test-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "dflockd tests:", err)
		os.Exit(1)
	}
	serverBin.dir = dir
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// serverBinary returns the path of the dflockd binary built from this
// package (with -race when the tests run with it).
func serverBinary(t testing.TB) string {
	t.Helper()
	serverBin.once.Do(func() {
		goTool, err := exec.LookPath("go")
		if err != nil {
			serverBin.err = fmt.Errorf("go tool not found: %w", err)
			return
		}
		path := filepath.Join(serverBin.dir, "dflockd")
		args := []string{"build", "-o", path}
		if raceEnabled {
			args = append(args, "-race")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, goTool, append(args, ".")...).CombinedOutput()
		if err != nil {
			serverBin.err = fmt.Errorf("go build: %w\n%s", err, out)
			return
		}
		serverBin.path = path
	})
	if serverBin.err != nil {
		t.Fatal(serverBin.err)
	}
	return serverBin.path
}

// syncBuffer is a bytes.Buffer safe for the writer goroutine exec starts
// and the test reading it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// procConfig says how to run the server binary.
type procConfig struct {
	args []string
	// env is added (KEY=VALUE) to the test's environment without any
	// DFLOCKD_* variable.
	env []string
	// nofile > 0 runs the binary under `ulimit -n nofile` (soft and hard
	// limit, so the server cannot raise it).
	nofile int
	// portEnv passes the port startServer picks as DFLOCKD_PORT instead
	// of --port.
	portEnv bool
}

// proc is one run of the server binary. It is killed (by its PID) in
// t.Cleanup if it is still running.
type proc struct {
	cmd    *exec.Cmd
	stdout syncBuffer
	stderr syncBuffer
	done   chan struct{} // closed when the process has exited
	exit   int           // exit code, valid once done is closed
	addr   string        // "127.0.0.1:port" of a started server
}

func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DFLOCKD_") {
			env = append(env, kv)
		}
	}
	return env
}

// startProc starts the binary and returns at once.
func startProc(t testing.TB, pc procConfig) *proc {
	t.Helper()
	path := serverBinary(t)
	var cmd *exec.Cmd
	if pc.nofile > 0 {
		script := fmt.Sprintf(`ulimit -n %d && exec "$0" "$@"`, pc.nofile)
		cmd = exec.Command("/bin/sh", append([]string{"-c", script, path}, pc.args...)...)
	} else {
		cmd = exec.Command(path, pc.args...)
	}
	// A race-enabled binary sleeps 1 s before exiting unless told not to.
	cmd.Env = append(append(cleanEnv(), "GORACE=atexit_sleep_ms=0"), pc.env...)
	p := &proc{cmd: cmd, done: make(chan struct{})}
	cmd.Stdout = &p.stdout
	cmd.Stderr = &p.stderr
	require.NoError(t, cmd.Start())
	go func() {
		_ = cmd.Wait()
		p.exit = cmd.ProcessState.ExitCode()
		close(p.done)
	}()
	t.Cleanup(func() {
		if p.running() {
			_ = cmd.Process.Kill()
		}
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			t.Errorf("server pid %d did not exit after SIGKILL", cmd.Process.Pid)
		}
		stderr := p.stderr.String()
		if strings.Contains(stderr, "WARNING: DATA RACE") {
			t.Errorf("data race in the server (pid %d)", cmd.Process.Pid)
		}
		if t.Failed() {
			t.Logf("server pid %d stderr:\n%s", cmd.Process.Pid, tail(stderr, 8000))
		}
	})
	return p
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// waitExit waits for the process to exit and returns its exit code.
func (p *proc) waitExit(t testing.TB, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.exit
	case <-time.After(timeout):
		t.Fatalf("server pid %d still running after %v", p.cmd.Process.Pid, timeout)
		return 0
	}
}

func (p *proc) signal(t testing.TB, sig os.Signal) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(sig))
}

// waitReady waits for the "dflockd listening" log line.
func (p *proc) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if strings.Contains(p.stderr.String(), "dflockd listening") {
			return nil
		}
		if !p.running() {
			return fmt.Errorf("exited with code %d", p.exit)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not listening after %v", timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// freePort returns a port that was free a moment ago on 127.0.0.1.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())
	return port
}

// startServer runs the server on a free port of 127.0.0.1 and waits until
// it listens. The port is picked by the test (the server's own log is the
// only other way to learn it), so a port taken in between is retried.
func startServer(t testing.TB, pc procConfig) *proc {
	t.Helper()
	for attempt := 1; ; attempt++ {
		port := strconv.Itoa(freePort(t))
		run := pc
		if pc.portEnv {
			run.env = append(append([]string(nil), pc.env...), "DFLOCKD_PORT="+port)
		} else {
			run.args = append([]string{"--port", port}, pc.args...)
		}
		p := startProc(t, run)
		err := p.waitReady(15 * time.Second)
		if err == nil {
			p.addr = net.JoinHostPort("127.0.0.1", port)
			return p
		}
		if attempt < 5 && strings.Contains(p.stderr.String(), "address already in use") {
			continue
		}
		t.Fatalf("server did not start: %v\n%s", err, p.stderr.String())
	}
}

// stop sends SIGTERM and requires a clean exit.
func (p *proc) stop(t testing.TB) {
	t.Helper()
	p.signal(t, syscall.SIGTERM)
	require.Equal(t, 0, p.waitExit(t, 10*time.Second), "exit code after SIGTERM")
}

// listening is the start-up log line (with --log-format json).
type listening struct {
	Msg            string  `json:"msg"`
	Addr           string  `json:"addr"`
	ConnectionCap  int64   `json:"connection_cap"`
	OpenFilesLimit uint64  `json:"open_files_limit"`
	EventLoops     int64   `json:"event_loops"`
	GOMAXPROCS     int     `json:"gomaxprocs"`
	GOGC           int     `json:"gogc"`
	Tick           float64 `json:"tick"`
	TLS            bool    `json:"tls"`
	Auth           bool    `json:"auth"`
}

func (p *proc) listeningLine(t testing.TB) listening {
	t.Helper()
	for _, line := range strings.Split(p.stderr.String(), "\n") {
		if !strings.Contains(line, "dflockd listening") {
			continue
		}
		var l listening
		require.NoError(t, json.Unmarshal([]byte(line), &l), "start-up line is not JSON (want --log-format json): %s", line)
		return l
	}
	t.Fatalf("no start-up line in:\n%s", p.stderr.String())
	return listening{}
}

// client is a raw protocol connection.
type client struct {
	t  testing.TB
	nc net.Conn
	r  *bufio.Reader
}

const ioTimeout = 5 * time.Second

func dialServer(t testing.TB, addr string) *client {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, ioTimeout)
	require.NoError(t, err)
	return newClient(t, nc)
}

func newClient(t testing.TB, nc net.Conn) *client {
	t.Cleanup(func() { _ = nc.Close() })
	return &client{t: t, nc: nc, r: bufio.NewReader(nc)}
}

func (c *client) send(cmd, key, arg string) {
	c.t.Helper()
	require.NoError(c.t, c.nc.SetWriteDeadline(time.Now().Add(ioTimeout)))
	_, err := io.WriteString(c.nc, cmd+"\n"+key+"\n"+arg+"\n")
	require.NoError(c.t, err)
}

// readLine reads one reply line (without its "\n") within d.
func (c *client) readLine(d time.Duration) (string, error) {
	if err := c.nc.SetReadDeadline(time.Now().Add(d)); err != nil {
		return "", err
	}
	line, err := c.r.ReadString('\n')
	if err != nil {
		return line, err
	}
	return strings.TrimSuffix(line, "\n"), nil
}

// do sends a request and returns its reply.
func (c *client) do(cmd, key, arg string) string {
	c.t.Helper()
	c.send(cmd, key, arg)
	line, err := c.readLine(ioTimeout)
	require.NoError(c.t, err, "reply to %q %q %q", cmd, key, arg)
	return line
}

// requireClosed requires the server to close the connection within d
// without sending another byte.
func (c *client) requireClosed(d time.Duration) {
	c.t.Helper()
	line, err := c.readLine(d)
	require.Error(c.t, err, "got %q, want the connection closed", line)
	require.False(c.t, isTimeout(err), "connection still open after %v", d)
	require.Empty(c.t, line)
}

func (c *client) close() { _ = c.nc.Close() }

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

var grantRe = regexp.MustCompile(`^ok ([0-9a-f]{32}) ([0-9]+)$`)

// requireGrant requires `ok <token> <lease>` and returns the token.
func requireGrant(t testing.TB, reply string, lease int) string {
	t.Helper()
	m := grantRe.FindStringSubmatch(reply)
	require.NotNil(t, m, "want a grant, got %q", reply)
	require.Equal(t, strconv.Itoa(lease), m[2], "lease of %q", reply)
	return m[1]
}

// fenceOf is a token's fence counter: its first 16 hex digits.
func fenceOf(t testing.TB, token string) uint64 {
	t.Helper()
	f, err := strconv.ParseUint(token[:16], 16, 64)
	require.NoError(t, err)
	return f
}

type lockStat struct {
	Key     string `json:"key"`
	Waiters int    `json:"waiters"`
}

// waitWaiters polls stats until the lock key has n waiters.
func waitWaiters(t testing.TB, c *client, key string, n int) {
	t.Helper()
	deadline := time.Now().Add(ioTimeout)
	for {
		reply := c.do("stats", "_", "_")
		require.True(t, strings.HasPrefix(reply, "ok {"), "stats: %q", reply)
		var st struct {
			Locks []lockStat `json:"locks"`
		}
		require.NoError(t, json.Unmarshal([]byte(reply[3:]), &st))
		for _, l := range st.Locks {
			if l.Key == key && l.Waiters == n {
				return
			}
		}
		require.True(t, time.Now().Before(deadline), "key %q never had %d waiters: %s", key, n, reply)
		time.Sleep(5 * time.Millisecond)
	}
}

// eventually retries f until it returns true or d passes.
func eventually(t testing.TB, d time.Duration, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// pingOK dials, pings and reports whether the server answered ok.
func pingOK(addr string) bool {
	nc, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer func() { _ = nc.Close() }()
	_ = nc.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(nc, "ping\n_\n_\n"); err != nil {
		return false
	}
	line, err := bufio.NewReader(nc).ReadString('\n')
	return err == nil && line == "ok\n"
}

// selfSignedCert writes a certificate for 127.0.0.1 and its key to temp
// files and returns them with a pool trusting the certificate.
func selfSignedCert(t testing.TB) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "dflockd test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)

	dir := t.TempDir()
	certFile = filepath.Join(dir, "cert.pem")
	keyFile = filepath.Join(dir, "key.pem")
	require.NoError(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600))
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// raiseTestNoFile lifts the test process's open-file soft limit to at least
// need (up to the hard limit) and skips the test if that is not possible.
func raiseTestNoFile(t testing.TB, need uint64) {
	t.Helper()
	limit, err := reactor.RaiseNoFile()
	require.NoError(t, err)
	if limit < need {
		t.Skipf("open-file limit %d (raised to the hard limit) is below the %d this test needs", limit, need)
	}
}
