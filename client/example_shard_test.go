package client_test

import (
	"context"
	"fmt"
	"log"

	"github.com/lockreactor/dflockd/client"
)

// With several servers, each key lives on exactly one of them, picked by
// the shard function (CRC32Shard unless set). All clients must use the same
// list in the same order and the same function.
func ExampleLock_sharding() {
	ctx := context.Background()
	servers := fleet // e.g. []string{"10.0.0.1:6388", "10.0.0.2:6388"}
	for _, key := range []string{"orders:1", "orders:4", "orders:5"} {
		l := &client.Lock{Key: key, Servers: servers}
		if ok, err := l.Acquire(ctx); err != nil || !ok {
			log.Fatal(err)
		}
		fmt.Printf("%s is on server %d\n", key, client.CRC32Shard(key, len(servers)))
		if err := l.Release(ctx); err != nil {
			log.Fatal(err)
		}
	}
	// Output:
	// orders:1 is on server 0
	// orders:4 is on server 1
	// orders:5 is on server 1
}

// The default shard function agrees with the Python and TypeScript
// clients: IEEE CRC-32 of the key modulo the number of servers.
func ExampleCRC32Shard() {
	fmt.Println(client.CRC32Shard("my-key", 3))
	// Output: 2
}

// The consistent shard functions move few keys when the fleet changes.
// Jump hash: append servers at the end only. Rendezvous: add or remove
// any server; pass the same list as Servers.
func ExampleRendezvousShard() {
	servers := []string{"10.0.0.1:6388", "10.0.0.2:6388", "10.0.0.3:6388"}
	l := &client.Lock{
		Key:       "orders:42",
		Servers:   servers,
		ShardFunc: client.RendezvousShard(servers),
	}
	fmt.Println(l.ShardFunc(l.Key, len(servers)), client.JumpShard(l.Key, len(servers)))
	// Output: 1 2
}
