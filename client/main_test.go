package client_test

import (
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/lockreactor/dflockd/lockcore"
	"github.com/lockreactor/dflockd/reactor"
	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// serverAddr is the address of the in-process server that the examples
// talk to ("127.0.0.1:6388" in a real deployment), and fleet a list of two
// such servers for the sharding examples. Examples cannot take a
// *testing.T, so TestMain starts them; tests start their own servers with
// reactortest.
var (
	serverAddr string
	fleet      []string
)

func TestMain(m *testing.M) {
	var stops []func()
	for range 2 {
		addr, stop, err := startExampleServer()
		if err != nil {
			fmt.Fprintln(os.Stderr, "start example server:", err)
			os.Exit(2)
		}
		fleet = append(fleet, addr)
		stops = append(stops, stop)
	}
	serverAddr = fleet[0]
	code := m.Run()
	for _, stop := range stops {
		stop()
	}
	if code == 0 {
		if err := goleak.Find(
			// gnet's global goroutine pool (an ants pool created at package
			// init) lives as long as the process; it is not ours.
			goleak.IgnoreAnyFunction("github.com/panjf2000/ants/v2.(*poolCommon).purgeStaleWorkers"),
			goleak.IgnoreAnyFunction("github.com/panjf2000/ants/v2.(*poolCommon).ticktock"),
		); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// startExampleServer runs lockcore and reactor as cmd/dflockd does, with
// the default configuration, on a free port.
func startExampleServer() (addr string, stop func(), err error) {
	table := lockcore.New(lockcore.Config{MaxLocks: 1024, AutoRelease: true})
	table.Start()
	srv, err := reactor.New(reactor.Config{Addr: "127.0.0.1:0", ReadTimeout: 23 * time.Second}, table)
	if err != nil {
		table.Stop()
		return "", nil, err
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve() }()
	return srv.Addr().String(), func() {
		srv.Close()
		if err := <-done; err != nil {
			fmt.Fprintln(os.Stderr, "example server:", err)
		}
		table.Stop()
	}, nil
}

// start runs a test server with auto-release on and the defaults, changed
// by configure.
func start(t *testing.T, configure ...func(*reactortest.Config)) *reactortest.Server {
	t.Helper()
	return reactortest.Start(t, configure...)
}
