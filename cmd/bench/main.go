// Command bench is dflockd's cmd/bench under its usual name, so that
// `go run ./cmd/bench` from dflockd's documentation works here unchanged:
// it is `dflockd-loadtest bench` (same flags: --workers, --rounds, --key,
// --timeout, --lease, --servers, --connections; plus the load-test
// harness's own, see --help).
package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/lockreactor/dflockd/loadtest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is the bench scenario of dflockd-loadtest with args as its flags.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return loadtest.Main(ctx, append([]string{"bench"}, args...), stdout, stderr)
}
