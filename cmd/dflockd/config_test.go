package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// envOf is a getenv over a fixed map (the test never reads the real
// environment).
func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// parse runs parseConfig and asserts it wrote nothing to its usage writer
// (only -h/--help may).
func parse(t *testing.T, args []string, env map[string]string) (*options, error) {
	t.Helper()
	var usage bytes.Buffer
	o, err := parseConfig(args, envOf(env), &usage)
	assert.Empty(t, usage.String(), "parseConfig wrote usage for %q", args)
	return o, err
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
	return p
}

func TestParseConfigDefaults(t *testing.T) {
	o, err := parse(t, nil, nil)
	require.NoError(t, err)
	assert.WithinDuration(t, time.Now().Add(pipeWait), o.filesBy, time.Second)
	o.filesBy = time.Time{}
	assert.Equal(t, &options{
		Host:               "127.0.0.1",
		Port:               6388,
		DefaultLeaseTTL:    33,
		LeaseSweepInterval: 1,
		GCInterval:         5,
		GCMaxIdle:          60,
		MaxLocks:           1024,
		MaxConnections:     0,
		MaxWaiters:         0,
		MaxSemaphoreLimit:  1024,
		ReadTimeout:        23,
		WriteTimeout:       5,
		ShutdownTimeout:    30,
		AutoRelease:        true,
		EventLoops:         0,
		Tick:               time.Millisecond,
		LogFormat:          "console",
	}, o)
}

// TestParseConfigSources checks every flag of PROTOCOL.md's configuration
// table (and the new ones) for its default, its environment variable, and
// that an explicit flag wins over the environment.
func TestParseConfigSources(t *testing.T) {
	tokenFile1 := writeFile(t, "token1", "from-env-file\n")
	tokenFile2 := writeFile(t, "token2", "from-flag-file\n")

	type row struct {
		flag, env string
		get       func(*options) any
		def       any
		envText   string // value put in env
		envWant   any
		flagArgs  []string // given with envText also set: must win
		flagWant  any
		// extraEnv satisfies validation for the env and flag cases
		// (a cert needs its key).
		extraEnv map[string]string
	}
	rows := []row{
		{flag: "host", env: "DFLOCKD_HOST", get: func(o *options) any { return o.Host },
			def: "127.0.0.1", envText: "0.0.0.0", envWant: "0.0.0.0", flagArgs: []string{"--host", "::1"}, flagWant: "::1"},
		{flag: "port", env: "DFLOCKD_PORT", get: func(o *options) any { return o.Port },
			def: int64(6388), envText: "7001", envWant: int64(7001), flagArgs: []string{"--port", "7002"}, flagWant: int64(7002)},
		{flag: "default-lease-ttl", env: "DFLOCKD_DEFAULT_LEASE_TTL_S", get: func(o *options) any { return o.DefaultLeaseTTL },
			def: int64(33), envText: "40", envWant: int64(40), flagArgs: []string{"--default-lease-ttl=41"}, flagWant: int64(41)},
		{flag: "lease-sweep-interval", env: "DFLOCKD_LEASE_SWEEP_INTERVAL_S", get: func(o *options) any { return o.LeaseSweepInterval },
			def: int64(1), envText: "2", envWant: int64(2), flagArgs: []string{"--lease-sweep-interval", "3"}, flagWant: int64(3)},
		{flag: "gc-interval", env: "DFLOCKD_GC_LOOP_SLEEP", get: func(o *options) any { return o.GCInterval },
			def: int64(5), envText: "6", envWant: int64(6), flagArgs: []string{"--gc-interval", "7"}, flagWant: int64(7)},
		{flag: "gc-max-idle", env: "DFLOCKD_GC_MAX_UNUSED_TIME", get: func(o *options) any { return o.GCMaxIdle },
			def: int64(60), envText: "0", envWant: int64(0), flagArgs: []string{"--gc-max-idle", "61"}, flagWant: int64(61)},
		{flag: "max-locks", env: "DFLOCKD_MAX_LOCKS", get: func(o *options) any { return o.MaxLocks },
			def: int64(1024), envText: "10", envWant: int64(10), flagArgs: []string{"--max-locks", "0"}, flagWant: int64(0)},
		{flag: "max-connections", env: "DFLOCKD_MAX_CONNECTIONS", get: func(o *options) any { return o.MaxConnections },
			def: int64(0), envText: "100", envWant: int64(100), flagArgs: []string{"--max-connections", "0"}, flagWant: int64(0)},
		{flag: "max-waiters", env: "DFLOCKD_MAX_WAITERS", get: func(o *options) any { return o.MaxWaiters },
			def: int64(0), envText: "3", envWant: int64(3), flagArgs: []string{"--max-waiters", "4"}, flagWant: int64(4)},
		{flag: "max-semaphore-limit", env: "DFLOCKD_MAX_SEMAPHORE_LIMIT", get: func(o *options) any { return o.MaxSemaphoreLimit },
			def: int64(1024), envText: "0", envWant: int64(0), flagArgs: []string{"--max-semaphore-limit", "50000"}, flagWant: int64(50000)},
		{flag: "read-timeout", env: "DFLOCKD_READ_TIMEOUT_S", get: func(o *options) any { return o.ReadTimeout },
			def: int64(23), envText: "0", envWant: int64(0), flagArgs: []string{"--read-timeout", "24"}, flagWant: int64(24)},
		{flag: "write-timeout", env: "DFLOCKD_WRITE_TIMEOUT_S", get: func(o *options) any { return o.WriteTimeout },
			def: int64(5), envText: "6", envWant: int64(6), flagArgs: []string{"--write-timeout", "7"}, flagWant: int64(7)},
		{flag: "shutdown-timeout", env: "DFLOCKD_SHUTDOWN_TIMEOUT_S", get: func(o *options) any { return o.ShutdownTimeout },
			def: int64(30), envText: "0", envWant: int64(0), flagArgs: []string{"--shutdown-timeout", "1"}, flagWant: int64(1)},
		{flag: "tls-cert", env: "DFLOCKD_TLS_CERT", get: func(o *options) any { return o.TLSCert },
			def: "", envText: "env.crt", envWant: "env.crt", flagArgs: []string{"--tls-cert", "flag.crt"}, flagWant: "flag.crt",
			extraEnv: map[string]string{"DFLOCKD_TLS_KEY": "some.key"}},
		{flag: "tls-key", env: "DFLOCKD_TLS_KEY", get: func(o *options) any { return o.TLSKey },
			def: "", envText: "env.key", envWant: "env.key", flagArgs: []string{"--tls-key", "flag.key"}, flagWant: "flag.key",
			extraEnv: map[string]string{"DFLOCKD_TLS_CERT": "some.crt"}},
		{flag: "auth-token", env: "DFLOCKD_AUTH_TOKEN", get: func(o *options) any { return o.AuthToken },
			def: "", envText: "env-secret", envWant: "env-secret", flagArgs: []string{"--auth-token", "flag-secret"}, flagWant: "flag-secret"},
		{flag: "auth-token-file", env: "DFLOCKD_AUTH_TOKEN_FILE", get: func(o *options) any { return o.AuthTokenFile + " " + o.AuthToken },
			def: " ", envText: tokenFile1, envWant: tokenFile1 + " from-env-file",
			flagArgs: []string{"--auth-token-file", tokenFile2}, flagWant: tokenFile2 + " from-flag-file"},
		{flag: "auto-release-on-disconnect", env: "DFLOCKD_AUTO_RELEASE_ON_DISCONNECT", get: func(o *options) any { return o.AutoRelease },
			def: true, envText: "0", envWant: false, flagArgs: []string{"--auto-release-on-disconnect"}, flagWant: true},
		{flag: "debug", env: "DFLOCKD_DEBUG", get: func(o *options) any { return o.Debug },
			def: false, envText: "1", envWant: true, flagArgs: []string{"--debug=false"}, flagWant: false},
		{flag: "event-loops", env: "DFLOCKD_EVENT_LOOPS", get: func(o *options) any { return o.EventLoops },
			def: int64(0), envText: "3", envWant: int64(3), flagArgs: []string{"--event-loops", "4"}, flagWant: int64(4)},
		{flag: "tick", env: "DFLOCKD_TICK", get: func(o *options) any { return o.Tick },
			def: time.Millisecond, envText: "5ms", envWant: 5 * time.Millisecond, flagArgs: []string{"--tick", "1s"}, flagWant: time.Second},
		{flag: "fence-state-file", env: "DFLOCKD_FENCE_STATE_FILE", get: func(o *options) any { return o.FenceStateFile },
			def: "", envText: "/var/lib/dflockd/fence", envWant: "/var/lib/dflockd/fence", flagArgs: []string{"--fence-state-file=/tmp/f"}, flagWant: "/tmp/f"},
		{flag: "log-format", env: "DFLOCKD_LOG_FORMAT", get: func(o *options) any { return o.LogFormat },
			def: "console", envText: "json", envWant: "json", flagArgs: []string{"--log-format", "console"}, flagWant: "console"},
	}
	for _, r := range rows {
		t.Run(r.flag, func(t *testing.T) {
			env := func(withVar bool) map[string]string {
				m := map[string]string{}
				for k, v := range r.extraEnv {
					m[k] = v
				}
				if withVar {
					m[r.env] = r.envText
				}
				return m
			}

			o, err := parse(t, nil, nil)
			require.NoError(t, err)
			assert.Equal(t, r.def, r.get(o), "default")

			// An empty variable counts as unset.
			o, err = parse(t, nil, map[string]string{r.env: ""})
			require.NoError(t, err)
			assert.Equal(t, r.def, r.get(o), "empty %s", r.env)

			o, err = parse(t, nil, env(true))
			require.NoError(t, err)
			assert.Equal(t, r.envWant, r.get(o), "from %s", r.env)

			o, err = parse(t, r.flagArgs, env(true))
			require.NoError(t, err)
			assert.Equal(t, r.flagWant, r.get(o), "%q over %s", r.flagArgs, r.env)

			o, err = parse(t, r.flagArgs, env(false))
			require.NoError(t, err)
			assert.Equal(t, r.flagWant, r.get(o), "%q alone", r.flagArgs)
		})
	}
}

func TestParseConfigFlagForms(t *testing.T) {
	for _, args := range [][]string{
		{"--port", "7000"}, {"--port=7000"}, {"-port", "7000"}, {"-port=7000"},
		{"--port", "+7000"}, {"--port", " 7000 "},
	} {
		o, err := parse(t, args, nil)
		require.NoError(t, err, "%q", args)
		assert.Equal(t, int64(7000), o.Port, "%q", args)
	}
	// The last of a repeated flag wins.
	o, err := parse(t, []string{"--port", "1", "--port", "2"}, nil)
	require.NoError(t, err)
	assert.Equal(t, int64(2), o.Port)
}

// TestParseConfigBadEnvIgnoredWhenFlagGiven: the flag wins, so the variable
// is never read (a stale bad variable cannot block an explicit flag).
func TestParseConfigBadEnvIgnoredWhenFlagGiven(t *testing.T) {
	o, err := parse(t, []string{"--port", "7000", "--tick", "20ms", "--auto-release-on-disconnect=false", "--debug"},
		map[string]string{
			"DFLOCKD_PORT":                       "not-a-port",
			"DFLOCKD_TICK":                       "forever",
			"DFLOCKD_AUTO_RELEASE_ON_DISCONNECT": "maybe",
			"DFLOCKD_DEBUG":                      "loud",
		})
	require.NoError(t, err)
	assert.Equal(t, int64(7000), o.Port)
	assert.Equal(t, 20*time.Millisecond, o.Tick)
	assert.False(t, o.AutoRelease)
	assert.True(t, o.Debug)
}

func TestParseConfigAutoRelease(t *testing.T) {
	const env = "DFLOCKD_AUTO_RELEASE_ON_DISCONNECT"
	tests := []struct {
		name string
		args []string
		env  string
		want bool
	}{
		{name: "default", want: true},
		{name: "flag bare", args: []string{"--auto-release-on-disconnect"}, want: true},
		{name: "flag =true", args: []string{"--auto-release-on-disconnect=true"}, want: true},
		{name: "flag =false", args: []string{"--auto-release-on-disconnect=false"}, want: false},
		{name: "flag =0", args: []string{"--auto-release-on-disconnect=0"}, want: false},
		{name: "no- flag", args: []string{"--no-auto-release-on-disconnect"}, want: false},
		{name: "no- flag =false", args: []string{"--no-auto-release-on-disconnect=false"}, want: true},
		{name: "both off", args: []string{"--auto-release-on-disconnect=false", "--no-auto-release-on-disconnect"}, want: false},
		{name: "env 1", env: "1", want: true},
		{name: "env yes", env: "yes", want: true},
		{name: "env YES", env: "YES", want: true},
		{name: "env true", env: "true", want: true},
		{name: "env True", env: "True", want: true},
		{name: "env 0", env: "0", want: false},
		{name: "env no", env: "no", want: false},
		{name: "env No", env: "No", want: false},
		{name: "env false", env: "false", want: false},
		{name: "env FALSE", env: "FALSE", want: false},
		{name: "env padded", env: " false ", want: false},
		{name: "flag over env off", args: []string{"--auto-release-on-disconnect"}, env: "0", want: true},
		{name: "no- flag over env on", args: []string{"--no-auto-release-on-disconnect"}, env: "yes", want: false},
		{name: "no- flag =false keeps env off", args: []string{"--no-auto-release-on-disconnect=false"}, env: "no", want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := parse(t, tt.args, map[string]string{env: tt.env})
			require.NoError(t, err)
			assert.Equal(t, tt.want, o.AutoRelease)
		})
	}
}

func TestParseConfigAuthTokenFile(t *testing.T) {
	tests := []struct {
		name, content, want string
	}{
		{"newline", "s3cret\n", "s3cret"},
		{"no newline", "s3cret", "s3cret"},
		{"trailing whitespace", "s3cret \t \n", "s3cret"},
		{"crlf", "s3cret\r\n", "s3cret"},
		{"only the first line", "s3cret\nsecond line\n", "s3cret"},
		// The server trims what clients present, so a secret with
		// surrounding blanks could never match: they go too.
		{"leading whitespace", "  s3cret\n", "s3cret"},
		{"inner space kept", "two words\n", "two words"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeFile(t, "token", tt.content)
			o, err := parse(t, []string{"--auth-token-file", path}, nil)
			require.NoError(t, err)
			assert.Equal(t, tt.want, o.AuthToken)
			assert.Equal(t, path, o.AuthTokenFile)
		})
	}
	t.Run("auth token trimmed", func(t *testing.T) {
		o, err := parse(t, []string{"--auth-token", " s3cret \t"}, nil)
		require.NoError(t, err)
		assert.Equal(t, "s3cret", o.AuthToken)
	})
}

// TestParseConfigAuthTokenPrecedence: --auth-token and --auth-token-file
// are one setting. A flag on the command line wins over the other one's
// environment variable (which is then not read at all); both as flags, or
// both only in the environment, is an error.
func TestParseConfigAuthTokenPrecedence(t *testing.T) {
	envFile := writeFile(t, "env-token", "env-file-secret\n")
	flagFile := writeFile(t, "flag-token", "flag-file-secret\n")
	const both = "invalid --auth-token-file: give either --auth-token or --auth-token-file, not both"
	tests := []struct {
		name              string
		args              []string
		env               map[string]string
		wantToken         string
		wantFile, wantErr string
	}{
		{name: "token flag over token file env", args: []string{"--auth-token", "flag-secret"},
			env: map[string]string{"DFLOCKD_AUTH_TOKEN_FILE": envFile}, wantToken: "flag-secret"},
		{name: "token file flag over token env", args: []string{"--auth-token-file", flagFile},
			env: map[string]string{"DFLOCKD_AUTH_TOKEN": "env-secret"}, wantToken: "flag-file-secret", wantFile: flagFile},
		// The variable that lost is ignored, whatever it holds.
		{name: "token flag over missing token file env", args: []string{"--auth-token", "flag-secret"},
			env: map[string]string{"DFLOCKD_AUTH_TOKEN_FILE": "/nonexistent/token"}, wantToken: "flag-secret"},
		{name: "token file flag over blank token env", args: []string{"--auth-token-file", flagFile},
			env: map[string]string{"DFLOCKD_AUTH_TOKEN": " \t"}, wantToken: "flag-file-secret", wantFile: flagFile},
		// Each flag also wins over its own variable, as before.
		{name: "both flags over both env", args: []string{"--auth-token", "flag-secret", "--auth-token-file", flagFile},
			env: map[string]string{"DFLOCKD_AUTH_TOKEN": "env-secret", "DFLOCKD_AUTH_TOKEN_FILE": envFile}, wantErr: both},
		{name: "both flags", args: []string{"--auth-token", "flag-secret", "--auth-token-file", flagFile}, wantErr: both},
		{name: "both env", env: map[string]string{"DFLOCKD_AUTH_TOKEN": "env-secret", "DFLOCKD_AUTH_TOKEN_FILE": envFile}, wantErr: both},
		{name: "token flag and its env with token file env",
			args: []string{"--auth-token", "flag-secret"},
			env:  map[string]string{"DFLOCKD_AUTH_TOKEN": "env-secret", "DFLOCKD_AUTH_TOKEN_FILE": envFile}, wantToken: "flag-secret"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := parse(t, tt.args, tt.env)
			if tt.wantErr != "" {
				require.EqualError(t, err, tt.wantErr)
				assert.Nil(t, o)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.wantToken, o.AuthToken)
			assert.Equal(t, tt.wantFile, o.AuthTokenFile)
		})
	}
}

// TestParseConfigHost: an address that can never be listened on is
// rejected before binding; names are left to the resolver.
func TestParseConfigHost(t *testing.T) {
	for _, h := range []string{"localhost", "", "0.0.0.0", "127.0.0.1", "::", "::1", "fe80::1%lo", "::ffff:127.0.0.1",
		"db-1.example.com", "my_host", "1a.example", "nosuchhost.invalid"} {
		o, err := parse(t, []string{"--host", h}, nil)
		require.NoError(t, err, "%q", h)
		assert.Equal(t, h, o.Host)
	}
	o, err := parse(t, []string{"--host", " 127.0.0.1\t"}, nil)
	require.NoError(t, err)
	assert.Equal(t, "127.0.0.1", o.Host, "trimmed like the numbers")

	for h, want := range map[string]string{
		"1::2::3":   `invalid --host: "1::2::3" is neither an IP address nor a host name`,
		"host:6388": `invalid --host: "host:6388" is neither an IP address nor a host name`,
		"[::1]":     `invalid --host: "[::1]": give an IPv6 address without brackets`,
	} {
		_, err := parse(t, []string{"--host", h}, nil)
		require.EqualError(t, err, want)
	}
	_, err = parse(t, nil, map[string]string{"DFLOCKD_HOST": "1::2::3"})
	require.EqualError(t, err, `invalid DFLOCKD_HOST (--host): "1::2::3" is neither an IP address nor a host name`)
	// Numeric forms the system resolver may accept are left to the
	// listen (which names the flag if it fails).
	for _, h := range []string{"127.1", "0", "999.1.1.1"} {
		o, err := parse(t, []string{"--host", h}, nil)
		require.NoError(t, err, "%q", h)
		assert.Equal(t, h, o.Host)
	}
	// A blank DFLOCKD_HOST counts as unset, as an empty one does: it used
	// to be trimmed to "", every interface (review 13). --host '' is the
	// explicit way to ask for that.
	for _, h := range []string{"", " ", "\t", " \r\n"} {
		o, err := parse(t, nil, map[string]string{"DFLOCKD_HOST": h})
		require.NoError(t, err, "%q", h)
		assert.Equal(t, "127.0.0.1", o.Host, "DFLOCKD_HOST=%q", h)
	}
	o, err = parse(t, []string{"--host", ""}, map[string]string{"DFLOCKD_HOST": "127.0.0.2"})
	require.NoError(t, err)
	assert.Equal(t, "", o.Host, "--host '' is every interface")
	// Blanks as a flag are a mistake (--host="$UNSET_VAR" with a space):
	// refused, not every interface (review 14).
	for _, h := range []string{" ", "\t", "\u00a0", " \r\n"} {
		_, err := parse(t, []string{"--host", h}, nil)
		require.EqualError(t, err, fmt.Sprintf("invalid --host: %q is blank (--host '' listens on every interface)", h))
	}
	// The flag wins: a bad variable is not read.
	o, err = parse(t, []string{"--host", "localhost"}, map[string]string{"DFLOCKD_HOST": "999.1.1.1"})
	require.NoError(t, err)
	assert.Equal(t, "localhost", o.Host)
}

// TestParseConfigErrors: every bad value is one error line that names the
// flag (and the variable when it came from the environment).
func TestParseConfigErrors(t *testing.T) {
	dir := t.TempDir()
	token := writeFile(t, "token", "s3cret\n")
	emptyToken := writeFile(t, "empty", " \n\nlater\n")
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want []string // substrings of the error
	}{
		{name: "unknown flag", args: []string{"--bogus"}, want: []string{"-bogus"}},
		{name: "missing argument", args: []string{"--port"}, want: []string{"-port"}},
		{name: "positional argument", args: []string{"serve"}, want: []string{`"serve"`}},
		{name: "port not a number", args: []string{"--port", "abc"}, want: []string{"--port", `"abc"`}},
		{name: "port empty", args: []string{"--port="}, want: []string{"--port"}},
		{name: "port fraction", args: []string{"--port", "80.5"}, want: []string{"--port"}},
		{name: "port hex", args: []string{"--port", "0x10"}, want: []string{"--port"}},
		{name: "port too big", args: []string{"--port", "65536"}, want: []string{"--port", "65536"}},
		{name: "port negative", args: []string{"--port", "-1"}, want: []string{"--port"}},
		{name: "port overflow", args: []string{"--port", "99999999999999999999"}, want: []string{"--port"}},
		{name: "port env not a number", env: map[string]string{"DFLOCKD_PORT": "http"}, want: []string{"DFLOCKD_PORT", "--port", `"http"`}},
		{name: "port env too big", env: map[string]string{"DFLOCKD_PORT": "70000"}, want: []string{"DFLOCKD_PORT", "--port"}},
		{name: "negative read timeout", args: []string{"--read-timeout", "-1"}, want: []string{"--read-timeout"}},
		{name: "negative shutdown timeout", args: []string{"--shutdown-timeout", "-5"}, want: []string{"--shutdown-timeout"}},
		{name: "negative shutdown timeout env", env: map[string]string{"DFLOCKD_SHUTDOWN_TIMEOUT_S": "-5"}, want: []string{"DFLOCKD_SHUTDOWN_TIMEOUT_S", "--shutdown-timeout"}},
		{name: "zero write timeout", args: []string{"--write-timeout", "0"}, want: []string{"--write-timeout"}},
		{name: "zero lease", args: []string{"--default-lease-ttl", "0"}, want: []string{"--default-lease-ttl"}},
		{name: "zero sweep interval", args: []string{"--lease-sweep-interval", "0"}, want: []string{"--lease-sweep-interval"}},
		{name: "zero gc interval", args: []string{"--gc-interval", "0"}, want: []string{"--gc-interval"}},
		{name: "negative gc idle", args: []string{"--gc-max-idle", "-1"}, want: []string{"--gc-max-idle"}},
		{name: "max locks fraction", args: []string{"--max-locks", "1.5"}, want: []string{"--max-locks"}},
		{name: "negative max connections", args: []string{"--max-connections", "-1"}, want: []string{"--max-connections"}},
		{name: "negative max waiters", args: []string{"--max-waiters", "-1"}, want: []string{"--max-waiters"}},
		{name: "negative max semaphore limit", args: []string{"--max-semaphore-limit", "-1"}, want: []string{"--max-semaphore-limit"}},
		{name: "event loops too many", args: []string{"--event-loops", "100000"}, want: []string{"--event-loops"}},
		{name: "event loops env", env: map[string]string{"DFLOCKD_EVENT_LOOPS": "many"}, want: []string{"DFLOCKD_EVENT_LOOPS", "--event-loops"}},
		{name: "cert without key", args: []string{"--tls-cert", "c.pem"}, want: []string{"--tls-cert", "--tls-key"}},
		{name: "key without cert", args: []string{"--tls-key", "k.pem"}, want: []string{"--tls-key", "--tls-cert"}},
		{name: "cert env without key", env: map[string]string{"DFLOCKD_TLS_CERT": "c.pem"}, want: []string{"--tls-cert"}},
		{name: "token file missing", args: []string{"--auth-token-file", filepath.Join(dir, "nope")}, want: []string{"--auth-token-file"}},
		{name: "token file is a directory", args: []string{"--auth-token-file", dir}, want: []string{"--auth-token-file"}},
		{name: "token file empty first line", args: []string{"--auth-token-file", emptyToken}, want: []string{"--auth-token-file"}},
		{name: "token file env missing", env: map[string]string{"DFLOCKD_AUTH_TOKEN_FILE": filepath.Join(dir, "nope")}, want: []string{"--auth-token-file"}},
		{name: "token and token file", args: []string{"--auth-token", "x", "--auth-token-file", token}, want: []string{"--auth-token-file", "--auth-token"}},
		{name: "token env and token file env", env: map[string]string{"DFLOCKD_AUTH_TOKEN": "x", "DFLOCKD_AUTH_TOKEN_FILE": token}, want: []string{"--auth-token-file", "--auth-token"}},
		{name: "host not an address", args: []string{"--host", "1::2::3"}, want: []string{"--host", `"1::2::3"`}},
		{name: "auth token file flag empty", args: []string{"--auth-token-file="}, env: map[string]string{"DFLOCKD_AUTH_TOKEN": "env-secret"}, want: []string{"--auth-token-file", "no file given"}},
		{name: "host bad ipv6", args: []string{"--host", "1::2::3"}, want: []string{"--host", `"1::2::3"`}},
		{name: "host in brackets", args: []string{"--host", "[::1]"}, want: []string{"--host", "brackets"}},
		{name: "host env not an address", env: map[string]string{"DFLOCKD_HOST": "host:6388"}, want: []string{"DFLOCKD_HOST", "--host", `"host:6388"`}},
		{name: "http addr bad host", args: []string{"--http-addr", "[1::2::3]:9090"}, want: []string{"--http-addr", `"1::2::3"`}},
		{name: "empty auth token", args: []string{"--auth-token="}, want: []string{"--auth-token"}},
		{name: "blank auth token", args: []string{"--auth-token", "  "}, want: []string{"--auth-token"}},
		{name: "blank auth token env", env: map[string]string{"DFLOCKD_AUTH_TOKEN": " \t"}, want: []string{"DFLOCKD_AUTH_TOKEN", "--auth-token"}},
		{name: "log format", args: []string{"--log-format", "xml"}, want: []string{"--log-format", `"xml"`}},
		{name: "log format case", args: []string{"--log-format", "JSON"}, want: []string{"--log-format"}},
		{name: "log format env", env: map[string]string{"DFLOCKD_LOG_FORMAT": "text"}, want: []string{"--log-format"}},
		{name: "tick not a duration", args: []string{"--tick", "fast"}, want: []string{"--tick"}},
		{name: "tick without unit", args: []string{"--tick", "10"}, want: []string{"--tick"}},
		{name: "tick too small", args: []string{"--tick", "500us"}, want: []string{"--tick"}},
		{name: "tick too large", args: []string{"--tick", "2s"}, want: []string{"--tick"}},
		{name: "tick zero", args: []string{"--tick", "0s"}, want: []string{"--tick"}},
		{name: "tick env", env: map[string]string{"DFLOCKD_TICK": "1h"}, want: []string{"DFLOCKD_TICK", "--tick"}},
		{name: "auto release flag value", args: []string{"--auto-release-on-disconnect=maybe"}, want: []string{"--auto-release-on-disconnect", `"maybe"`}},
		{name: "auto release env value", env: map[string]string{"DFLOCKD_AUTO_RELEASE_ON_DISCONNECT": "maybe"}, want: []string{"DFLOCKD_AUTO_RELEASE_ON_DISCONNECT", "--auto-release-on-disconnect", `"maybe"`}},
		{name: "auto release contradiction", args: []string{"--auto-release-on-disconnect=true", "--no-auto-release-on-disconnect"}, want: []string{"--no-auto-release-on-disconnect"}},
		{name: "no auto release value", args: []string{"--no-auto-release-on-disconnect=perhaps"}, want: []string{"--no-auto-release-on-disconnect"}},
		{name: "debug value", args: []string{"--debug=loud"}, want: []string{"--debug"}},
		{name: "debug env value", env: map[string]string{"DFLOCKD_DEBUG": "loud"}, want: []string{"DFLOCKD_DEBUG", "--debug"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := parse(t, tt.args, tt.env)
			require.Error(t, err)
			assert.Nil(t, o)
			assert.False(t, errors.Is(err, flag.ErrHelp))
			msg := err.Error()
			assert.NotContains(t, msg, "\n", "one line")
			assert.NotEmpty(t, msg)
			for _, w := range tt.want {
				assert.Contains(t, msg, w)
			}
		})
	}
}

func TestParseConfigHelp(t *testing.T) {
	for _, arg := range []string{"--help", "-h", "-help"} {
		t.Run(arg, func(t *testing.T) {
			var usage bytes.Buffer
			o, err := parseConfig([]string{arg}, envOf(nil), &usage)
			require.ErrorIs(t, err, flag.ErrHelp)
			assert.Nil(t, o)
			text := usage.String()
			for _, f := range []string{
				"host", "port", "default-lease-ttl", "lease-sweep-interval", "gc-interval", "gc-max-idle",
				"max-locks", "max-connections", "max-waiters", "max-semaphore-limit", "read-timeout", "write-timeout",
				"shutdown-timeout", "tls-cert", "tls-key", "auth-token", "auth-token-file",
				"auto-release-on-disconnect", "no-auto-release-on-disconnect", "debug",
				"event-loops", "tick", "fence-state-file", "log-format", "version",
			} {
				re := regexp.MustCompile(`(?m)^  -` + regexp.QuoteMeta(f) + `( [a-z]+)?$`)
				assert.True(t, re.MatchString(text), "usage lists --%s", f)
			}
			for _, env := range []string{
				"DFLOCKD_HOST", "DFLOCKD_PORT", "DFLOCKD_DEFAULT_LEASE_TTL_S", "DFLOCKD_LEASE_SWEEP_INTERVAL_S",
				"DFLOCKD_GC_LOOP_SLEEP", "DFLOCKD_GC_MAX_UNUSED_TIME", "DFLOCKD_MAX_LOCKS",
				"DFLOCKD_MAX_CONNECTIONS", "DFLOCKD_MAX_WAITERS", "DFLOCKD_MAX_SEMAPHORE_LIMIT", "DFLOCKD_READ_TIMEOUT_S",
				"DFLOCKD_WRITE_TIMEOUT_S", "DFLOCKD_SHUTDOWN_TIMEOUT_S", "DFLOCKD_TLS_CERT", "DFLOCKD_TLS_KEY",
				"DFLOCKD_AUTH_TOKEN", "DFLOCKD_AUTH_TOKEN_FILE", "DFLOCKD_AUTO_RELEASE_ON_DISCONNECT",
				"DFLOCKD_DEBUG", "DFLOCKD_EVENT_LOOPS", "DFLOCKD_TICK", "DFLOCKD_FENCE_STATE_FILE",
				"DFLOCKD_LOG_FORMAT",
			} {
				assert.Contains(t, text, "["+env+"]")
			}
			assert.Contains(t, text, "(default 6388)")
			assert.NotContains(t, text, "(default 0)")
			assert.NotContains(t, text, "(default false)")
		})
	}
}

func TestParseConfigVersion(t *testing.T) {
	o, err := parse(t, []string{"--version"}, nil)
	require.NoError(t, err)
	assert.True(t, o.Version)

	// --version answers whatever the environment holds.
	o, err = parse(t, []string{"--version"}, map[string]string{
		"DFLOCKD_PORT":            "http",
		"DFLOCKD_AUTH_TOKEN_FILE": "/nonexistent/token",
	})
	require.NoError(t, err)
	assert.True(t, o.Version)

	o, err = parse(t, nil, nil)
	require.NoError(t, err)
	assert.False(t, o.Version)
}

func TestParseConfigErrorMessagesAreDistinct(t *testing.T) {
	// The message says what is wrong, not just which flag.
	_, err1 := parse(t, []string{"--port", "abc"}, nil)
	_, err2 := parse(t, []string{"--port", "70000"}, nil)
	require.Error(t, err1)
	require.Error(t, err2)
	assert.True(t, strings.Contains(err1.Error(), "whole number"), err1.Error())
	assert.True(t, strings.Contains(err2.Error(), "range"), err2.Error())
}
