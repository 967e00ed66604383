package main

import (
	"bufio"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestSigtermDuringLoad: SIGTERM while 32 clients hammer three keys, many
// of them parked. Every request sent is answered with a reply its command
// allows (error_draining included) or its connection is closed — none
// hangs — and the server exits 0 within the shutdown timeout.
func TestSigtermDuringLoad(t *testing.T) {
	t.Parallel()
	srv := startServer(t, procConfig{args: []string{"--shutdown-timeout", "2"}})
	const clients = 32
	keys := []string{"a", "b", "c"}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		replies = map[string]int{}
		sent    int
		closed  int
		bad     []string
	)
	stop := make(chan struct{})
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nc, err := net.DialTimeout("tcp", srv.addr, ioTimeout)
			if !assert.NoError(t, err) {
				return
			}
			defer func() { _ = nc.Close() }()
			r := bufio.NewReader(nc)
			// exchange sends one request and waits for its reply (the
			// shutdown timeout bounds every wait); false when the
			// connection is closed.
			exchange := func(cmd, key, arg string) (string, bool) {
				_ = nc.SetDeadline(time.Now().Add(15 * time.Second))
				mu.Lock()
				sent++
				mu.Unlock()
				if _, err := io.WriteString(nc, cmd+"\n"+key+"\n"+arg+"\n"); err != nil {
					mu.Lock()
					closed++
					mu.Unlock()
					return "", false
				}
				line, err := r.ReadString('\n')
				if err != nil {
					mu.Lock()
					if isTimeout(err) {
						bad = append(bad, "no reply and no close for "+cmd+" "+key)
					} else {
						closed++
					}
					mu.Unlock()
					return "", false
				}
				line = strings.TrimSuffix(line, "\n")
				mu.Lock()
				defer mu.Unlock()
				word, _, _ := strings.Cut(line, " ")
				replies[cmd+" "+word]++
				ok := false
				switch cmd {
				case "l":
					ok = grantRe.MatchString(line) || line == "timeout" || line == "error_draining"
				case "r":
					ok = line == "ok" || line == "error"
				}
				if !ok {
					bad = append(bad, cmd+" answered "+line)
				}
				return line, true
			}
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				key := keys[(i+n)%len(keys)]
				line, open := exchange("l", key, "3 2")
				if !open {
					return
				}
				if m := grantRe.FindStringSubmatch(line); m != nil {
					time.Sleep(time.Duration(n%3) * time.Millisecond)
					if _, open := exchange("r", key, m[1]); !open {
						return
					}
				}
			}
		}()
	}
	time.Sleep(700 * time.Millisecond)
	srv.signal(t, syscall.SIGTERM)
	code := srv.waitExit(t, 20*time.Second)
	close(stop)
	wg.Wait()
	require.Equal(t, 0, code, "exit code after SIGTERM under load")
	t.Logf("%d requests, %d connections closed by the drain, replies %v", sent, closed, replies)
	require.Empty(t, bad)
	require.NotZero(t, replies["l ok"], "no grants before the signal")
}
