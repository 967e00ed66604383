package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/lockreactor/dflockd/client"
)

// Run a job only if nobody else is running it right now.
func ExampleLock_TryAcquire() {
	ctx := context.Background()
	first := &client.Lock{Key: "nightly-report", Servers: []string{serverAddr}}
	second := &client.Lock{Key: "nightly-report", Servers: []string{serverAddr}}

	ok, err := first.TryAcquire(ctx)
	fmt.Println("first:", ok, err)
	ok, err = second.TryAcquire(ctx)
	fmt.Println("second:", ok, err, "- someone else is on it, skipping")

	if err := first.Release(ctx); err != nil {
		log.Fatal(err)
	}
	// Output:
	// first: true <nil>
	// second: false <nil> - someone else is on it, skipping
}

// On a Conn, a busy lock is ErrTimeout: a timeout is told apart from a
// failure with errors.Is.
func ExampleConn_TryAcquire() {
	ctx := context.Background()
	c, err := client.DialContext(ctx, serverAddr)
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = c.Close() }()

	g, err := c.TryAcquire(ctx, "cache-rebuild")
	if err != nil {
		log.Fatal(err)
	}
	_, err = c.TryAcquire(ctx, "cache-rebuild") // not re-entrant: busy even for us
	fmt.Println("busy:", errors.Is(err, client.ErrTimeout))
	if err := c.Release(ctx, g); err != nil {
		log.Fatal(err)
	}
	// Output: busy: true
}
