package reactor_test

import (
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A release racing the waiter's disconnect (close or half-close), with
// auto-release on: whoever wins, the lock must not stay held by the
// closed connection. A third client gets it at once after both.
func TestReleaseRacingWaiterClose(t *testing.T) {
	for _, tr := range transports {
		for _, half := range []bool{false, true} {
			t.Run(tr.name+"/half="+strconv.FormatBool(half), func(t *testing.T) {
				srv := tr.start(t)
				obs := srv.Connect(t)
				a := srv.Connect(t)
				c := srv.Connect(t)
				for i := 0; i < 60; i++ {
					key := "k" + strconv.Itoa(i)
					tok := mustGrant(t, a.Do("l", key, "0 30"), rOK, 30)
					b := srv.Connect(t)
					b.Request("l", key, "10 30")
					waitLockWaiters(t, obs, key, 1)
					var wg sync.WaitGroup
					wg.Add(2)
					go func() {
						defer wg.Done()
						a.Request("r", key, tok)
					}()
					go func() {
						defer wg.Done()
						if i%3 != 0 {
							time.Sleep(time.Duration(i%5) * 20 * time.Microsecond)
						}
						if half {
							_ = b.Conn.(interface{ CloseWrite() error }).CloseWrite()
						} else {
							_ = b.Close()
						}
					}()
					wg.Wait()
					require.Equal(t, rOK, a.Line())
					deadline := time.Now().Add(2 * time.Second)
					for {
						r := c.Do("l", key, "0")
						if r != rTimeout {
							ctok := mustGrant(t, r, rOK, 33)
							require.Equal(t, rOK, c.Do("r", key, ctok))
							break
						}
						if time.Now().After(deadline) {
							s := stats(t, obs)
							t.Fatalf("iteration %d: lock still held after the waiter closed: %+v", i, s)
						}
						time.Sleep(2 * time.Millisecond)
					}
					_ = b.Close()
				}
			})
		}
	}
}
