package elastic

import (
	"bytes"
	"math/rand"
	"testing"
)

// TestTrimModel runs random writes, discards, reads, peeks and
// trims against a plain byte-slice model, with sizes chosen so the ring
// wraps often and trims happen with the kept bytes split over the end.
func TestTrimModel(t *testing.T) {
	wrappedTrims, trims := 0, 0
	defer func() {
		t.Logf("%d trims, %d with the contents wrapped", trims, wrappedTrims)
		if wrappedTrims == 0 {
			t.Errorf("no trim saw wrapped contents")
		}
	}()
	for seed := int64(1); seed <= 120; seed++ {
		rng := rand.New(rand.NewSource(seed))
		var b RingBuffer
		var model []byte
		var ctr byte
		check := func(step int, op string) {
			t.Helper()
			if b.Buffered() != len(model) {
				t.Fatalf("seed %d step %d %s: Buffered %d model %d", seed, step, op, b.Buffered(), len(model))
			}
			h, tl := b.Peek(-1)
			got := append(append([]byte(nil), h...), tl...)
			if !bytes.Equal(got, model) {
				t.Fatalf("seed %d step %d %s: contents differ (len %d vs %d)", seed, step, op, len(got), len(model))
			}
			if b.IsEmpty() != (len(model) == 0) {
				t.Fatalf("seed %d step %d %s: IsEmpty %v model %d", seed, step, op, b.IsEmpty(), len(model))
			}
		}
		for step := 0; step < 400; step++ {
			var op string
			switch k := rng.Intn(10); {
			case k < 4:
				op = "write"
				var n int
				switch rng.Intn(4) {
				case 0:
					n = rng.Intn(16)
				case 1:
					n = rng.Intn(1100)
				case 2:
					n = rng.Intn(9000)
				default:
					n = rng.Intn(70000)
				}
				p := make([]byte, n)
				for i := range p {
					ctr++
					p[i] = ctr
				}
				_, _ = b.Write(p)
				model = append(model, p...)
			case k < 7:
				op = "discard"
				if len(model) == 0 {
					continue
				}
				var n int
				if rng.Intn(3) == 0 {
					n = len(model) - rng.Intn(imin(len(model), 600)+1)
				} else {
					n = rng.Intn(len(model) + 1)
				}
				if n <= 0 {
					continue
				}
				_, _ = b.Discard(n)
				if n > len(model) {
					n = len(model)
				}
				model = model[n:]
			case k < 8:
				op = "read"
				p := make([]byte, rng.Intn(3000)+1)
				n, _ := b.Read(p)
				want := imin(len(p), len(model))
				if n != want || !bytes.Equal(p[:n], model[:n]) {
					t.Fatalf("seed %d step %d: read %d want %d", seed, step, n, want)
				}
				model = model[n:]
			case k < 9:
				op = "peek"
				n := rng.Intn(5000) + 1
				h, tl := b.Peek(n)
				got := append(append([]byte(nil), h...), tl...)
				want := model[:imin(n, len(model))]
				if !bytes.Equal(got, want) {
					t.Fatalf("seed %d step %d: peek %d got %d bytes want %d", seed, step, n, len(got), len(want))
				}
			default:
				op = "trim"
				capBefore := b.Cap()
				_, tl := b.Peek(-1)
				b.Trim(4 << 10)
				if b.Cap() < capBefore {
					trims++
					if len(tl) > 0 {
						wrappedTrims++
					}
				}
				if capBefore > 4<<10 && len(model) <= capBefore/8 && b.Cap() >= capBefore {
					t.Fatalf("seed %d step %d: trim kept %d (holding %d)", seed, step, b.Cap(), len(model))
				}
			}
			check(step, op)
		}
	}
}

func imin(a, b int) int {
	if a < b {
		return a
	}
	return b
}
