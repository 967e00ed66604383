package client_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/lockreactor/dflockd/client"
)

// Join the queue first, do something that must happen once the place in
// line is secured, then wait for the lock.
func ExampleLock_Enqueue() {
	ctx := context.Background()
	holder := &client.Lock{Key: "deploy", Servers: []string{serverAddr}}
	if ok, err := holder.Acquire(ctx); err != nil || !ok {
		log.Fatal("holder: ", err)
	}

	l := &client.Lock{Key: "deploy", Servers: []string{serverAddr}}
	status, err := l.Enqueue(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("enqueue status:", status)

	if status == client.StatusQueued {
		fmt.Println("notifying external system...")
		if err := holder.Release(ctx); err != nil { // meanwhile, the holder finishes
			log.Fatal(err)
		}
		ok, err := l.Wait(ctx, 30*time.Second)
		if err != nil {
			log.Fatal(err)
		}
		if !ok {
			log.Fatal("timed out waiting")
		}
	}
	defer func() {
		if err := l.Release(ctx); err != nil {
			log.Print(err)
		}
	}()
	fmt.Println("lock held, doing work...")
	// Output:
	// enqueue status: queued
	// notifying external system...
	// lock held, doing work...
}
