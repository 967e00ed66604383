// Command dflockd-loadtest is the benchmark harness for dflockd-protocol
// servers: the scenarios, A/B comparisons and the ceiling server of package
// loadtest behind a command line. Run it without arguments for usage.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/lockreactor/dflockd/loadtest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := loadtest.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
