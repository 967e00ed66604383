package lockcore

import (
	"testing"

	"github.com/lockreactor/dflockd/codec"
)

// TestHandoffLeaseNotBeforeWaiterJoined, for a parked w: PROTOCOL.md says
// a w that answers ok restarts the lease "from that moment (full TTL)". A
// release served with a clock reading older than the w's arrival (read
// before another goroutine parked the w) must not start the lease before
// the w arrived. grantWaiters takes max(now, n.expires), and parking a w
// moves a two-phase entry's n.expires from the e's time to the w's.
func TestHandoffLeaseNotBeforeParkedWait(t *testing.T) {
	now := int64(0)
	tbl := fakeTable(Config{Shards: 4}, &now)
	h, w := NewOwner(1), NewOwner(2)
	tok := tbl.Acquire(h, Locks, []byte("k"), 0, 1, 10, nil, 0).Token
	if r := tbl.Enqueue(w, Locks, []byte("k"), 1, 10, 0); r.Code != codec.CodeQueued {
		t.Fatalf("e: %v", fmtRes(r))
	}
	r := &rec{}
	if res := tbl.Wait(w, Locks, []byte("k"), 30, r, 5*sec); !res.Parked {
		t.Fatalf("w: %v", fmtRes(res))
	}
	if code := tbl.Release(Locks, []byte("k"), tok, 3*sec); code != codec.CodeOK { // stale now
		t.Fatalf("release: %v", code)
	}
	if len(r.results) != 1 || r.results[0].Code != codec.CodeOK {
		t.Fatalf("w not granted: %v", r.results)
	}
	st := tbl.Stats(5 * sec)
	if len(st.Locks) != 1 || st.Locks[0].LeaseExpiresInS != 10 {
		t.Fatalf("lease of the w's grant counts from before the w arrived: %+v", st.Locks)
	}
	mustInvariants(t, tbl)
}
