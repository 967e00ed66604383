package reactor_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/reactor"
	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// holderEnv, when set in the environment of this test binary, makes it a
// connection holder (connHolderMain) instead of running tests. Its value
// is "addr n".
const holderEnv = "DFLOCKD_REACTOR_TEST_HOLD_CONNS"

// openConns opens n connections to addr with a few dialers at a time; each
// does one ping. dial wraps the raw connection (TLS) or returns it as is.
// It returns the open connections (closed by the caller).
func openConns(addr string, n int, dial func(net.Conn) (net.Conn, error)) ([]net.Conn, error) {
	conns := make([]net.Conn, n)
	var (
		mu       sync.Mutex
		firstErr error
		wg       sync.WaitGroup
		next     = make(chan int)
	)
	const workers = 32
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 16)
			for i := range next {
				err := func() error {
					nc, err := net.DialTimeout("tcp", addr, 10*time.Second)
					if err != nil {
						return err
					}
					c, err := dial(nc)
					if err != nil {
						_ = nc.Close()
						return err
					}
					conns[i] = c
					_ = c.SetDeadline(time.Now().Add(20 * time.Second))
					if _, err := io.WriteString(c, req("ping", "_", "_")); err != nil {
						return err
					}
					if _, err := io.ReadFull(c, buf[:3]); err != nil {
						return err
					}
					if string(buf[:3]) != rOK+"\n" {
						return fmt.Errorf("ping %d answered %q", i, buf[:3])
					}
					return c.SetDeadline(time.Time{})
				}()
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("connection %d: %w", i, err)
					}
					mu.Unlock()
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	if firstErr != nil {
		closeAll(conns)
		return nil, firstErr
	}
	return conns, nil
}

func closeAll(conns []net.Conn) {
	for _, c := range conns {
		if c != nil {
			_ = c.Close()
		}
	}
}

func plain(nc net.Conn) (net.Conn, error) { return nc, nil }

// TestManyConnections holds 1,000 connections at once over each transport,
// each served a ping, and checks the server's count.
func TestManyConnections(t *testing.T) {
	if lim, err := reactor.RaiseNoFile(); err != nil || lim < 2*1000+256 {
		t.Skipf("RLIMIT_NOFILE %d (err %v) is below the 2,256 descriptors 1,000 loopback connections need", lim, err)
	}
	forTransports(t, func(t *testing.T, tr transport) {
		srv := tr.start(t)
		obs := srv.Connect(t)
		dial := plain
		if tr.tls {
			dial = func(nc net.Conn) (net.Conn, error) {
				tc := tlsClient(nc, srv)
				return tc, tc.Handshake()
			}
		}
		const n = 1000
		start := time.Now()
		conns, err := openConns(srv.Addr, n, dial)
		require.NoError(t, err)
		t.Logf("%d %s connections opened and pinged in %v", n, tr.name, time.Since(start))
		require.Equal(t, n+1, stats(t, obs).Connections)
		closeAll(conns)
		waitConnections(t, srv.Server, 1)
	})
}

// TestTenThousandConnections holds 10,000 plain TCP connections at once.
// The clients live in a child process (this test binary, see TestMain), so
// each process needs about 10,000 descriptors rather than one needing
// 20,000. TLS is left out: two goroutines per connection would exceed the
// race detector's goroutine limit, and TestManyConnections covers it.
func TestTenThousandConnections(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: TestManyConnections (1,000 connections) covers the same paths")
	}
	const n = 10_000
	lim, err := reactor.RaiseNoFile()
	if err != nil || lim < n+512 {
		t.Skipf("RLIMIT_NOFILE hard limit %d (err %v) is below the %d descriptors %d connections need per process", lim, err, n+512, n)
	}
	srv := reactortest.Start(t)
	require.GreaterOrEqual(t, srv.ConnCap(), int64(n+1))
	obs := srv.Dial(t)

	start := time.Now()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), holderEnv+"="+srv.Addr+" "+strconv.Itoa(n))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	var waitErr error
	exited := make(chan struct{}) // closed when the holder has exited (waitErr set)
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = stdin.Close()
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})

	ready := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		ready <- strings.TrimSpace(line)
	}()
	select {
	case line := <-ready:
		require.Equal(t, "ready", line, "connection holder failed (its stderr is above)")
	case <-time.After(60 * time.Second):
		t.Fatal("connection holder not ready after 60 s")
	}
	t.Logf("%d connections opened and pinged in %v", n, time.Since(start))
	require.Equal(t, n+1, stats(t, obs).Connections)
	require.Equal(t, rOK, obs.Do("ping", "_", "_"))
	lock(t, obs, "still-served")

	require.NoError(t, stdin.Close())
	select {
	case <-exited:
		require.NoError(t, waitErr)
	case <-time.After(30 * time.Second):
		t.Fatal("connection holder did not exit")
	}
	require.Eventually(t, func() bool { return srv.Connections() == 1 }, 20*time.Second, 10*time.Millisecond,
		"connections left: %d", srv.Connections())
	t.Logf("all closed after %v", time.Since(start))
}

// connHolderMain is the child of TestTenThousandConnections: it opens the
// connections, prints "ready", holds them until stdin closes, then closes
// them and exits.
func connHolderMain() int {
	addr, nStr, _ := strings.Cut(os.Getenv(holderEnv), " ")
	n, err := strconv.Atoi(nStr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "holder: bad", holderEnv, err)
		return 2
	}
	if _, err := reactor.RaiseNoFile(); err != nil {
		fmt.Fprintln(os.Stderr, "holder: raise RLIMIT_NOFILE:", err)
		return 2
	}
	conns, err := openConns(addr, n, plain)
	if err != nil {
		fmt.Fprintln(os.Stderr, "holder:", err)
		fmt.Println("failed")
		return 1
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	closeAll(conns)
	return 0
}

// TestConnectBurstSpreadsOverLoops: a burst of connections, accepted
// faster than the loops register them, is still spread evenly over the
// event loops (each idle connection holds one read-timeout timer on its
// loop, so the loops' timer counts are their connection counts).
func TestConnectBurstSpreadsOverLoops(t *testing.T) {
	t.Parallel()
	srv := reactortest.Start(t, func(c *reactortest.Config) {
		c.Server.Loops = 2
		c.Server.Metrics = true
		c.Server.ReadTimeout = time.Minute
	})
	const n, dialers = 400, 8
	conns := make([]net.Conn, n)
	var wg sync.WaitGroup
	for d := range dialers {
		wg.Go(func() {
			for i := d; i < n; i += dialers {
				c, err := net.DialTimeout("tcp", srv.Addr, 10*time.Second)
				if err != nil {
					t.Errorf("dial %d: %v", i, err)
					return
				}
				conns[i] = c
			}
		})
	}
	wg.Wait()
	defer closeAll(conns)
	waitConnections(t, srv.Server, n)
	var counts []int
	require.Eventually(t, func() bool {
		counts = counts[:0]
		sum := 0
		for _, l := range srv.Metrics().Loops {
			counts = append(counts, l.Timers)
			sum += l.Timers
		}
		return sum == n
	}, 5*time.Second, 10*time.Millisecond, "timers per loop: %v", counts)
	require.Len(t, counts, 2)
	for _, c := range counts {
		require.InDelta(t, n/2, c, n/10, "connections per loop: %v", counts)
	}
}
