package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// startHTTPServer runs the binary with the side port on a free port of
// 127.0.0.1 and returns it with the side port's base URL.
func startHTTPServer(t *testing.T, args ...string) (*proc, string) {
	t.Helper()
	p := startServer(t, procConfig{args: append([]string{"--log-format", "json", "--http-addr", "127.0.0.1:0"}, args...)})
	for _, line := range strings.Split(p.stderr.String(), "\n") {
		if !strings.Contains(line, "dflockd listening") {
			continue
		}
		var l struct {
			HTTPAddr string `json:"http_addr"`
		}
		require.NoError(t, json.Unmarshal([]byte(line), &l))
		require.NotEmpty(t, l.HTTPAddr, "no http_addr in %s", line)
		return p, "http://" + l.HTTPAddr
	}
	t.Fatalf("no start-up line in:\n%s", p.stderr.String())
	return nil, ""
}

// get fetches url with an optional bearer token.
func get(t testing.TB, url, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	c := http.Client{Timeout: ioTimeout}
	resp, err := c.Do(req)
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

// scrapeText fetches /metrics and returns each sample line's value by its
// series text, e.g. `dflockd_grants_total{namespace="lock"}`.
func scrapeText(t testing.TB, base, token string) map[string]float64 {
	t.Helper()
	code, body := get(t, base+"/metrics", token)
	require.Equal(t, http.StatusOK, code, body)
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		require.Positive(t, i, line)
		v, err := strconv.ParseFloat(line[i+1:], 64)
		require.NoError(t, err, line)
		out[line[:i]] = v
	}
	return out
}

// waitSeries scrapes until series has value want.
func waitSeries(t testing.TB, base, token, series string, want float64) map[string]float64 {
	t.Helper()
	var m map[string]float64
	eventually(t, 10*time.Second, series+" == "+strconv.FormatFloat(want, 'g', -1, 64), func() bool {
		m = scrapeText(t, base, token)
		return m[series] == want
	})
	return m
}

// TestHTTPMetrics drives a grant, a timeout, a lease expiry, a disconnect
// release and a rejection through the real binary, scraping /metrics as
// Prometheus would.
func TestHTTPMetrics(t *testing.T) {
	t.Parallel()
	p, base := startHTTPServer(t, "--max-waiters", "1")
	before := scrapeText(t, base, "")
	for _, s := range []string{
		`dflockd_grants_total{namespace="lock"}`, `dflockd_connections{transport="plain"}`,
		`dflockd_rejections_total{reason="max_waiters"}`, `dflockd_timers_pending{wheel="lockcore"}`,
		"go_goroutines", "process_open_fds", `dflockd_max_locks`,
	} {
		assert.Contains(t, before, s)
	}
	assert.Equal(t, 0.0, before[`dflockd_grants_total{namespace="lock"}`])

	holder := dialServer(t, p.addr)
	requireGrant(t, holder.do("l", "k", "0"), 33) // a grant
	m := scrapeText(t, base, "")
	assert.Equal(t, 1.0, m[`dflockd_grants_total{namespace="lock"}`])
	assert.Equal(t, 1.0, m[`dflockd_held{namespace="lock"}`])
	assert.Equal(t, 1.0, m[`dflockd_requests_total{command="l",result="ok"}`])
	assert.Equal(t, 1.0, m[`dflockd_connections{transport="plain"}`])
	// The latency is recorded after the reply's write returns, which may
	// be after the client has read it.
	waitSeries(t, base, "", `dflockd_request_duration_seconds_count{command="l"}`, 1)

	// A timeout, 10 s from now: long enough that the waiter is still
	// queued for the rejection below on a loaded machine.
	const waiterTimeout = 10 * time.Second
	waiter := dialServer(t, p.addr)
	waiter.send("l", "k", strconv.Itoa(int(waiterTimeout/time.Second)))
	waitSeries(t, base, "", `dflockd_waiters{namespace="lock"}`, 1)
	rejected := dialServer(t, p.addr)
	assert.Equal(t, "error_max_waiters", rejected.do("l", "k", "1")) // a rejection
	m = scrapeText(t, base, "")
	assert.Equal(t, 1.0, m[`dflockd_rejections_total{reason="max_waiters"}`])

	requireGrant(t, holder.do("l", "short", "0 1"), 1) // a lease expiry, 1 s from now
	sem := dialServer(t, p.addr)
	requireGrant(t, sem.do("sl", "s", "0 3"), 33)
	waitSeries(t, base, "", `dflockd_held{namespace="semaphore"}`, 1)
	sem.close() // a disconnect release

	line, err := waiter.readLine(waiterTimeout + ioTimeout)
	require.NoError(t, err)
	require.Equal(t, "timeout", line)
	waitSeries(t, base, "", `dflockd_lease_expiries_total{namespace="lock"}`, 1)
	waitSeries(t, base, "", `dflockd_disconnect_releases_total{namespace="semaphore"}`, 1)
	// Closing a session releases its locks before it lowers the
	// connection count: wait for the count itself.
	m = waitSeries(t, base, "", `dflockd_connections{transport="plain"}`, 3) // holder, waiter, rejected
	assert.Equal(t, 1.0, m[`dflockd_waiter_timeouts_total{namespace="lock"}`])
	assert.Equal(t, 1.0, m[`dflockd_requests_total{command="l",result="timeout"}`])
	assert.Equal(t, 1.0, m[`dflockd_parked_wait_seconds_count{command="l"}`])
	assert.Equal(t, 0.0, m[`dflockd_held{namespace="semaphore"}`])
	assert.Equal(t, 1.0, m[`dflockd_held{namespace="lock"}`])
	assert.Equal(t, 0.0, m["dflockd_parked_requests"])
	assert.Greater(t, m[`dflockd_event_loop_busy_seconds_total{loop="0"}`], 0.0)
	assert.NotContains(t, m, `dflockd_event_loop_busy_ratio{loop="0"}`)

	code, body := get(t, base+"/v1/stats", "")
	require.Equal(t, http.StatusOK, code)
	var st struct {
		Connections int `json:"connections"`
		Locks       []struct {
			Key string `json:"key"`
		} `json:"locks"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &st), body)
	assert.Equal(t, 3, st.Connections)
	require.Len(t, st.Locks, 1)
	assert.Equal(t, "k", st.Locks[0].Key)
	// The same JSON as the stats command (timings aside).
	var viaHTTP, viaCmd map[string]json.RawMessage
	require.NoError(t, json.Unmarshal([]byte(body), &viaHTTP))
	require.NoError(t, json.Unmarshal([]byte(strings.TrimPrefix(holder.do("stats", "_", "_"), "ok ")), &viaCmd))
	for k := range viaCmd {
		assert.Contains(t, viaHTTP, k)
	}
	assert.Len(t, viaHTTP, len(viaCmd))

	// The exposition as served passes promlint (`promtool check metrics`).
	code, body = get(t, base+"/metrics", "")
	require.Equal(t, http.StatusOK, code)
	problems, err := promlint.New(strings.NewReader(body)).Lint()
	require.NoError(t, err)
	assert.Empty(t, problems)

	code, _ = get(t, base+"/debug/pprof/", "")
	assert.Equal(t, http.StatusNotFound, code, "pprof is off without --pprof")
	p.stop(t)
}

// TestHTTPReadyzDuringDrain: /readyz answers 503 from SIGTERM until the
// process exits; /healthz stays 200.
func TestHTTPReadyzDuringDrain(t *testing.T) {
	t.Parallel()
	p, base := startHTTPServer(t, "--shutdown-timeout", "20")
	code, body := get(t, base+"/readyz", "")
	require.Equal(t, http.StatusOK, code, body)
	code, _ = get(t, base+"/healthz", "")
	require.Equal(t, http.StatusOK, code)

	// A parked waiter keeps the drain going until the holder releases.
	holder := dialServer(t, p.addr)
	token := requireGrant(t, holder.do("l", "k", "0"), 33)
	waiter := dialServer(t, p.addr)
	waiter.send("l", "k", "30")
	waitWaiters(t, holder, "k", 1)

	p.signal(t, syscall.SIGTERM)
	eventually(t, ioTimeout, "/readyz 503 while draining", func() bool {
		code, _ := get(t, base+"/readyz", "")
		return code == http.StatusServiceUnavailable
	})
	code, _ = get(t, base+"/healthz", "")
	assert.Equal(t, http.StatusOK, code, "alive while draining")
	assert.Equal(t, 1.0, scrapeText(t, base, "")["dflockd_draining"])

	require.Equal(t, "ok", holder.do("r", "k", token))
	line, err := waiter.readLine(ioTimeout)
	require.NoError(t, err)
	requireGrant(t, line, 33)
	require.Equal(t, 0, p.waitExit(t, 10*time.Second))
}

// TestHTTPAuth: with --auth-token every endpoint but /healthz and /readyz
// needs the bearer token.
func TestHTTPAuth(t *testing.T) {
	t.Parallel()
	const secret = "s3cret-token"
	_, base := startHTTPServer(t, "--auth-token", secret, "--pprof")
	for _, path := range []string{"/healthz", "/readyz"} {
		code, _ := get(t, base+path, "")
		assert.Equal(t, http.StatusOK, code, path)
	}
	for _, path := range []string{"/metrics", "/v1/stats", "/debug/pprof/", "/debug/pprof/cmdline"} {
		code, _ := get(t, base+path, "")
		assert.Equal(t, http.StatusUnauthorized, code, path+" without a token")
		code, _ = get(t, base+path, "wrong")
		assert.Equal(t, http.StatusUnauthorized, code, path+" with a wrong token")
		code, _ = get(t, base+path, secret+"x")
		assert.Equal(t, http.StatusUnauthorized, code, path+" with a longer token")
		code, _ = get(t, base+path, secret)
		assert.Equal(t, http.StatusOK, code, path+" with the token")
	}
	// The scheme is case-insensitive; Basic or other schemes are refused.
	for header, want := range map[string]int{
		"bearer " + secret:       http.StatusOK,
		"BEARER " + secret:       http.StatusOK,
		"Bearer " + secret[:5]:   http.StatusUnauthorized,
		"Bearer":                 http.StatusUnauthorized,
		"Bearer ":                http.StatusUnauthorized,
		"Token " + secret:        http.StatusUnauthorized,
		"Bearer  " + secret:      http.StatusUnauthorized,
		"Basic eDpzM2NyZXQtdG9r": http.StatusUnauthorized,
	} {
		req, err := http.NewRequest(http.MethodGet, base+"/metrics", nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", header)
		resp, err := (&http.Client{Timeout: ioTimeout}).Do(req)
		require.NoError(t, err)
		_ = resp.Body.Close()
		assert.Equal(t, want, resp.StatusCode, "Authorization: %q", header)
	}
	req, err := http.NewRequest(http.MethodGet, base+"/metrics", nil)
	require.NoError(t, err)
	req.SetBasicAuth("x", secret)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	_ = resp.Body.Close()
	assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
}

// TestBearerOK: the token check on the header value alone.
func TestBearerOK(t *testing.T) {
	want := sha256.Sum256([]byte("s3cret"))
	for header, ok := range map[string]bool{
		"Bearer s3cret":  true,
		"bearer s3cret":  true,
		"bEaReR s3cret":  true,
		"Bearer s3cre":   false,
		"Bearer s3cretx": false,
		"Bearer":         false,
		"Bearer ":        false,
		"":               false,
		"s3cret":         false,
		"Basic s3cret":   false,
		"Bearers3cret":   false,
	} {
		assert.Equal(t, ok, bearerOK(header, &want), "%q", header)
	}
}

func TestHTTPConfig(t *testing.T) {
	o, err := parse(t, nil, nil)
	require.NoError(t, err)
	assert.Empty(t, o.HTTPAddr, "off by default")
	assert.False(t, o.PProf)

	o, err = parse(t, nil, map[string]string{"DFLOCKD_HTTP_ADDR": "127.0.0.1:9090", "DFLOCKD_PPROF": "1"})
	require.NoError(t, err)
	assert.Equal(t, "127.0.0.1:9090", o.HTTPAddr)
	assert.True(t, o.PProf)

	o, err = parse(t, []string{"--http-addr", "[::1]:0"}, map[string]string{"DFLOCKD_HTTP_ADDR": "127.0.0.1:9090"})
	require.NoError(t, err)
	assert.Equal(t, "[::1]:0", o.HTTPAddr, "the flag wins")

	for _, tt := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--http-addr", "9090"}, nil, "invalid --http-addr"},
		{[]string{"--http-addr", "127.0.0.1:http"}, nil, "invalid --http-addr"},
		{[]string{"--http-addr", "127.0.0.1:70000"}, nil, "invalid --http-addr"},
		{nil, map[string]string{"DFLOCKD_HTTP_ADDR": "nohost"}, "invalid --http-addr"},
		{[]string{"--pprof"}, nil, "invalid --pprof"},
		{[]string{"--http-addr", "127.0.0.1:0", "--pprof=maybe"}, nil, "invalid --pprof"},
	} {
		_, err := parse(t, tt.args, tt.env)
		require.Error(t, err, "%v %v", tt.args, tt.env)
		assert.Contains(t, err.Error(), tt.want)
		assert.NotContains(t, err.Error(), "\n")
	}

	var usage bytes.Buffer
	_, err = parseConfig([]string{"--help"}, envOf(nil), &usage)
	require.Error(t, err)
	for _, s := range []string{"-http-addr", "[DFLOCKD_HTTP_ADDR]", "-pprof", "[DFLOCKD_PPROF]"} {
		assert.Contains(t, usage.String(), s)
	}
}

// TestHTTPAddrInUse: a side port that cannot be bound stops the start
// with one line naming --http-addr, before anything else is logged.
func TestHTTPAddrInUse(t *testing.T) {
	t.Parallel()
	_, base := startHTTPServer(t)
	addr := strings.TrimPrefix(base, "http://")
	p := startProc(t, procConfig{args: []string{"--port", "0", "--http-addr", addr}})
	assert.Equal(t, 1, p.waitExit(t, 10*time.Second))
	assert.Equal(t, "dflockd: cannot listen on --http-addr "+addr+": address already in use\n", p.stderr.String())
}

// TestVersionVCS: a binary built with VCS stamping prints the revision it
// was built from (the release workflow builds that way).
func TestVersionVCS(t *testing.T) {
	t.Parallel()
	head, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Skip("not a git checkout:", err)
	}
	path := filepath.Join(t.TempDir(), "dflockd")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "build", "-buildvcs=true", "-o", path, ".").CombinedOutput()
	if err != nil && strings.Contains(string(out), "error obtaining VCS status") {
		t.Skipf("git cannot stamp this checkout: %s", out) // e.g. a checkout owned by another user
	}
	require.NoError(t, err, "%s", out)
	out, err = exec.Command(path, "--version").Output()
	require.NoError(t, err)
	rev := strings.TrimSpace(string(head))
	assert.Regexp(t, `^dflockd \S+ `+rev+`(-dirty)?\n$`, string(out))
}
