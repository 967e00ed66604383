package main

// /metrics against counts kept by the test itself, after connection churn,
// pipelining, auth failures, TLS and malformed input.

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func statsConnections(t *testing.T, base, token string) int {
	t.Helper()
	code, body := get(t, base+"/v1/stats", token)
	require.Equal(t, http.StatusOK, code, body)
	var st struct {
		Connections int `json:"connections"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &st), body)
	return st.Connections
}

// TestMetricsChurnAndPipelining: counters after connection
// churn (plain close, RST, close mid-request), a pipelined burst, an
// over-long line and malformed requests.
func TestMetricsChurnAndPipelining(t *testing.T) {
	t.Parallel()
	p, base := startHTTPServer(t)
	m0 := scrapeText(t, base, "")
	assert.Equal(t, 0.0, m0["dflockd_connections_accepted_total"])

	const churn = 60
	for i := range churn {
		nc, err := net.DialTimeout("tcp", p.addr, ioTimeout)
		require.NoError(t, err)
		switch i % 3 {
		case 0: // idle close
		case 1: // a request, then RST
			c := newClient(t, nc)
			require.Equal(t, "ok", c.do("ping", "_", "_"))
			_ = nc.(*net.TCPConn).SetLinger(0)
		case 2: // half a request
			_, _ = io.WriteString(nc, "l\nk")
		}
		_ = nc.Close()
	}
	// churn/3 pings were answered. The last connections may still wait
	// in the accept queue while the gauge reads 0: wait for the count.
	waitSeries(t, base, "", "dflockd_connections_accepted_total", float64(churn))
	m := waitSeries(t, base, "", `dflockd_connections{transport="plain"}`, 0)
	assert.Equal(t, float64(churn), m["dflockd_connections_accepted_total"])
	assert.Equal(t, float64(churn/3), m[`dflockd_requests_total{command="ping",result="ok"}`])

	// Pipelined: 200 pings, 1 malformed (bad integer), 1 unknown command in one write.
	c := dialServer(t, p.addr)
	var b strings.Builder
	for range 200 {
		b.WriteString("ping\n_\n_\n")
	}
	b.WriteString("l\nk\nabc\n")
	b.WriteString("zz\nk\n1\n")
	_, err := io.WriteString(c.nc, b.String())
	require.NoError(t, err)
	for i := range 202 {
		line, err := c.readLine(ioTimeout)
		require.NoError(t, err, "reply %d", i)
		if i < 200 {
			require.Equal(t, "ok", line)
		} else {
			require.Equal(t, "error", line)
		}
	}
	// Over-long line: error and close.
	o := dialServer(t, p.addr)
	_, err = io.WriteString(o.nc, strings.Repeat("x", 300))
	require.NoError(t, err)
	line, err := o.readLine(ioTimeout)
	require.NoError(t, err)
	require.Equal(t, "error", line)
	o.requireClosed(ioTimeout)

	m = waitSeries(t, base, "", `dflockd_connections{transport="plain"}`, 1)
	assert.Equal(t, float64(churn+2), m["dflockd_connections_accepted_total"])
	assert.Equal(t, float64(churn/3+200), m[`dflockd_requests_total{command="ping",result="ok"}`])
	var errs float64
	for k, v := range m {
		if strings.HasPrefix(k, "dflockd_requests_total{") && strings.HasSuffix(k, `result="error"}`) {
			t.Logf("%s %v", k, v)
			errs += v
		}
	}
	assert.Equal(t, 3.0, errs, "three requests answered error")
	assert.Equal(t, 1, statsConnections(t, base, ""))
	p.stop(t)
}

// TestMetricsAuthFailures: with --auth-token, auth failures of
// each kind are counted, connections return to zero, and requests_total
// matches what the clients saw.
func TestMetricsAuthFailures(t *testing.T) {
	t.Parallel()
	const tok = "s3cret"
	p, base := startHTTPServer(t, "--auth-token", tok, "--read-timeout", "1")
	code, _ := get(t, base+"/metrics", "")
	require.Equal(t, http.StatusUnauthorized, code)

	wrong := dialServer(t, p.addr)
	require.Equal(t, "error_auth", wrong.do("auth", "_", "nope"))
	wrong.requireClosed(ioTimeout)

	noauth := dialServer(t, p.addr)
	require.Equal(t, "error_auth", noauth.do("l", "k", "0"))
	noauth.requireClosed(ioTimeout)

	good := dialServer(t, p.addr)
	require.Equal(t, "ok", good.do("auth", "_", tok))
	requireGrant(t, good.do("l", "k", "0"), 33)
	require.Equal(t, "error", good.do("auth", "_", tok), "second auth")

	m := waitSeries(t, base, tok, `dflockd_connections{transport="plain"}`, 1)
	assert.Equal(t, 3.0, m["dflockd_connections_accepted_total"])
	var authFails float64
	for k, v := range m {
		if strings.HasPrefix(k, "dflockd_requests_total{") && strings.Contains(k, `result="error_auth"`) {
			t.Logf("%s %v", k, v)
			authFails += v
		}
	}
	assert.Equal(t, 2.0, authFails, "two connections were answered error_auth")
	assert.Equal(t, 1.0, m[`dflockd_requests_total{command="auth",result="ok"}`])
	assert.Equal(t, 1.0, m[`dflockd_requests_total{command="auth",result="error"}`])
	assert.Equal(t, 1.0, m[`dflockd_requests_total{command="l",result="ok"}`])
	p.stop(t)
}

// TestMetricsTLS: TLS connections are counted by transport,
// return to 0 after close, a failed handshake leaves no trace in the
// gauge, and TLS requests count in requests_total.
func TestMetricsTLS(t *testing.T) {
	t.Parallel()
	cert, key, pool := selfSignedCert(t)
	p, base := startHTTPServer(t, "--tls-cert", cert, "--tls-key", key)
	cfg := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
	_ = x509.NewCertPool

	var conns []*client
	for range 5 {
		nc, err := tls.DialWithDialer(&net.Dialer{Timeout: ioTimeout}, "tcp", p.addr, cfg)
		require.NoError(t, err)
		c := newClient(t, nc)
		require.Equal(t, "ok", c.do("ping", "_", "_"))
		conns = append(conns, c)
	}
	m := waitSeries(t, base, "", `dflockd_connections{transport="tls"}`, 5)
	assert.Equal(t, 0.0, m[`dflockd_connections{transport="plain"}`])
	assert.Equal(t, 5.0, m[`dflockd_requests_total{command="ping",result="ok"}`])
	assert.Equal(t, 5, statsConnections(t, base, ""))

	// A plaintext client on the TLS port: handshake fails.
	nc, err := net.DialTimeout("tcp", p.addr, ioTimeout)
	require.NoError(t, err)
	_, _ = io.WriteString(nc, "ping\n_\n_\n")
	_ = nc.SetReadDeadline(time.Now().Add(ioTimeout))
	_, _ = io.ReadAll(nc)
	_ = nc.Close()

	for _, c := range conns {
		c.close()
	}
	m = waitSeries(t, base, "", `dflockd_connections{transport="tls"}`, 0)
	assert.Equal(t, 0.0, m[`dflockd_connections{transport="plain"}`])
	assert.Equal(t, 6.0, m["dflockd_connections_accepted_total"])
	assert.Equal(t, 0, statsConnections(t, base, ""))
	p.stop(t)
}

// TestMetricsLifecycle: counters for try-once timeouts, parked
// waiters that disconnect, two-phase timeouts, hand-offs by expiry and
// disconnect, e-grants that expire, compared with what the clients saw.
func TestMetricsLifecycle(t *testing.T) {
	t.Parallel()
	p, base := startHTTPServer(t)
	h := dialServer(t, p.addr)
	tok := requireGrant(t, h.do("l", "a", "0 2"), 2) // grant 1, expires in 2 s
	try := dialServer(t, p.addr)
	require.Equal(t, "timeout", try.do("l", "a", "0")) // try-once timeout

	gone := dialServer(t, p.addr)
	gone.send("l", "a", "30") // parked, then disconnects
	next := dialServer(t, p.addr)
	next.send("l", "a", "30") // parked, granted at expiry
	waitSeries(t, base, "", `dflockd_waiters{namespace="lock"}`, 2)
	waitSeries(t, base, "", "dflockd_parked_requests", 2) // counted just after the waiter
	gone.close()
	waitSeries(t, base, "", `dflockd_waiters{namespace="lock"}`, 1)
	waitSeries(t, base, "", "dflockd_parked_requests", 1)

	// Two-phase: e queued, w times out after 1 s.
	e1 := dialServer(t, p.addr)
	e2 := dialServer(t, p.addr)
	etok := strings.Fields(e1.do("e", "b", "1"))[1] // acquired, lease 1, never w'd: expires
	require.Equal(t, "queued", e2.do("e", "b", ""))
	_ = etok
	line := e2.do("w", "b", "1")
	t.Logf("e2 w: %q", line) // grant at e1's expiry (1 s) or timeout (1 s)

	line, err := next.readLine(5 * time.Second)
	require.NoError(t, err)
	ntok := requireGrant(t, line, 33) // hand-off by lease expiry
	require.Equal(t, "error", h.do("r", "a", tok))
	next.close() // disconnect release

	time.Sleep(300 * time.Millisecond)
	m := waitSeries(t, base, "", `dflockd_held{namespace="lock"}`, func() float64 {
		if strings.HasPrefix(line, "ok ") {
			return 1
		}
		return 0
	}())
	_ = ntok
	for k, v := range m {
		if strings.HasPrefix(k, "dflockd_") && !strings.Contains(k, "_bucket") && !strings.Contains(k, "busy") && !strings.Contains(k, "_sum") {
			t.Logf("%s %v", k, v)
		}
	}
	assert.Equal(t, 1.0, m[`dflockd_requests_total{command="l",result="timeout"}`], "try-once timeout reply")
	assert.Equal(t, 2.0, m[`dflockd_handoffs_total{namespace="lock"}`], "handoffs (a -> next, b -> e2)")
	assert.Equal(t, 4.0, m[`dflockd_grants_total{namespace="lock"}`])
	assert.Equal(t, 2.0, m[`dflockd_lease_expiries_total{namespace="lock"}`])
	assert.Equal(t, 1.0, m[`dflockd_disconnect_releases_total{namespace="lock"}`])
	assert.Equal(t, 0.0, m[`dflockd_waiter_timeouts_total{namespace="lock"}`], "a try-once timeout is not a queued waiter's")
	assert.Equal(t, 4.0, m[`dflockd_timers_pending{wheel="connections"}`], "one read-timeout timer per open idle connection")
	assert.Equal(t, 0.0, m[`dflockd_waiters{namespace="lock"}`])
	assert.Equal(t, 0.0, m["dflockd_parked_requests"])
	p.stop(t)
}

// The error_auth or error a read timeout writes answers no request: it
// is not in requests_total, and the close is counted by its reason.
func TestMetricsReadTimeoutClosesCounted(t *testing.T) {
	t.Parallel()
	p, base := startHTTPServer(t, "--auth-token", "tok", "--read-timeout", "1")
	idle := dialServer(t, p.addr) // read timeout before auth
	authed := dialServer(t, p.addr)
	require.Equal(t, "ok", authed.do("auth", "_", "tok"))
	for _, c := range []*client{idle, authed} {
		_, err := c.readLine(ioTimeout)
		require.NoError(t, err)
		c.requireClosed(ioTimeout)
	}
	m := waitSeries(t, base, "tok", `dflockd_connections{transport="plain"}`, 0)
	assert.Equal(t, 1.0, m[`dflockd_connections_closed_total{reason="auth_timeout"}`])
	assert.Equal(t, 1.0, m[`dflockd_connections_closed_total{reason="read_timeout"}`])
	var replies float64
	for k, v := range m {
		if strings.HasPrefix(k, "dflockd_requests_total{") {
			replies += v
		}
	}
	assert.Equal(t, 1.0, replies, "the auth's ok only")
	p.stop(t)
}

// Connections refused at --max-connections are counted exactly in
// rejections_total{reason="max_connections"} (not in
// connections_accepted_total), and the rate-limited warning reports the
// whole burst: the rest of it when the second is up, even when no refusal
// follows (it used to report only the first of a burst).
func TestRefusalLogTail(t *testing.T) {
	t.Parallel()
	p, base := startHTTPServer(t, "--max-connections", "1")
	keep := dialServer(t, p.addr)
	require.Equal(t, "ok", keep.do("ping", "_", "_"))
	const extra = 5
	for range extra {
		c := dialServer(t, p.addr)
		c.requireClosed(ioTimeout)
	}
	m := waitSeries(t, base, "", `dflockd_rejections_total{reason="max_connections"}`, extra)
	assert.Equal(t, 1.0, m["dflockd_connections_accepted_total"])
	time.Sleep(1500 * time.Millisecond)
	var logged float64
	for _, line := range strings.Split(p.stderr.String(), "\n") {
		if !strings.Contains(line, "refusing connections") {
			continue
		}
		var l struct {
			N float64 `json:"refused_since_last_log"`
		}
		require.NoError(t, json.Unmarshal([]byte(line), &l))
		logged += l.N
	}
	t.Logf("refused %d, logged %v", extra, logged)
	assert.Equal(t, float64(extra), logged, "refusals in the log (sum of refused_since_last_log) 1.5 s after the burst")
	p.stop(t)
}
