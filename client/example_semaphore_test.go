package client_test

import (
	"context"
	"fmt"
	"log"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lockreactor/dflockd/client"
)

// A pool of workers, at most two of which call a rate-limited API at once,
// across every process that uses the same semaphore key.
func ExampleSemaphore() {
	ctx := context.Background()
	var running, peak atomic.Int32
	var wg sync.WaitGroup
	for job := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := &client.Semaphore{Key: "partner-api", Limit: 2, Servers: []string{serverAddr}}
			ok, err := s.Acquire(ctx)
			if err != nil || !ok {
				log.Fatalf("job %d: no slot: %v", job, err)
			}
			defer func() {
				if err := s.Release(ctx); err != nil {
					log.Print(err)
				}
			}()
			n := running.Add(1)
			for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); {
				p = peak.Load()
			}
			time.Sleep(20 * time.Millisecond) // call the API
			running.Add(-1)
		}()
	}
	wg.Wait()
	fmt.Println("6 jobs done; more than 2 at once:", peak.Load() > 2)
	// Output: 6 jobs done; more than 2 at once: false
}
