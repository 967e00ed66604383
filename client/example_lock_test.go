package client_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/lockreactor/dflockd/client"
)

// Take a lock, work while it is renewed in the background, release it.
func ExampleLock() {
	ctx := context.Background()
	l := &client.Lock{
		Key:            "my-key",
		AcquireTimeout: 10 * time.Second,
		Servers:        []string{serverAddr}, // e.g. "127.0.0.1:6388"
	}
	ok, err := l.Acquire(ctx)
	if err != nil {
		log.Fatal(err)
	}
	if !ok {
		log.Fatal("timed out")
	}
	defer func() {
		if err := l.Release(ctx); err != nil {
			log.Print(err) // ErrLost here: the work ran without the lock
		}
	}()

	fmt.Println("holding", l.Key, "with a token of", len(l.Token()), "hex digits")
	// Output: holding my-key with a token of 32 hex digits
}

// Stop working as soon as the lock is lost: Done is closed when the hold
// ends, and Err tells whether it was lost.
func ExampleLock_Done() {
	ctx := context.Background()
	l := &client.Lock{Key: "job-42", Servers: []string{serverAddr}}
	if ok, err := l.Acquire(ctx); err != nil || !ok {
		log.Fatal("no lock: ", err)
	}

	work := time.After(50 * time.Millisecond) // a long job
	select {
	case <-work:
		fmt.Println("job finished under the lock")
	case <-l.Done():
		log.Fatal("lost the lock mid-job: ", l.Err())
	}
	if err := l.Release(ctx); err != nil {
		log.Fatal(err)
	}
	<-l.Done()
	fmt.Println("released, lost:", l.Err() != nil)
	// Output:
	// job finished under the lock
	// released, lost: false
}
