package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"sync"

	"github.com/lockreactor/dflockd/client"
)

// fencedStore is downstream storage that refuses writes carrying a fence
// lower than one it has already accepted.
type fencedStore struct {
	mu      sync.Mutex
	highest uint64
	value   string
}

var errStaleFence = errors.New("stale fence")

func (s *fencedStore) Write(fence uint64, value string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if fence < s.highest {
		return errStaleFence
	}
	s.highest, s.value = fence, value
	return nil
}

// Fencing: a holder that lost its lock without noticing (a long GC pause,
// a partition) cannot overwrite the work of the holder after it, because
// every grant carries a larger fence number.
func ExampleLock_Fence() {
	ctx := context.Background()
	store := &fencedStore{}

	a := &client.Lock{Key: "ledger", Servers: []string{serverAddr}}
	if ok, err := a.Acquire(ctx); err != nil || !ok {
		log.Fatal(err)
	}
	fenceA := a.Fence()
	// a stalls; its lock goes (here: its connection closes, and the server
	// releases the lock)...
	if err := a.Close(); err != nil {
		log.Fatal(err)
	}

	b := &client.Lock{Key: "ledger", Servers: []string{serverAddr}}
	if ok, err := b.Acquire(ctx); err != nil || !ok {
		log.Fatal(err)
	}
	fmt.Println("b's fence is larger:", b.Fence() > fenceA)
	fmt.Println("b writes:", store.Write(b.Fence(), "from b"))
	// ...and a wakes up and writes with the fence it remembers.
	fmt.Println("a writes late:", store.Write(fenceA, "from a"))
	fmt.Println("stored:", store.value)
	if err := b.Release(ctx); err != nil {
		log.Fatal(err)
	}
	// Output:
	// b's fence is larger: true
	// b writes: <nil>
	// a writes late: stale fence
	// stored: from b
}
