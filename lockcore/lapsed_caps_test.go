package lockcore

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/codec"
)

// lapsedRef is an independent reference of core.lapsed's policy.
type lapsedRef struct{ l []lapsedGrant }

func (r *lapsedRef) add(g lapsedGrant) {
	own := 0
	for _, e := range r.l {
		if e.o == g.o {
			own++
		}
	}
	if own >= maxLapsedOwn {
		i := slices.IndexFunc(r.l, func(e lapsedGrant) bool { return e.o == g.o })
		r.l = append(r.l[:i:i], r.l[i+1:]...)
	} else if len(r.l) >= maxLapsed {
		r.l = slices.Clone(r.l[1:])
	}
	r.l = append(r.l, g)
}

// TestLapsedCapsRandom drives addLapsed/takeLapsed/closeOwner directly
// with many owners and keys (which TestModel, with 8 keys, never does):
// the FIFO never exceeds 64, no owner exceeds 8, and the core matches the
// reference.
func TestLapsedCapsRandom(t *testing.T) {
	seeds := uint64(12)
	if *flagLong {
		seeds = 600
	}
	for seed := uint64(1); seed <= seeds; seed++ {
		r := rand.New(rand.NewPCG(seed, 7))
		now := int64(0)
		tbl := fakeTable(Config{Shards: 1}, &now)
		c := tbl.shards[0].c
		owners := make([]*Owner, 1+r.IntN(20))
		for i := range owners {
			owners[i] = NewOwner(uint64(i + 1))
		}
		ref := &lapsedRef{}
		for step := 0; step < 2000; step++ {
			o := owners[r.IntN(len(owners))]
			ns := Namespace(r.IntN(2))
			name := fmt.Sprintf("k%d", r.IntN(40))
			switch x := r.IntN(100); {
			case x < 70:
				// core never holds duplicates (an e clears first).
				c.takeLapsed(o, ns, []byte(name))
				if i := slices.Index(ref.l, lapsedGrant{o, ns, name}); i >= 0 {
					ref.l = slices.Delete(ref.l, i, i+1)
				}
				g := lapsedGrant{o, ns, name}
				c.addLapsed(g)
				ref.add(g)
			case x < 97:
				got := c.takeLapsed(o, ns, []byte(name))
				i := slices.Index(ref.l, lapsedGrant{o, ns, name})
				require.Equal(t, i >= 0, got, "seed %d step %d take", seed, step)
				if i >= 0 {
					ref.l = slices.Delete(ref.l, i, i+1)
				}
			default:
				c.closeOwner(o, now)
				ref.l = slices.DeleteFunc(ref.l, func(e lapsedGrant) bool { return e.o == o })
			}
			require.LessOrEqual(t, len(c.lapsed), maxLapsed, "seed %d step %d", seed, step)
			per := map[*Owner]int{}
			for _, e := range c.lapsed {
				per[e.o]++
				require.LessOrEqual(t, per[e.o], maxLapsedOwn, "seed %d step %d", seed, step)
			}
			require.Equal(t, ref.l, c.lapsed, "seed %d step %d", seed, step)
		}
	}
}

// sameShardNames returns n key names of prefix in the shard of anchor.
func sameShardNames(tbl *Table, anchor []byte, prefix string, n int) [][]byte {
	shard := tbl.shardIndex(Locks, string(anchor))
	var out [][]byte
	for i := 0; len(out) < n; i++ {
		name := fmt.Sprintf("%s/%d", prefix, i)
		if tbl.shardIndex(Locks, name) == shard {
			out = append(out, []byte(name))
		}
	}
	return out
}

// lapseGrants makes each (owner, name) an e grant that lapses and whose
// key is pruned, the production way.
func lapseGrants(t *testing.T, tbl *Table, now *int64, o []*Owner, names [][]byte) {
	for i, name := range names {
		require.Equal(t, codec.CodeAcquired, tbl.Enqueue(o[i], Locks, name, 1, 1, *now).Code)
	}
	*now += 2 * sec
	tbl.Advance(*now)
	*now += 2 * sec
	tbl.GC(*now)
}

// TestLapsedOwnCapEndToEnd: a connection that lets 9 grants lapse in one
// shard keeps its newest 8 (its oldest answers error_not_enqueued), and
// another connection's older entry survives.
func TestLapsedOwnCapEndToEnd(t *testing.T) {
	now := int64(0)
	tbl := fakeTable(Config{DefaultLease: 1, GCMaxIdle: 1_000_000_000}, &now)
	a, b := NewOwner(1), NewOwner(2)
	victim := []byte("a/job")
	lapseGrants(t, tbl, &now, []*Owner{a}, [][]byte{victim})
	names := sameShardNames(tbl, victim, "b", maxLapsedOwn+1)
	for _, name := range names { // one at a time: a strict order
		lapseGrants(t, tbl, &now, []*Owner{b}, [][]byte{name})
	}
	require.Equal(t, codec.CodeErrorNotEnqueued, tbl.Wait(b, Locks, names[0], 0, nil, now).Code)
	for _, name := range names[1:] {
		require.Equal(t, codec.CodeErrorLeaseExpired, tbl.Wait(b, Locks, name, 0, nil, now).Code)
	}
	require.Equal(t, codec.CodeErrorLeaseExpired, tbl.Wait(a, Locks, victim, 0, nil, now).Code)
	require.NoError(t, tbl.CheckInvariants())
}
