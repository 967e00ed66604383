package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestAcceptedMonotonic: during a descriptor flood on the plain
// port (prlimit --pid lowers the running server's limit so gnet's dup
// fails after accept), dflockd_connections_accepted_total is a Prometheus
// counter and must never decrease between two scrapes.
func TestAcceptedMonotonic(t *testing.T) {
	if _, err := exec.LookPath("prlimit"); err != nil {
		t.Skip("needs prlimit")
	}
	raiseTestNoFile(t, 1000)
	srv := startServer(t, procConfig{args: []string{"--log-format", "json", "--http-addr", "127.0.0.1:0"}})
	var hl struct {
		HTTPAddr string `json:"http_addr"`
	}
	for _, line := range strings.Split(srv.stderr.String(), "\n") {
		if strings.Contains(line, "dflockd listening") {
			require.NoError(t, json.Unmarshal([]byte(line), &hl))
		}
	}
	base := "http://" + hl.HTTPAddr
	// One keep-alive connection for every scrape, opened before the limit
	// is lowered (a new one could not be accepted afterwards).
	tr := &http.Transport{MaxIdleConnsPerHost: 1, MaxConnsPerHost: 1}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	scrape := func() (map[string]float64, error) {
		resp, err := hc.Get(base + "/metrics")
		if err != nil {
			return nil, err
		}
		defer func() { _ = resp.Body.Close() }()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return nil, err
		}
		out := map[string]float64{}
		sc := bufio.NewScanner(strings.NewReader(string(body)))
		for sc.Scan() {
			line := sc.Text()
			if line == "" || line[0] == '#' {
				continue
			}
			i := strings.LastIndexByte(line, ' ')
			v, _ := strconv.ParseFloat(line[i+1:], 64)
			out[line[:i]] = v
		}
		return out, nil
	}
	_, err := scrape()
	require.NoError(t, err)
	first := dialServer(t, srv.addr)
	require.Equal(t, "ok", first.do("ping", "_", "_"))

	out, err := exec.Command("prlimit", "--pid", strconv.Itoa(srv.cmd.Process.Pid), "--nofile=60:60").CombinedOutput()
	require.NoError(t, err, string(out))

	// Fill the lowered limit with held connections, so every later
	// connection is accepted and then fails gnet's dup (EMFILE).
	var held []net.Conn
	for range 80 {
		nc, err := net.DialTimeout("tcp", srv.addr, time.Second)
		if err == nil {
			held = append(held, nc)
		}
	}
	defer func() {
		for _, c := range held {
			_ = c.Close()
		}
	}()
	var stop atomic.Bool
	var dials atomic.Int64
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				nc, err := net.DialTimeout("tcp", srv.addr, time.Second)
				if err != nil {
					continue
				}
				dials.Add(1)
				_ = nc.Close()
			}
		}()
	}
	const acc = "dflockd_connections_accepted_total"
	const rej = `dflockd_rejections_total{reason="max_connections"}`
	var prevAcc, prevRej float64 = -1, -1
	decreases, scrapes := 0, 0
	var examples []string
	deadline := time.Now().Add(6 * time.Second)
	for time.Now().Before(deadline) {
		m, err := scrape()
		if err != nil {
			t.Logf("scrape: %v", err)
			break
		}
		scrapes++
		if m[acc] < prevAcc {
			decreases++
			if len(examples) < 5 {
				examples = append(examples, strconv.FormatFloat(prevAcc, 'f', 0, 64)+" -> "+strconv.FormatFloat(m[acc], 'f', 0, 64))
			}
		}
		if m[rej] < prevRej {
			t.Errorf("rejections decreased %v -> %v", prevRej, m[rej])
		}
		prevAcc, prevRej = m[acc], m[rej]
	}
	stop.Store(true)
	wg.Wait()
	m, err := scrape()
	require.NoError(t, err)
	t.Logf("scrapes %d, dials %d, final accepted %v refused %v, accepted_total decreases %d %v",
		scrapes, dials.Load(), m[acc], m[rej], decreases, examples)
	require.True(t, srv.running())
	tr.CloseIdleConnections()
	first.close()
	for _, c := range held {
		_ = c.Close()
	}
	held = nil
	time.Sleep(200 * time.Millisecond)
	srv.stop(t)
	assert.Zero(t, decreases, "dflockd_connections_accepted_total (a counter) went down between scrapes: %v", examples)
}
