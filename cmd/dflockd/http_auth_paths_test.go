package main

import (
	"bufio"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// rawStatus sends a raw HTTP/1.1 request line (+ headers) and returns the
// status code and body prefix.
func rawStatus(t *testing.T, addr, reqLine string, headers ...string) (int, string) {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, ioTimeout)
	require.NoError(t, err)
	defer func() { _ = nc.Close() }()
	_ = nc.SetDeadline(time.Now().Add(ioTimeout))
	msg := reqLine + "\r\nHost: x\r\nConnection: close\r\n"
	for _, h := range headers {
		msg += h + "\r\n"
	}
	msg += "\r\n"
	_, err = nc.Write([]byte(msg))
	require.NoError(t, err)
	resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
	require.NoError(t, err, reqLine)
	defer func() { _ = resp.Body.Close() }()
	buf := make([]byte, 64)
	n, _ := resp.Body.Read(buf)
	return resp.StatusCode, string(buf[:n])
}

// TestHTTPAuthPathTricks: no path, method or header form reaches a
// guarded handler without the token.
func TestHTTPAuthPathTricks(t *testing.T) {
	t.Parallel()
	const secret = "s3cret-token"
	p, base := startHTTPServer(t, "--auth-token", secret, "--pprof")
	addr := strings.TrimPrefix(base, "http://")
	for _, rl := range []string{
		"GET /metrics HTTP/1.1", "HEAD /metrics HTTP/1.1", "GET /metrics/ HTTP/1.1",
		"GET //metrics HTTP/1.1", "GET /./metrics HTTP/1.1", "GET /x/../metrics HTTP/1.1",
		"GET /%6detrics HTTP/1.1", "GET /metrics%2F HTTP/1.1", "GET /METRICS HTTP/1.1",
		"GET http://x/metrics HTTP/1.1", "GET /v1/stats HTTP/1.1", "GET /v1//stats HTTP/1.1",
		"GET /debug/pprof/cmdline HTTP/1.1", "GET /debug/pprof/goroutine?debug=1 HTTP/1.1",
		"POST /debug/pprof/symbol HTTP/1.1", "GET /debug/pprof HTTP/1.1",
		"GET /debug/pprof/../pprof/cmdline HTTP/1.1", "GET /debug//pprof/cmdline HTTP/1.1",
		"GET /healthz/../metrics HTTP/1.1", "GET /readyz/../v1/stats HTTP/1.1",
		"OPTIONS * HTTP/1.1", "CONNECT /metrics HTTP/1.1", "GET /metrics HTTP/1.0",
		"GET /metrics?x=1;y HTTP/1.1",
	} {
		for _, hdr := range [][]string{nil, {"Authorization: Bearer"}, {"Authorization: Bearer " + secret + "x"},
			{"Authorization: Basic " + secret}, {"Authorization: Bearer\t" + secret}, {"Authorization: " + secret},
			{"Authorization: Bearer wrong", "Authorization: Bearer " + secret}} {
			code, body := rawStatus(t, addr, rl, hdr...)
			if rl == "OPTIONS * HTTP/1.1" {
				// net/http answers the server-wide OPTIONS itself: 200, no body.
				assert.Empty(t, body)
				continue
			}
			assert.NotEqual(t, http.StatusOK, code, "%s %v -> %d %q", rl, hdr, code, body)
			if code == http.StatusOK {
				continue
			}
			assert.NotContains(t, body, "dflockd_", "%s %v leaked metrics", rl, hdr)
			assert.NotContains(t, body, "connections", "%s %v leaked stats", rl, hdr)
		}
	}
	code, _ := rawStatus(t, addr, "HEAD /readyz HTTP/1.1")
	assert.Equal(t, http.StatusOK, code, "HEAD /readyz")
	code, _ = rawStatus(t, addr, "GET /metrics HTTP/1.1", "Authorization: bearer "+secret)
	assert.Equal(t, http.StatusOK, code)
	p.stop(t)
}
