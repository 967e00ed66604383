package main

// Black-box tests of the dflockd binary: each test runs the server as a
// subprocess (built once, see helpers_test.go) and talks to it over
// 127.0.0.1 like any client would.

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestLockOverRawTCP is `printf 'l\nk\n10\n' | nc 127.0.0.1 6388`.
func TestLockOverRawTCP(t *testing.T) {
	t.Parallel()
	srv := startServer(t, procConfig{})

	nc, err := net.DialTimeout("tcp", srv.addr, ioTimeout)
	require.NoError(t, err)
	c := newClient(t, nc)
	_, err = io.WriteString(nc, "l\nk\n10\n")
	require.NoError(t, err)
	reply, err := c.readLine(ioTimeout)
	require.NoError(t, err)
	require.Regexp(t, `^ok [0-9a-f]{32} 33$`, reply)
	token := requireGrant(t, reply, 33)
	require.Equal(t, "ok", c.do("r", "k", token))

	// nc that half-closes after sending (ncat's default, nc -N) still
	// gets the reply of a request that answers at once.
	nc2, err := net.DialTimeout("tcp", srv.addr, ioTimeout)
	require.NoError(t, err)
	c2 := newClient(t, nc2)
	_, err = io.WriteString(nc2, "l\nk\n10\n")
	require.NoError(t, err)
	require.NoError(t, nc2.(*net.TCPConn).CloseWrite())
	reply, err = c2.readLine(ioTimeout)
	require.NoError(t, err)
	requireGrant(t, reply, 33)
}

// TestBadConfigurationExits: a bad flag or variable exits non-zero with
// exactly one stderr line that names the flag, before binding anything.
func TestBadConfigurationExits(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	token := writeFile(t, "token", "s3cret\n")
	garbage := writeFile(t, "garbage.pem", "not a pem file\n")
	notANumber := writeFile(t, "fence", "seventeen\n")
	certFile, keyFile, _ := selfSignedCert(t)
	tests := []struct {
		name string
		args []string
		env  []string
		want []string
	}{
		{name: "unknown flag", args: []string{"--bogus"}, want: []string{"-bogus"}},
		{name: "port not a number", args: []string{"--port", "abc"}, want: []string{"--port", "abc"}},
		{name: "port out of range", args: []string{"--port", "70000"}, want: []string{"--port", "70000"}},
		{name: "port env not a number", env: []string{"DFLOCKD_PORT=abc"}, want: []string{"DFLOCKD_PORT", "--port"}},
		{name: "negative read timeout", args: []string{"--read-timeout", "-1"}, want: []string{"--read-timeout"}},
		{name: "negative shutdown timeout env", env: []string{"DFLOCKD_SHUTDOWN_TIMEOUT_S=-3"}, want: []string{"DFLOCKD_SHUTDOWN_TIMEOUT_S", "--shutdown-timeout"}},
		{name: "cert without key", args: []string{"--tls-cert", certFile}, want: []string{"--tls-cert", "--tls-key"}},
		{name: "key without cert", args: []string{"--tls-key", keyFile}, want: []string{"--tls-key", "--tls-cert"}},
		{name: "cert not a certificate", args: []string{"--tls-cert", garbage, "--tls-key", keyFile}, want: []string{"--tls-cert"}},
		{name: "cert file missing", args: []string{"--tls-cert", filepath.Join(dir, "nope.pem"), "--tls-key", keyFile}, want: []string{"--tls-cert"}},
		{name: "token file missing", args: []string{"--auth-token-file", filepath.Join(dir, "nope")}, want: []string{"--auth-token-file"}},
		{name: "token and token file", args: []string{"--auth-token", "x", "--auth-token-file", token}, want: []string{"--auth-token-file"}},
		{name: "token and token file env", env: []string{"DFLOCKD_AUTH_TOKEN=x", "DFLOCKD_AUTH_TOKEN_FILE=" + token}, want: []string{"--auth-token-file"}},
		{name: "host not an address", args: []string{"--host", "1::2::3"}, want: []string{"invalid --host", `"1::2::3"`}},
		{name: "host env not an address", env: []string{"DFLOCKD_HOST=host:6388"}, want: []string{"invalid DFLOCKD_HOST (--host)", `"host:6388"`}},
		{name: "host in brackets", args: []string{"--host", "[::1]"}, want: []string{"invalid --host", "brackets"}},
		{name: "http addr host not an address", args: []string{"--http-addr", "[1::2::3]:0"}, want: []string{"invalid --http-addr"}},
		{name: "log format", args: []string{"--log-format", "xml"}, want: []string{"--log-format"}},
		{name: "tick", args: []string{"--tick", "2s"}, want: []string{"--tick"}},
		{name: "tick env", env: []string{"DFLOCKD_TICK=fast"}, want: []string{"DFLOCKD_TICK", "--tick"}},
		{name: "event loops", args: []string{"--event-loops", "x"}, want: []string{"--event-loops"}},
		{name: "auto release value", args: []string{"--auto-release-on-disconnect=maybe"}, want: []string{"--auto-release-on-disconnect"}},
		{name: "auto release env", env: []string{"DFLOCKD_AUTO_RELEASE_ON_DISCONNECT=maybe"}, want: []string{"DFLOCKD_AUTO_RELEASE_ON_DISCONNECT"}},
		{name: "fence file in missing dir", args: []string{"--fence-state-file", filepath.Join(dir, "missing", "fence")}, want: []string{"--fence-state-file"}},
		{name: "fence file is a directory", args: []string{"--fence-state-file", dir}, want: []string{"--fence-state-file"}},
		{name: "fence file not a number", args: []string{"--fence-state-file", notANumber}, want: []string{"--fence-state-file"}},
		{name: "fence file env in missing dir", env: []string{"DFLOCKD_FENCE_STATE_FILE=" + filepath.Join(dir, "missing", "fence")}, want: []string{"--fence-state-file"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// A port nobody listens on (unless the case is about
			// DFLOCKD_PORT): a run that wrongly starts cannot steal
			// one in use.
			args := tt.args
			if !strings.Contains(strings.Join(tt.env, " "), "DFLOCKD_PORT=") {
				args = append([]string{"--port", strconv.Itoa(freePort(t))}, args...)
			}
			p := startProc(t, procConfig{args: args, env: tt.env})
			code := p.waitExit(t, 10*time.Second)
			assert.NotEqual(t, 0, code, "exit code")
			assert.Empty(t, p.stdout.String(), "stdout")
			stderr := p.stderr.String()
			require.True(t, strings.HasSuffix(stderr, "\n"), "stderr %q", stderr)
			line := strings.TrimSuffix(stderr, "\n")
			require.NotContains(t, line, "\n", "stderr must be exactly one line")
			for _, w := range tt.want {
				assert.Contains(t, line, w)
			}
		})
	}
}

// TestListenFailureExits: a port that cannot be bound, or a host that does
// not resolve, exits 1 with exactly one stderr line naming the flags and
// keeping the system's reason. (An address that can never be bound is
// invalid configuration: see TestBadConfigurationExits.)
func TestListenFailureExits(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() }) // after the parallel subtests
	inUse := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	free := strconv.Itoa(freePort(t))

	tests := []struct {
		name string
		args []string
		env  []string
		want string // the stderr line, a regexp
	}{
		{name: "port in use", args: []string{"--port", inUse},
			want: `dflockd: cannot listen on --host 127\.0\.0\.1 --port ` + inUse + `: address already in use`},
		{name: "port env in use", env: []string{"DFLOCKD_PORT=" + inUse},
			want: `dflockd: cannot listen on --host 127\.0\.0\.1 --port ` + inUse + `: address already in use`},
		{name: "http addr in use", args: []string{"--port", free, "--http-addr", "127.0.0.1:" + inUse},
			want: `dflockd: cannot listen on --http-addr 127\.0\.0\.1:` + inUse + `: address already in use`},
		// .invalid never resolves (RFC 2606); the resolver's reason
		// (no such host, or a timeout without DNS) is kept.
		{name: "host does not resolve", args: []string{"--host", "nosuchhost.invalid", "--port", free},
			want: `dflockd: cannot listen on --host nosuchhost\.invalid --port ` + free + `: lookup nosuchhost\.invalid\b[^\n]*`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := startProc(t, procConfig{args: tt.args, env: tt.env})
			assert.Equal(t, 1, p.waitExit(t, 30*time.Second), "exit code")
			assert.Empty(t, p.stdout.String(), "stdout")
			assert.Regexp(t, `^`+tt.want+`\n$`, p.stderr.String())
		})
	}
}

func TestVersion(t *testing.T) {
	t.Parallel()
	// The environment is not consulted (a bad variable does not matter).
	p := startProc(t, procConfig{args: []string{"--version"}, env: []string{"DFLOCKD_PORT=abc"}})
	require.Equal(t, 0, p.waitExit(t, 10*time.Second))
	assert.Regexp(t, `^dflockd \S+( \S+)?\n$`, p.stdout.String())
	assert.Empty(t, p.stderr.String())
}

func TestHelp(t *testing.T) {
	t.Parallel()
	for _, arg := range []string{"--help", "-h"} {
		t.Run(arg, func(t *testing.T) {
			t.Parallel()
			p := startProc(t, procConfig{args: []string{arg}})
			require.Equal(t, 0, p.waitExit(t, 10*time.Second))
			out := p.stdout.String()
			for _, want := range []string{"-port", "DFLOCKD_PORT", "-fence-state-file", "-tick", "-log-format", "-event-loops", "-no-auto-release-on-disconnect"} {
				assert.Contains(t, out, want)
			}
			assert.Empty(t, p.stderr.String())
		})
	}
}

// TestSignalExitsWhenIdle: with nothing parked, SIGINT and SIGTERM exit 0
// at once (not after --shutdown-timeout) and close open connections.
func TestSignalExitsWhenIdle(t *testing.T) {
	t.Parallel()
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			t.Parallel()
			srv := startServer(t, procConfig{})
			c := dialServer(t, srv.addr)
			requireGrant(t, c.do("l", "k", "0"), 33) // held, not parked
			start := time.Now()
			srv.signal(t, sig)
			require.Equal(t, 0, srv.waitExit(t, 5*time.Second))
			assert.Less(t, time.Since(start), 3*time.Second)
			c.requireClosed(ioTimeout)
			assert.Contains(t, srv.stderr.String(), "draining")
			assert.Contains(t, srv.stderr.String(), "stopped")
		})
	}
}

// drainScenario: a holder, a waiter parked behind it, and an idle
// connection opened before the signal.
type drainScenario struct {
	srv                  *proc
	holder, waiter, idle *client
	token                string
}

func startDrainScenario(t *testing.T, shutdownTimeout string) *drainScenario {
	t.Helper()
	s := &drainScenario{srv: startServer(t, procConfig{args: []string{"--shutdown-timeout", shutdownTimeout}})}
	s.holder = dialServer(t, s.srv.addr)
	s.token = requireGrant(t, s.holder.do("l", "k", "30"), 33)
	s.waiter = dialServer(t, s.srv.addr)
	s.waiter.send("l", "k", "30")
	s.idle = dialServer(t, s.srv.addr)
	waitWaiters(t, s.idle, "k", 1)
	return s
}

// sigterm signals the server and waits until it answers error_draining.
func (s *drainScenario) sigterm(t *testing.T) time.Time {
	t.Helper()
	start := time.Now()
	s.srv.signal(t, syscall.SIGTERM)
	for {
		reply := s.idle.do("ping", "_", "_")
		if reply == "error_draining" {
			return start
		}
		require.Equal(t, "ok", reply)
		require.Less(t, time.Since(start), ioTimeout, "not draining after SIGTERM")
		time.Sleep(5 * time.Millisecond)
	}
}

// requireNotServed: a connection attempt while draining is refused, or
// closed without a byte.
func requireNotServed(t *testing.T, addr string) {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, ioTimeout)
	if err != nil {
		return
	}
	c := newClient(t, nc)
	_ = nc.SetWriteDeadline(time.Now().Add(ioTimeout))
	_, _ = io.WriteString(nc, "ping\n_\n_\n")
	c.requireClosed(ioTimeout)
}

func TestDrainHolderDisconnectGrantsWaiter(t *testing.T) {
	t.Parallel()
	s := startDrainScenario(t, "5")
	s.sigterm(t)

	// New requests are refused; the listener is gone.
	require.Equal(t, "error_draining", s.idle.do("l", "other", "0"))
	require.Equal(t, "error_draining", s.idle.do("e", "other", ""))
	require.Equal(t, "error_draining", s.idle.do("sl", "sem", "0 2"))
	requireNotServed(t, s.srv.addr)
	require.True(t, s.srv.running())

	// The holder goes away: auto-release hands the lock to the parked
	// waiter, which is answered before the server stops.
	s.holder.close()
	reply, err := s.waiter.readLine(ioTimeout)
	require.NoError(t, err)
	granted := requireGrant(t, reply, 33)
	assert.Greater(t, fenceOf(t, granted), fenceOf(t, s.token))

	require.Equal(t, 0, s.srv.waitExit(t, 5*time.Second), "exit code")
	s.waiter.requireClosed(ioTimeout)
	s.idle.requireClosed(ioTimeout)
}

// TestDrainReleaseGrantsWaiter: while draining, the holder's own release
// (and renew) must still work: they are how blocked requests get to
// finish. Refusing them with error_draining leaves the waiter parked until
// the holder disconnects or its lease runs out, and tells the holder its
// release failed.
func TestDrainReleaseGrantsWaiter(t *testing.T) {
	t.Parallel()
	s := startDrainScenario(t, "5")
	s.sigterm(t)
	require.Equal(t, "error_draining", s.idle.do("l", "other", "0"))

	assert.Equal(t, "ok 33", s.holder.do("n", "k", s.token), "renew of a held lock while draining")
	require.Equal(t, "ok", s.holder.do("r", "k", s.token), "release of a held lock while draining")
	reply, err := s.waiter.readLine(ioTimeout)
	require.NoError(t, err)
	requireGrant(t, reply, 33)
	require.Equal(t, 0, s.srv.waitExit(t, 5*time.Second), "exit code")
}

// TestDrainShutdownTimeoutCutsOffWaiter: a waiter that is never granted is
// cut off when --shutdown-timeout runs out, and the process exits 0.
func TestDrainShutdownTimeoutCutsOffWaiter(t *testing.T) {
	t.Parallel()
	s := startDrainScenario(t, "1")
	start := s.sigterm(t)

	line, err := s.waiter.readLine(ioTimeout)
	if err == nil {
		// A grant at the cut-off: TestDrainCutOffWaitersAreNotGranted.
		t.Logf("waiter got %q at the cut-off", line)
		line, err = s.waiter.readLine(ioTimeout)
	}
	elapsed := time.Since(start)
	require.Error(t, err, "waiter got %q", line)
	require.False(t, isTimeout(err), "waiter connection still open")
	assert.Empty(t, line)
	assert.GreaterOrEqual(t, elapsed, 900*time.Millisecond, "cut off before --shutdown-timeout")
	assert.Less(t, elapsed, 3*time.Second, "--shutdown-timeout 1 not honoured")

	require.Equal(t, 0, s.srv.waitExit(t, 3*time.Second), "exit code")
	assert.Less(t, time.Since(start), 3*time.Second)
	s.holder.requireClosed(ioTimeout)
	assert.Contains(t, s.srv.stderr.String(), "shutdown timeout")
}

// TestDrainCutOffWaitersAreNotGranted: when --shutdown-timeout runs out,
// parked waiters are cut off. Closing the holders' connections at the same
// moment must not auto-release their locks to those waiters and write them
// grants: a client must not be told it holds a lock the server drops at
// once.
func TestDrainCutOffWaitersAreNotGranted(t *testing.T) {
	t.Parallel()
	// The bug depends on timing between event loops, so several servers
	// run the scenario at once.
	for run := range 6 {
		t.Run("run"+strconv.Itoa(run), func(t *testing.T) {
			t.Parallel()
			cutOffWaiters(t)
		})
	}
}

// cutOffWaiters parks waiters on the last event loop behind holders on the
// first. gnet deals connections to loops round-robin from the first, and
// stops loops in that order: the first loop's holders are closed (and
// their locks auto-released to the waiters) while the last loop still
// runs, so it can write the grants.
func cutOffWaiters(t *testing.T) {
	const loops, pairs = 8, 4
	srv := startServer(t, procConfig{args: []string{"--shutdown-timeout", "1", "--event-loops", strconv.Itoa(loops)}})
	waiters := make([]*client, pairs)
	for i := range waiters {
		key := "k" + strconv.Itoa(i)
		holder := dialServer(t, srv.addr) // first loop
		for range loops - 2 {
			dialServer(t, srv.addr) // fillers on the loops between
		}
		waiters[i] = dialServer(t, srv.addr) // last loop
		requireGrant(t, holder.do("l", key, "30"), 33)
		waiters[i].send("l", key, "30")
	}
	idle := dialServer(t, srv.addr)
	for i := range waiters {
		waitWaiters(t, idle, "k"+strconv.Itoa(i), 1)
	}
	srv.signal(t, syscall.SIGTERM)
	require.Equal(t, 0, srv.waitExit(t, 5*time.Second))
	for i, w := range waiters {
		line, err := w.readLine(ioTimeout)
		assert.Error(t, err, "waiter %d was granted at the cut-off: %q", i, line)
		assert.False(t, isTimeout(err))
	}
}

// TestConnectionFloodBeyondOpenFileLimit: with RLIMIT_NOFILE 256 (soft and
// hard), 600 connections must neither kill the server nor starve the
// clients it already serves; the excess is refused and the refusal logged.
func TestConnectionFloodBeyondOpenFileLimit(t *testing.T) {
	t.Parallel()
	const nofile, flood = 256, 600
	raiseTestNoFile(t, flood+256)
	srv := startServer(t, procConfig{nofile: nofile, args: []string{"--log-format", "json"}})
	info := srv.listeningLine(t)
	require.EqualValues(t, nofile, info.OpenFilesLimit, "the server raised a hard limit")
	capacity := info.ConnectionCap
	require.Greater(t, capacity, int64(1))
	require.Less(t, capacity, int64(nofile), "connection cap leaves no descriptors in reserve")

	first := dialServer(t, srv.addr)
	token := requireGrant(t, first.do("l", "k", "10"), 33)

	var conns []net.Conn
	t.Cleanup(func() {
		for _, nc := range conns {
			_ = nc.Close()
		}
	})
	dialErrors := 0
	for range flood {
		nc, err := net.DialTimeout("tcp", srv.addr, 2*time.Second)
		if err != nil {
			dialErrors++
			continue
		}
		conns = append(conns, nc)
	}
	t.Logf("flood: %d connections open, %d dial errors, server cap %d", len(conns), dialErrors, capacity)

	// Each flood connection is served or closed without a byte; none hangs.
	served := 0
	for i, nc := range conns {
		_ = nc.SetDeadline(time.Now().Add(ioTimeout))
		_, _ = io.WriteString(nc, "ping\n_\n_\n")
		line, err := bufio.NewReader(nc).ReadString('\n')
		if err == nil {
			require.Equal(t, "ok\n", line, "flood connection %d", i)
			served++
			continue
		}
		require.False(t, isTimeout(err), "flood connection %d neither served nor closed", i)
		require.Empty(t, line)
	}
	assert.Equal(t, int(capacity)-1, served, "served flood connections (cap minus the first client)")
	require.True(t, srv.running(), "server died under the flood")

	// The client from before the flood is still served.
	require.Equal(t, "ok", first.do("ping", "_", "_"))
	require.Equal(t, "ok", first.do("r", "k", token))

	for _, nc := range conns {
		_ = nc.Close()
	}
	eventually(t, ioTimeout, "new connection served after the flood", func() bool { return pingOK(srv.addr) })
	require.True(t, srv.running(), "server died after the flood")

	t.Run("refusal is logged", func(t *testing.T) {
		var refusals []string
		for _, line := range strings.Split(srv.stderr.String(), "\n") {
			var entry struct {
				Level string `json:"level"`
			}
			if json.Unmarshal([]byte(line), &entry) != nil || (entry.Level != "warn" && entry.Level != "error") {
				continue
			}
			if regexp.MustCompile(`(?i)refus|reject`).MatchString(line) {
				refusals = append(refusals, line)
			}
		}
		assert.NotEmpty(t, refusals, "%d connections were refused at the connection cap (%d) without a log line",
			len(conns)-served, capacity)
	})
}

func TestEnvironmentConfiguration(t *testing.T) {
	t.Parallel()

	t.Run("port and auth token", func(t *testing.T) {
		t.Parallel()
		srv := startServer(t, procConfig{portEnv: true, env: []string{
			"DFLOCKD_AUTH_TOKEN=s3cret",
			"DFLOCKD_DEFAULT_LEASE_TTL_S=7",
		}})

		c := dialServer(t, srv.addr)
		require.Equal(t, "error_auth", c.do("l", "k", "10"), "auth is required")
		c.requireClosed(ioTimeout)

		c = dialServer(t, srv.addr)
		require.Equal(t, "error_auth", c.do("auth", "_", "wrong"))
		c.requireClosed(ioTimeout)

		c = dialServer(t, srv.addr)
		require.Equal(t, "ok", c.do("auth", "_", "s3cret"))
		requireGrant(t, c.do("l", "k", "10"), 7)
	})

	t.Run("auth token file", func(t *testing.T) {
		t.Parallel()
		srv := startServer(t, procConfig{env: []string{
			"DFLOCKD_AUTH_TOKEN_FILE=" + writeFile(t, "token", "file-s3cret  \n"),
		}})
		c := dialServer(t, srv.addr)
		require.Equal(t, "error_auth", c.do("auth", "_", "s3cret"))
		c = dialServer(t, srv.addr)
		require.Equal(t, "ok", c.do("auth", "_", "file-s3cret"))
		requireGrant(t, c.do("l", "k", "10"), 33)
	})

	t.Run("flags win", func(t *testing.T) {
		t.Parallel()
		// --port is given (startServer), so the bad DFLOCKD_PORT is
		// never read.
		srv := startServer(t, procConfig{
			args: []string{"--default-lease-ttl", "9", "--auth-token", "flag-s3cret"},
			env:  []string{"DFLOCKD_PORT=not-a-port", "DFLOCKD_DEFAULT_LEASE_TTL_S=7", "DFLOCKD_AUTH_TOKEN=env-s3cret"},
		})
		c := dialServer(t, srv.addr)
		require.Equal(t, "ok", c.do("auth", "_", "flag-s3cret"))
		requireGrant(t, c.do("l", "k", "10"), 9)
	})

	// --auth-token and --auth-token-file are one setting: the one given
	// as a flag wins over the other's variable (both as flags, or both
	// as variables, is an error: see TestBadConfigurationExits).
	for _, tc := range []struct {
		name          string
		flag, envVar  string // the winning flag, the losing variable
		winner, loser string // their secrets (in a file for the *-file one)
	}{
		{name: "auth token flag over token file env", flag: "--auth-token", envVar: "DFLOCKD_AUTH_TOKEN_FILE",
			winner: "flag-s3cret", loser: "env-file-s3cret"},
		{name: "auth token file flag over token env", flag: "--auth-token-file", envVar: "DFLOCKD_AUTH_TOKEN",
			winner: "flag-file-s3cret", loser: "env-s3cret"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			flagValue, envValue := tc.winner, tc.loser
			if tc.flag == "--auth-token-file" {
				flagValue = writeFile(t, "token", tc.winner+"\n")
			} else {
				envValue = writeFile(t, "token", tc.loser+"\n")
			}
			srv := startServer(t, procConfig{args: []string{tc.flag, flagValue}, env: []string{tc.envVar + "=" + envValue}})
			c := dialServer(t, srv.addr)
			require.Equal(t, "error_auth", c.do("auth", "_", tc.loser))
			c = dialServer(t, srv.addr)
			require.Equal(t, "ok", c.do("auth", "_", tc.winner))
			requireGrant(t, c.do("l", "k", "10"), 33)
		})
	}

	t.Run("auto release off", func(t *testing.T) {
		t.Parallel()
		srv := startServer(t, procConfig{env: []string{"DFLOCKD_AUTO_RELEASE_ON_DISCONNECT=No"}})
		requireLockSurvivesDisconnect(t, srv.addr, true)
	})
}

// requireLockSurvivesDisconnect: a holder disconnects; another client then
// waits up to 1 s for the lock.
func requireLockSurvivesDisconnect(t *testing.T, addr string, survives bool) {
	t.Helper()
	holder := dialServer(t, addr)
	requireGrant(t, holder.do("l", "k", "0"), 33)
	holder.close()
	other := dialServer(t, addr)
	reply := other.do("l", "k", "1")
	if survives {
		require.Equal(t, "timeout", reply, "the lock was released on disconnect")
	} else {
		requireGrant(t, reply, 33)
	}
}

// TestFlagsReachServer: the wiring from flags to lockcore and reactor.
func TestFlagsReachServer(t *testing.T) {
	t.Parallel()

	t.Run("lease and limits", func(t *testing.T) {
		t.Parallel()
		srv := startServer(t, procConfig{args: []string{"--default-lease-ttl", "7", "--max-locks", "2", "--max-waiters", "1"}})
		c := dialServer(t, srv.addr)
		requireGrant(t, c.do("l", "a", "0"), 7)
		requireGrant(t, c.do("l", "b", "0 5"), 5)
		require.Equal(t, "error_max_locks", c.do("l", "c", "0"))

		w := dialServer(t, srv.addr)
		w.send("l", "a", "10")
		waitWaiters(t, c, "a", 1)
		require.Equal(t, "error_max_waiters", dialServer(t, srv.addr).do("l", "a", "0"))
	})

	t.Run("read timeout", func(t *testing.T) {
		t.Parallel()
		srv := startServer(t, procConfig{args: []string{"--read-timeout", "1"}})
		c := dialServer(t, srv.addr)
		start := time.Now()
		line, err := c.readLine(ioTimeout)
		require.NoError(t, err)
		require.Equal(t, "error", line)
		assert.GreaterOrEqual(t, time.Since(start), 900*time.Millisecond)
		assert.Less(t, time.Since(start), 3*time.Second)
		c.requireClosed(ioTimeout)
	})

	t.Run("max connections", func(t *testing.T) {
		t.Parallel()
		srv := startServer(t, procConfig{args: []string{"--max-connections", "2"}})
		c1 := dialServer(t, srv.addr)
		c2 := dialServer(t, srv.addr)
		require.Equal(t, "ok", c1.do("ping", "_", "_"))
		require.Equal(t, "ok", c2.do("ping", "_", "_"))
		c3 := dialServer(t, srv.addr)
		c3.requireClosed(ioTimeout)
		c1.close()
		eventually(t, ioTimeout, "a slot frees when a connection closes", func() bool { return pingOK(srv.addr) })
	})

	t.Run("host name", func(t *testing.T) {
		t.Parallel()
		// A name, not an address, still binds (Go listens on its
		// first IPv4 address).
		srv := startServer(t, procConfig{args: []string{"--host", "localhost"}})
		require.Equal(t, "ok", dialServer(t, srv.addr).do("ping", "_", "_"))
	})

	t.Run("no auto release", func(t *testing.T) {
		t.Parallel()
		srv := startServer(t, procConfig{args: []string{"--no-auto-release-on-disconnect"}})
		requireLockSurvivesDisconnect(t, srv.addr, true)
	})

	t.Run("auto release", func(t *testing.T) {
		t.Parallel()
		srv := startServer(t, procConfig{})
		requireLockSurvivesDisconnect(t, srv.addr, false)
	})

	t.Run("json debug log", func(t *testing.T) {
		t.Parallel()
		srv := startServer(t, procConfig{args: []string{"--debug", "--log-format", "json", "--event-loops", "1", "--tick", "5ms"}})
		info := srv.listeningLine(t)
		assert.Equal(t, int64(1), info.EventLoops)
		if os.Getenv("GOMAXPROCS") == "" {
			// A spare P beyond the loops (see setProcs).
			assert.Equal(t, max(runtime.NumCPU(), 2), info.GOMAXPROCS)
		}
		if os.Getenv("GOGC") == "" {
			assert.Equal(t, defaultGCPercent, info.GOGC)
		}
		assert.InDelta(t, 0.005, info.Tick, 1e-9)
		c := dialServer(t, srv.addr)
		require.Equal(t, "ok", c.do("ping", "_", "_"))
		eventually(t, ioTimeout, "debug connection log", func() bool {
			return strings.Contains(srv.stderr.String(), "connection opened")
		})
		srv.stop(t)
		for _, line := range strings.Split(strings.TrimSpace(srv.stderr.String()), "\n") {
			assert.True(t, json.Valid([]byte(line)), "not a JSON log line: %s", line)
		}
		assert.Contains(t, srv.stderr.String(), `"level":"debug"`)
	})
}

func readFenceFile(t *testing.T, path string) uint64 {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	require.NoError(t, err, "fence state file holds %q", b)
	return v
}

func TestFenceStateFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "fence")

	srv := startServer(t, procConfig{args: []string{"--fence-state-file", path}})
	c := dialServer(t, srv.addr)
	token1 := requireGrant(t, c.do("l", "k", "10"), 33)
	fence1 := fenceOf(t, token1)
	assert.Greater(t, readFenceFile(t, path), fence1, "persisted while running")
	srv.stop(t)

	ceiling := readFenceFile(t, path)
	require.Greater(t, ceiling, fence1, "the state file must be above every fence issued")
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 1, "temp files left beside the state file")

	srv = startServer(t, procConfig{env: []string{"DFLOCKD_FENCE_STATE_FILE=" + path}})
	c = dialServer(t, srv.addr)
	token2 := requireGrant(t, c.do("l", "k", "10"), 33)
	fence2 := fenceOf(t, token2)
	assert.Greater(t, fence2, fence1)
	assert.Greater(t, fence2, ceiling, "restart must seed above the persisted ceiling")
	assert.Greater(t, token2, token1, "a later grant has a larger token in byte order")
	srv.stop(t)
	assert.Greater(t, readFenceFile(t, path), fence2)
}

// TestFenceStateFileAheadOfClock: a ceiling above the wall clock (the clock
// stepped back since the last run) still seeds the fence.
func TestFenceStateFileAheadOfClock(t *testing.T) {
	t.Parallel()
	const ahead = uint64(9_000_000_000_000_000_000) // year 2255 in ns
	path := writeFile(t, "fence", strconv.FormatUint(ahead, 10)+"\n")

	srv := startServer(t, procConfig{args: []string{"--fence-state-file", path}})
	c := dialServer(t, srv.addr)
	fence := fenceOf(t, requireGrant(t, c.do("l", "k", "10"), 33))
	assert.Greater(t, fence, ahead)
	srv.stop(t)
	assert.Greater(t, readFenceFile(t, path), fence)
}

func TestTLS(t *testing.T) {
	t.Parallel()
	certFile, keyFile, pool := selfSignedCert(t)
	srv := startServer(t, procConfig{args: []string{"--tls-cert", certFile, "--tls-key", keyFile}})

	dialTLS := func(cfg *tls.Config) (*tls.Conn, error) {
		return tls.DialWithDialer(&net.Dialer{Timeout: ioTimeout}, "tcp", srv.addr, cfg)
	}

	t.Run("lock over TLS", func(t *testing.T) {
		tc, err := dialTLS(&tls.Config{RootCAs: pool})
		require.NoError(t, err)
		c := newClient(t, tc)
		token := requireGrant(t, c.do("l", "k", "10"), 33)
		require.Equal(t, "ok", c.do("r", "k", token))
		assert.GreaterOrEqual(t, tc.ConnectionState().Version, uint16(tls.VersionTLS12))
	})

	t.Run("TLS 1.2 client", func(t *testing.T) {
		tc, err := dialTLS(&tls.Config{RootCAs: pool, MaxVersion: tls.VersionTLS12})
		require.NoError(t, err)
		c := newClient(t, tc)
		require.Equal(t, "ok", c.do("ping", "_", "_"))
		assert.Equal(t, uint16(tls.VersionTLS12), tc.ConnectionState().Version)
	})

	t.Run("TLS 1.1 client refused", func(t *testing.T) {
		tc, err := dialTLS(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11})
		if err == nil {
			_ = tc.Close()
		}
		require.Error(t, err)
		assert.Contains(t, err.Error(), "protocol version", "refused by the server, not by the client")
	})

	t.Run("plaintext client not served", func(t *testing.T) {
		nc, err := net.DialTimeout("tcp", srv.addr, ioTimeout)
		require.NoError(t, err)
		defer func() { _ = nc.Close() }()
		_, err = io.WriteString(nc, "l\nk\n10\n")
		require.NoError(t, err)
		require.NoError(t, nc.SetReadDeadline(time.Now().Add(2*time.Second)))
		got, _ := io.ReadAll(nc) // until closed or the deadline
		assert.NotRegexp(t, `(?m)^(ok|error|timeout|queued|acquired)`, string(got), "plaintext got a protocol reply")
	})

	t.Run("still serving", func(t *testing.T) {
		tc, err := dialTLS(&tls.Config{RootCAs: pool})
		require.NoError(t, err)
		c := newClient(t, tc)
		requireGrant(t, c.do("l", "k2", "10"), 33)
		require.True(t, srv.running())
	})
}

// A TLS port runs no event loops: the start-up line says so (it said
// --event-loops' number), and the connection cap keeps no descriptors
// for them.
func TestTLSStartupLine(t *testing.T) {
	t.Parallel()
	certFile, keyFile, _ := selfSignedCert(t)
	const nofile = 512
	srv := startServer(t, procConfig{nofile: nofile, args: []string{"--log-format", "json",
		"--tls-cert", certFile, "--tls-key", keyFile, "--event-loops", "2"}})
	info := srv.listeningLine(t)
	assert.Zero(t, info.EventLoops)
	assert.Equal(t, int64(nofile-fdReserve(false)), info.ConnectionCap)
}
