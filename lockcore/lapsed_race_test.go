package lockcore

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestLapsedCloseRacesGC: owners let two-phase grants lapse while
// GC, Advance and max-locks reclaims (other owners' e) prune their keys
// concurrently with CloseOwner. No lapsed entry may outlive its owner's
// CloseOwner (it would pin the closed connection's memory), with more
// than 64 shards too (touched bits shared by shards i and i+64).
func TestLapsedCloseRacesGC(t *testing.T) {
	for _, shards := range []int{64, 256} {
		t.Run(fmt.Sprint(shards), func(t *testing.T) {
			var clock atomic.Int64
			tbl := New(Config{Shards: shards, MaxLocks: 300, DefaultLease: 1, GCMaxIdle: 1, SaltSeed: testSeed,
				Clock: func() int64 { return clock.Load() }})
			var closed sync.Map
			var maxSeen atomic.Int64
			stop := make(chan struct{})
			var bg sync.WaitGroup
			bg.Add(1)
			go func() {
				defer bg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					now := clock.Add(sec / 4)
					tbl.Advance(now)
					tbl.GC(now)
					n := 0
					for i := range tbl.shards {
						s := &tbl.shards[i]
						s.mu.Lock()
						n += len(s.c.lapsed)
						s.mu.Unlock()
					}
					if int64(n) > maxSeen.Load() {
						maxSeen.Store(int64(n))
					}
				}
			}()
			var wg sync.WaitGroup
			for g := 0; g < 4; g++ {
				wg.Add(1)
				go func(g int) {
					defer wg.Done()
					for i := 0; i < 300; i++ {
						o := NewOwner(uint64(g*1_000_000 + i + 1))
						for j := 0; j < 8; j++ {
							name := []byte(fmt.Sprintf("g%d/o%d/k%d", g, i, j))
							tbl.Enqueue(o, Locks, name, 1, 1, clock.Load())
						}
						for j := 0; j < 8; j++ {
							tbl.Wait(o, Locks, []byte(fmt.Sprintf("g%d/o%d/k%d", g, i, j)), 0, nil, clock.Load())
						}
						tbl.CloseOwner(o, clock.Load())
						closed.Store(o, true)
					}
				}(g)
			}
			wg.Wait()
			close(stop)
			bg.Wait()
			left := 0
			for i := range tbl.shards {
				s := &tbl.shards[i]
				s.mu.Lock()
				for _, e := range s.c.lapsed {
					if _, ok := closed.Load(e.o); ok {
						left++
					}
				}
				s.mu.Unlock()
			}
			t.Logf("at most %d lapsed entries seen at once", maxSeen.Load())
			require.Positive(t, maxSeen.Load())
			require.Zero(t, left, "lapsed entries of closed owners")
			require.NoError(t, tbl.CheckInvariants())
		})
	}
}
