package main

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDescriptorsRunOutAtRuntime: the open-file limit lowered under the
// running server (prlimit --pid), so the connection cap computed at start
// is above what the process can open: accept hits EMFILE. The server must
// survive, keep serving its clients, refuse the excess, and serve new
// clients once the flood closes. On the plain port the accept succeeds and
// gnet's duplicate of the descriptor fails; until fixed (review 13) that
// logged a warning per connection and counted it accepted, not refused.
func TestDescriptorsRunOutAtRuntime(t *testing.T) {
	if _, err := exec.LookPath("prlimit"); err != nil {
		t.Skip("needs prlimit (util-linux) to lower the running server's limit")
	}
	raiseTestNoFile(t, 1000)
	for _, tlsOn := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%v", tlsOn), func(t *testing.T) {
			args := []string{"--log-format", "json", "--http-addr", "127.0.0.1:0"}
			var cfg *tls.Config
			if tlsOn {
				certFile, keyFile, pool := selfSignedCert(t)
				args = append(args, "--tls-cert", certFile, "--tls-key", keyFile)
				cfg = &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
			}
			srv := startServer(t, procConfig{args: args})
			dial := func(d time.Duration) (net.Conn, error) {
				nc, err := net.DialTimeout("tcp", srv.addr, d)
				if err != nil || cfg == nil {
					return nc, err
				}
				tc := tls.Client(nc, cfg)
				_ = tc.SetDeadline(time.Now().Add(d))
				if err := tc.Handshake(); err != nil {
					_ = nc.Close()
					return nil, err
				}
				_ = tc.SetDeadline(time.Time{})
				return tc, nil
			}
			nc, err := dial(ioTimeout)
			require.NoError(t, err)
			first := newClient(t, nc)
			tok := requireGrant(t, first.do("l", "k", "10"), 33)
			out, err := exec.Command("prlimit", "--pid", strconv.Itoa(srv.cmd.Process.Pid), "--nofile=100:100").CombinedOutput()
			require.NoError(t, err, string(out))

			res := map[string]int{}
			var conns []net.Conn
			for range 300 {
				nc, err := net.DialTimeout("tcp", srv.addr, 2*time.Second)
				if err != nil {
					res["dial error"]++
					continue
				}
				conns = append(conns, nc)
			}
			var cs []net.Conn
			for _, nc := range conns {
				c := nc
				if cfg != nil {
					c = tls.Client(nc, cfg)
				}
				cs = append(cs, c)
				_ = c.SetDeadline(time.Now().Add(3 * time.Second))
				if _, err := io.WriteString(c, "ping\n_\n_\n"); err != nil {
					res["write err"]++
					if res["write err"] < 3 {
						t.Logf("write error: %v", err)
					}
					continue
				}
			}
			for _, c := range cs {
				line, err := bufio.NewReader(c).ReadString('\n')
				switch {
				case err == nil && line == "ok\n":
					res["served"]++
				case err == nil:
					res["bad "+line]++
				case isTimeout(err):
					res["HANG"]++
				default:
					res["closed"]++
				}
			}
			t.Logf("flood: %v", res)
			if mb, err := exec.Command("ls", "-l", "/proc/"+strconv.Itoa(srv.cmd.Process.Pid)+"/fd").Output(); err == nil {
				t.Logf("server fds: %d", strings.Count(string(mb), "\n"))
			}
			require.True(t, srv.running(), "server died: %s", srv.stderr.String())
			assert.Zero(t, res["HANG"], "flood connections neither served nor closed")
			assert.Equal(t, "ok", first.do("ping", "_", "_"))
			for _, c := range conns {
				_ = c.Close()
			}
			eventually(t, 5*time.Second, "served after the flood", func() bool {
				nc, err := dial(time.Second)
				if err != nil {
					return false
				}
				defer func() { _ = nc.Close() }()
				_ = nc.SetDeadline(time.Now().Add(time.Second))
				_, _ = io.WriteString(nc, "ping\n_\n_\n")
				line, err := bufio.NewReader(nc).ReadString('\n')
				return err == nil && line == "ok\n"
			})
			assert.Equal(t, "ok", first.do("r", "k", tok))
			var hl struct {
				HTTPAddr string `json:"http_addr"`
			}
			for _, line := range strings.Split(srv.stderr.String(), "\n") {
				if strings.Contains(line, "dflockd listening") {
					require.NoError(t, json.Unmarshal([]byte(line), &hl))
				}
			}
			m := scrapeText(t, "http://"+hl.HTTPAddr, "")
			t.Logf("accepted_total %v rejections{max_connections} %v connections %v/%v", m["dflockd_connections_accepted_total"],
				m[`dflockd_rejections_total{reason="max_connections"}`], m[`dflockd_connections{transport="plain"}`], m[`dflockd_connections{transport="tls"}`])
			// 1 (first) + served flood + the eventually probes were served
			assert.InDelta(t, float64(res["closed"]), m[`dflockd_rejections_total{reason="max_connections"}`], 3, "refused flood connections counted")
			first.close()
			srv.stop(t)
			warns := 0
			for _, l := range strings.Split(srv.stderr.String(), "\n") {
				if strings.Contains(l, `"warn"`) || strings.Contains(l, `"error"`) {
					if warns++; warns <= 3 {
						t.Logf("log: %s", l)
					}
				}
			}
			t.Logf("%d warn/error lines for %d refused connections", warns, res["closed"])
			assert.LessOrEqual(t, warns, 5, "refusals should be logged at most once a second, not once per connection")
		})
	}
}
