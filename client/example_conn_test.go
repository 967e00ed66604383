package client_test

import (
	"context"
	"fmt"
	"log"
	"sync"
	"time"

	"github.com/lockreactor/dflockd/client"
)

// The low-level API of dflockd's client: one request per call, tokens as
// strings.
func ExampleDial() {
	c, err := client.Dial(serverAddr)
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = c.Close() }()

	token, lease, err := client.Acquire(c, "my-key", 10*time.Second)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("acquired: token of %d hex digits, lease=%ds\n", len(token), lease)

	remaining, err := client.Renew(c, "my-key", token, client.WithLeaseTTL(60))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("renewed: %ds remaining\n", remaining)

	if err := client.Release(c, "my-key", token); err != nil {
		log.Fatal(err)
	}
	fmt.Println("released")
	// Output:
	// acquired: token of 32 hex digits, lease=33s
	// renewed: 60s remaining
	// released
}

// One Conn serves many goroutines: requests are pipelined and replies
// matched in order, and every call that can wait takes a context.
func ExampleConn() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.DialContext(ctx, serverAddr, client.WithHeartbeat(10*time.Second))
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = c.Close() }()

	var wg sync.WaitGroup
	fences := make([]uint64, 4)
	for i := range fences {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g, err := c.Acquire(ctx, fmt.Sprintf("shard-%d", i), time.Second, client.WithLeaseTTL(10))
			if err != nil {
				log.Print(err)
				return
			}
			fences[i] = g.Fence()
			if err := c.Release(ctx, g); err != nil {
				log.Print(err)
			}
		}()
	}
	wg.Wait()
	for i, f := range fences {
		fmt.Printf("shard-%d granted: %v\n", i, f > 0)
	}
	// Output:
	// shard-0 granted: true
	// shard-1 granted: true
	// shard-2 granted: true
	// shard-3 granted: true
}

// Semaphore slots through a Conn: WithLimit picks the semaphore namespace.
func ExampleWithLimit() {
	ctx := context.Background()
	c, err := client.DialContext(ctx, serverAddr)
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	g1, _ := c.Acquire(ctx, "gpu", 0, client.WithLimit(2))
	g2, _ := c.Acquire(ctx, "gpu", 0, client.WithLimit(2))
	_, err = c.Acquire(ctx, "gpu", 0, client.WithLimit(2))
	fmt.Println(g1.Held(), g2.Held(), err)
	_ = c.Release(ctx, g1)
	_ = c.Release(ctx, g2)
	// Output: true true dflockd: timeout
}
