package main

import (
	"bytes"
	"fmt"
	"math"
	"net/http"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// getAccept fetches url with an Accept header and returns status,
// content type and body.
func getAccept(t testing.TB, url, accept string) (int, string, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	require.NoError(t, err)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := (&http.Client{Timeout: ioTimeout}).Do(req)
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	var b bytes.Buffer
	_, err = b.ReadFrom(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, resp.Header.Get("Content-Type"), b.String()
}

// TestMetricsExpositionAndValues: the /metrics text exposition
// parses with expfmt's text parser (HELP/TYPE once per family, histograms
// cumulative with +Inf == _count), the OpenMetrics form ends in "# EOF",
// and two-phase and semaphore hand-offs move the right series.
func TestMetricsExpositionAndValues(t *testing.T) {
	t.Parallel()
	p, base := startHTTPServer(t)

	// Two-phase lock: acquired, queued, hand-off on release, w collects.
	a := dialServer(t, p.addr)
	b := dialServer(t, p.addr)
	acq := a.do("e", "tp", "")
	require.True(t, strings.HasPrefix(acq, "acquired "), acq)
	tokA := strings.Fields(acq)[1]
	require.Equal(t, "queued", b.do("e", "tp", ""))
	waitSeries(t, base, "", `dflockd_waiters{namespace="lock"}`, 1)
	require.Equal(t, "ok", a.do("r", "tp", tokA))
	requireGrant(t, b.do("w", "tp", "5"), 33)

	// Semaphore limit 2: two holders, a parked third, hand-off on sr.
	s1, s2, s3 := dialServer(t, p.addr), dialServer(t, p.addr), dialServer(t, p.addr)
	t1 := requireGrant(t, s1.do("sl", "sem", "0 2"), 33)
	requireGrant(t, s2.do("sl", "sem", "0 2"), 33)
	s3.send("sl", "sem", "10 2")
	waitSeries(t, base, "", `dflockd_waiters{namespace="semaphore"}`, 1)
	require.Equal(t, "ok", s1.do("sr", "sem", t1))
	line, err := s3.readLine(ioTimeout)
	require.NoError(t, err)
	requireGrant(t, line, 33)

	waitSeries(t, base, "", `dflockd_parked_wait_seconds_count{command="sl"}`, 1)
	// The parked count drops once the grant's write has returned, which
	// may be after the client has read it (a grant written by the
	// goroutine that decided it): wait for it rather than race it.
	m := waitSeries(t, base, "", `dflockd_parked_requests`, 0)
	want := map[string]float64{
		`dflockd_grants_total{namespace="lock"}`:                2,
		`dflockd_handoffs_total{namespace="lock"}`:              1,
		`dflockd_held{namespace="lock"}`:                        1,
		`dflockd_waiters{namespace="lock"}`:                     0,
		`dflockd_grants_total{namespace="semaphore"}`:           3,
		`dflockd_handoffs_total{namespace="semaphore"}`:         1,
		`dflockd_held{namespace="semaphore"}`:                   2,
		`dflockd_waiters{namespace="semaphore"}`:                0,
		`dflockd_requests_total{command="e",result="acquired"}`: 1,
		`dflockd_requests_total{command="e",result="queued"}`:   1,
		`dflockd_requests_total{command="w",result="ok"}`:       1,
		`dflockd_requests_total{command="sl",result="ok"}`:      3,
		`dflockd_requests_total{command="sr",result="ok"}`:      1,
		`dflockd_parked_requests`:                               0,
		`dflockd_keys`:                                          2,
	}
	for k, v := range want {
		assert.Equal(t, v, m[k], k)
	}

	// Text format: strict parse and histogram shape.
	code, ctype, body := getAccept(t, base+"/metrics", "text/plain;version=0.0.4")
	require.Equal(t, http.StatusOK, code)
	assert.Contains(t, ctype, "text/plain")
	for _, kw := range []string{"# HELP ", "# TYPE "} {
		seen := map[string]bool{}
		for _, l := range strings.Split(body, "\n") {
			if strings.HasPrefix(l, kw) {
				name := strings.Fields(l)[2]
				assert.False(t, seen[name], "%s repeated for %s", strings.TrimSpace(kw), name)
				seen[name] = true
			}
		}
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := parser.TextToMetricFamilies(strings.NewReader(body))
	require.NoError(t, err)
	var hists []string
	for name, mf := range mfs {
		for _, met := range mf.GetMetric() {
			h := met.GetHistogram()
			if h == nil {
				continue
			}
			hists = append(hists, name)
			prevB, prevC := math.Inf(-1), uint64(0)
			sawInf := false
			for _, bk := range h.GetBucket() {
				assert.Greater(t, bk.GetUpperBound(), prevB, name)
				assert.GreaterOrEqual(t, bk.GetCumulativeCount(), prevC, "%s buckets not cumulative", name)
				prevB, prevC = bk.GetUpperBound(), bk.GetCumulativeCount()
				if math.IsInf(bk.GetUpperBound(), 1) {
					sawInf = true
					assert.Equal(t, h.GetSampleCount(), bk.GetCumulativeCount(), "%s +Inf != _count", name)
				}
			}
			// The text parser drops an explicit +Inf bucket into count;
			// check it is in the text.
			if !sawInf {
				assert.Contains(t, body, name+`_bucket{`, name)
				assert.Regexp(t, name+`_bucket\{[^}]*le="\+Inf"\} `+fmt.Sprint(h.GetSampleCount()), body)
			}
			assert.GreaterOrEqual(t, h.GetSampleSum(), 0.0)
		}
	}
	sort.Strings(hists)
	assert.Contains(t, hists, "dflockd_request_duration_seconds")
	assert.Contains(t, hists, "dflockd_parked_wait_seconds")

	// OpenMetrics on request.
	code, ctype, body = getAccept(t, base+"/metrics", "application/openmetrics-text;version=1.0.0")
	require.Equal(t, http.StatusOK, code)
	assert.Contains(t, ctype, "application/openmetrics-text")
	assert.True(t, strings.HasSuffix(body, "# EOF\n"), "OpenMetrics body must end with # EOF")
	assert.Equal(t, 1, strings.Count(body, "# EOF"))
	p.stop(t)
}
